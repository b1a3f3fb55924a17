//! Typed handles on the maps the agent reads and writes, taken from the loaded object.
use std::{collections::HashSet, time::Instant};

use agent_common::{
    CELLS_V4_CAPACITY, CELLS_V6_CAPACITY, CellInfo, CellName, Conn, Deferred, DnsKey, DnsStats,
    FieldOffsets, FlowKey, OpCost, PAIR_STATS_CAPACITY, POLICY_CAPACITY, PairKey, PairStats,
    PolicyKey, Resolution, SETTING_CONN_CAPACITY, SETTING_GENERATION, Seeded, ServiceKeyV4,
    ServiceKeyV6, UdpFlow, UdpStats,
};
use agent_core::policy::Compiled;
use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, PerCpuHashMap, RingBuf},
};

use super::{
    error::{KernelError, map_err},
    object::{self, SetNames},
};

/// Every map handle the agent uses, but the ring buffer (its drain owns it) and the
/// connection storage (the sweep's iterator holds it).
pub(super) struct Maps {
    pub(super) pair_stats: PerCpuHashMap<MapData, PairKey, PairStats>,
    pub(super) pair_overflow: HashMap<MapData, PairKey, PairStats>,
    /// The cookies a listing wants full records of, and what the last one wrote there.
    pub(super) wanted: HashMap<MapData, u64, u8>,
    pub(super) wanted_now: Vec<u64>,
    pub(super) seeded: HashMap<MapData, u64, Seeded>,
    pub(super) seed_plan: HashMap<MapData, u64, Conn>,
    pub(super) resolved: HashMap<MapData, u64, Resolution>,
    pub(super) deferred: HashMap<MapData, u64, Deferred>,
    pub(super) fields: Array<MapData, FieldOffsets>,
    pub(super) live: Array<MapData, u64>,
    pub(super) profile: PerCpuArray<MapData, OpCost>,
    pub(super) counters: PerCpuArray<MapData, u64>,
    pub(super) settings: Array<MapData, u32>,
    pub(super) cell_names: Array<MapData, CellName>,
    pub(super) meta: Array<MapData, u32>,
    pub(super) udp_flows: HashMap<MapData, FlowKey, UdpFlow>,
    pub(super) udp_stats: PerCpuHashMap<MapData, PairKey, UdpStats>,
    pub(super) dns_stats: PerCpuHashMap<MapData, DnsKey, DnsStats>,
    /// Flows in `udp_flows` at its last expiry walk.
    pub(super) udp_held: u64,
    /// Cell ids whose names are in `cell_names`.
    pub(super) names_written: HashSet<u32>,
    /// When this agent first applied each `drained: true` cell (the config gives no
    /// start): the drain's start it reports.
    pub(super) drained_since: std::collections::HashMap<u32, std::time::SystemTime>,
    /// The two cell-map sets, A and B.
    pub(super) sets: [CellSet; 2],
    pub(super) generation: Generation,
    pub(super) capacity: Capacity,
}

impl Maps {
    /// The config the programs read now.
    pub(super) fn active(&self) -> &Compiled {
        &self.sets[self.generation.active].holds
    }
}

/// One complete cell map: both tries, the cell flags and the allow rules.
pub(super) struct CellSet {
    pub(super) names: SetNames,
    pub(super) v4: LpmTrie<MapData, [u8; 4], u32>,
    pub(super) v6: LpmTrie<MapData, [u8; 16], u32>,
    pub(super) info: Array<MapData, CellInfo>,
    pub(super) policy: HashMap<MapData, PolicyKey, u64>,
    pub(super) svc_v4: LpmTrie<MapData, ServiceKeyV4, u32>,
    pub(super) svc_v6: LpmTrie<MapData, ServiceKeyV6, u32>,
    pub(super) udp_v4: LpmTrie<MapData, ServiceKeyV4, u32>,
    pub(super) udp_v6: LpmTrie<MapData, ServiceKeyV6, u32>,
    /// What this set holds now.
    pub(super) holds: Compiled,
    /// Whether `holds` is known: false for a pinned set not read back yet.
    pub(super) known: bool,
}

/// Which set the programs read, and since when.
pub(super) struct Generation {
    pub(super) active: usize,
    pub(super) since: Instant,
}

impl Generation {
    /// How long after a flip the now-inactive set is left alone. A program that read the
    /// generation just before the flip finishes within microseconds; this is ample.
    pub(super) const GRACE: std::time::Duration = std::time::Duration::from_millis(20);
}

