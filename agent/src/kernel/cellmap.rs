//! Writes a compiled config into the kernel's cell maps, atomically as the programs see
//! it: the inactive set (A or B) is brought to the new config, then one settings word
//! flips the programs over to it. Only what differs from what that set held is written.
use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use agent_common::{
    CELL_NAME_MAX, CellInfo, CellName, MAX_CELLS, PolicyKey, SETTING_ENFORCE, SETTING_EXTERNAL,
    SETTING_GENERATION,
};
use aya::maps::{Array, HashMap as BpfHashMap, LpmTrie, MapData, lpm_trie::Key};
use ipnet::IpNet;

use super::loader::{KernelError, Maps, map_err};
use crate::policy::Compiled;

/// How long after a flip the now-inactive set is left alone. A program that read the
/// generation just before the flip finishes within microseconds; this is ample.
pub(super) const GRACE: Duration = Duration::from_millis(20);

/// One complete cell map: both tries, the cell flags and the allow rules.
pub(super) struct CellSet {
    pub(super) v4: LpmTrie<MapData, [u8; 4], u32>,
    pub(super) v6: LpmTrie<MapData, [u8; 16], u32>,
    pub(super) info: Array<MapData, CellInfo>,
    pub(super) policy: BpfHashMap<MapData, PolicyKey, u8>,
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

pub(super) fn apply(m: &mut Maps, next: &Compiled) -> Result<(), KernelError> {
    let target = 1 - m.generation.active;
    let waited = m.generation.since.elapsed();
    if waited < GRACE {
        std::thread::sleep(GRACE - waited);
    }
    write_names(m, next)?;
    let set = &mut m.sets[target];
    if !set.known {
        set.holds = read_set(set)?;
        set.known = true;
    }
    write_set(set, next)?;
    let ext = SETTING_EXTERNAL + target as u32;
    m.settings.set(ext, next.external, 0).map_err(map_err("SETTINGS"))?;
    let enforce = SETTING_ENFORCE + target as u32;
    m.settings.set(enforce, next.enforce, 0).map_err(map_err("SETTINGS"))?;
    m.settings.set(SETTING_GENERATION, target as u32, 0).map_err(map_err("SETTINGS"))?;
    m.generation = Generation { active: target, since: Instant::now() };
    Ok(())
}

fn write_set(set: &mut CellSet, next: &Compiled) -> Result<(), KernelError> {
    let keep: HashSet<IpNet> = next.prefixes.iter().map(|(n, _)| *n).collect();
    let stale: Vec<IpNet> =
        set.holds.prefixes.iter().map(|(n, _)| *n).filter(|n| !keep.contains(n)).collect();
    for net in stale {
        drop_prefix(set, net)?;
    }
    let had: HashMap<IpNet, u32> = set.holds.prefixes.iter().copied().collect();
    for (net, id) in &next.prefixes {
        if had.get(net) != Some(id) {
            put_prefix(set, *net, *id)?;
        }
    }

    let info: HashMap<u32, CellInfo> = next.info.iter().copied().collect();
    let gone: Vec<u32> =
        set.holds.info.iter().map(|(id, _)| *id).filter(|id| !info.contains_key(id)).collect();
    for id in gone {
        set.info.set(id, CellInfo::default(), 0).map_err(map_err("CELL_INFO"))?;
    }
    let had: HashMap<u32, CellInfo> = set.holds.info.iter().copied().collect();
    for (id, i) in &next.info {
        if had.get(id) != Some(i) {
            set.info.set(*id, i, 0).map_err(map_err("CELL_INFO"))?;
        }
    }

    let allow: HashSet<_> = next.allow.iter().collect();
    let revoked: Vec<_> = set.holds.allow.iter().filter(|k| !allow.contains(k)).copied().collect();
    for k in revoked {
        set.policy.remove(&k).map_err(map_err("POLICY"))?;
    }
    let had: HashSet<_> = set.holds.allow.iter().copied().collect();
    for k in next.allow.iter().filter(|k| !had.contains(k)) {
        set.policy.insert(k, 1, 0).map_err(map_err("POLICY"))?;
    }
    set.holds = next.clone();
    Ok(())
}

/// Records the names of cell ids not recorded yet.
fn write_names(m: &mut Maps, next: &Compiled) -> Result<(), KernelError> {
    for (id, name) in &next.names {
        if m.names_written.contains(id) {
            continue;
        }
        let mut entry = CellName { len: 0, name: [0; CELL_NAME_MAX] };
        let n = name.len().min(CELL_NAME_MAX);
        entry.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        entry.len = n as u8;
        m.cell_names.set(*id, entry, 0).map_err(map_err("CELL_NAMES"))?;
        m.names_written.insert(*id);
    }
    Ok(())
}

/// What a pinned set holds, read back from the kernel, so the next write to it knows
/// what to remove.
pub(super) fn read_set(set: &CellSet) -> Result<Compiled, KernelError> {
    let mut out = Compiled::default();
    for entry in set.v4.iter() {
        let (k, id) = entry.map_err(map_err("CELLS_V4"))?;
        let net = ipnet::Ipv4Net::new(k.data().into(), k.prefix_len() as u8);
        out.prefixes.extend(net.ok().map(|n| (IpNet::V4(n), id)));
    }
    for entry in set.v6.iter() {
        let (k, id) = entry.map_err(map_err("CELLS_V6"))?;
        let net = ipnet::Ipv6Net::new(k.data().into(), k.prefix_len() as u8);
        out.prefixes.extend(net.ok().map(|n| (IpNet::V6(n), id)));
    }
    for id in 0..=MAX_CELLS {
        let info = set.info.get(&id, 0).map_err(map_err("CELL_INFO"))?;
        if info != CellInfo::default() {
            out.info.push((id, info));
        }
    }
    for key in set.policy.keys() {
        out.allow.push(key.map_err(map_err("POLICY"))?);
    }
    Ok(out)
}

fn put_prefix(set: &mut CellSet, net: IpNet, id: u32) -> Result<(), KernelError> {
    let len = u32::from(net.prefix_len());
    match net {
        IpNet::V4(n) => {
            set.v4.insert(&Key::new(len, n.network().octets()), id, 0).map_err(map_err("CELLS_V4"))
        }
        IpNet::V6(n) => {
            set.v6.insert(&Key::new(len, n.network().octets()), id, 0).map_err(map_err("CELLS_V6"))
        }
    }
}

fn drop_prefix(set: &mut CellSet, net: IpNet) -> Result<(), KernelError> {
    let len = u32::from(net.prefix_len());
    match net {
        IpNet::V4(n) => {
            set.v4.remove(&Key::new(len, n.network().octets())).map_err(map_err("CELLS_V4"))
        }
        IpNet::V6(n) => {
            set.v6.remove(&Key::new(len, n.network().octets())).map_err(map_err("CELLS_V6"))
        }
    }
}