/// Map sizes as loaded (`conns`: `--conn-capacity`, a bound the programs check).
#[derive(Debug, Clone, Copy)]
pub(super) struct Capacity {
    pub(super) conns: u32,
    pub(super) pair_stats: u32,
    pub(super) pair_overflow: u32,
    pub(super) cells_v4: u32,
    pub(super) cells_v6: u32,
    pub(super) policy: u32,
    pub(super) udp_flows: u32,
}

/// Takes the map `name` out of the object, typed.
pub(super) fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, KernelError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(KernelError::Missing(name))?;
    T::try_from(map).map_err(map_err(name))
}

/// The violation-event ring buffer.
pub(super) fn events(ebpf: &mut Ebpf) -> Result<RingBuf<MapData>, KernelError> {
    take(ebpf, object::EVENTS)
}

fn cell_set(ebpf: &mut Ebpf, names: SetNames) -> Result<CellSet, KernelError> {
    Ok(CellSet {
        names,
        v4: take(ebpf, names.v4)?,
        v6: take(ebpf, names.v6)?,
        info: take(ebpf, names.info)?,
        policy: take(ebpf, names.policy)?,
        svc_v4: take(ebpf, names.svc_v4)?,
        svc_v6: take(ebpf, names.svc_v6)?,
        udp_v4: take(ebpf, names.udp_v4)?,
        udp_v6: take(ebpf, names.udp_v6)?,
        holds: Compiled::default(),
        known: true,
    })
}

/// The connection storage map, for the sweep's iterator.
pub(super) fn conn_storage(ebpf: &Ebpf) -> Result<&MapData, KernelError> {
    match ebpf.map(object::CONN) {
        Some(aya::maps::Map::SkStorage(m)) => Ok(m),
        Some(_) | None => Err(KernelError::Missing(object::CONN)),
    }
}

/// Every handle of a loaded object. Both cell sets count as empty: for maps an earlier
/// run pinned, `cellmap::adopt` says what they hold.
pub(super) fn take_all(ebpf: &mut Ebpf) -> Result<Maps, KernelError> {
    let sets = [cell_set(ebpf, object::SETS[0])?, cell_set(ebpf, object::SETS[1])?];
    let settings: Array<MapData, u32> = take(ebpf, object::SETTINGS)?;
    // A fresh object reads generation 0 (set A, empty): every peer external and allowed.
    // Adopted maps say which set the running programs read.
    let generation = settings.get(&SETTING_GENERATION, 0).map_err(map_err(object::SETTINGS))?;
    let active = usize::from(generation & 1 == 1);
    let conns = settings.get(&SETTING_CONN_CAPACITY, 0).map_err(map_err(object::SETTINGS))?;
    Ok(Maps {
        pair_stats: take(ebpf, object::PAIR_STATS)?,
        pair_overflow: take(ebpf, object::PAIR_OVERFLOW)?,
        wanted: take(ebpf, object::WANTED)?,
        wanted_now: Vec::new(),
        seeded: take(ebpf, object::SEEDED)?,
        seed_plan: take(ebpf, object::SEED_PLAN)?,
        resolved: take(ebpf, object::RESOLVED)?,
        deferred: take(ebpf, object::DEFERRED)?,
        fields: take(ebpf, object::FIELDS)?,
        live: take(ebpf, object::LIVE)?,
        profile: take(ebpf, object::PROFILE)?,
        counters: take(ebpf, object::COUNTERS)?,
        settings,
        cell_names: take(ebpf, object::CELL_NAMES)?,
        meta: take(ebpf, object::META)?,
        udp_flows: take(ebpf, object::UDP_FLOWS)?,
        udp_stats: take(ebpf, object::UDP_STATS)?,
        dns_stats: take(ebpf, object::DNS_STATS)?,
        udp_held: 0,
        names_written: HashSet::new(),
        drained_since: std::collections::HashMap::new(),
        sets,
        // No flip of this process's is in flight: the first write need not wait.
        generation: Generation {
            active,
            since: Instant::now().checked_sub(Generation::GRACE).unwrap_or_else(Instant::now),
        },
        capacity: Capacity {
            conns,
            pair_stats: PAIR_STATS_CAPACITY,
            pair_overflow: agent_common::PAIR_OVERFLOW_CAPACITY,
            cells_v4: CELLS_V4_CAPACITY,
            cells_v6: CELLS_V6_CAPACITY,
            policy: POLICY_CAPACITY,
            udp_flows: agent_common::UDP_FLOWS_CAPACITY,
        },
    })
}
