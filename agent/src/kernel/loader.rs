//! Opening the embedded eBPF object on its pinned maps (made and pinned by a first
//! start, adopted by every later one), then, once the config is compiled, writing the
//! cell map and putting the programs on their hooks ([`super::attach`]).
use std::{
    collections::HashSet,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::Instant,
};

use agent_common::{
    CELLS_V4_CAPACITY, CELLS_V6_CAPACITY, CellName, ConnState, LAYOUT_VERSION, META_BUILD,
    META_LAYOUT, Owner, PAIR_STATS_CAPACITY, POLICY_CAPACITY, PairKey, PairStats,
    SETTING_DESTROY_COOKIE_OFFSET, SETTING_EVENT_RATE, SETTING_GENERATION,
    SETTING_RST_COOKIE_OFFSET,
};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, MapInfo, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{ProgramError, links::LinkError},
};
use tokio::io::unix::AsyncFd;
use tracing::{debug, info, warn};

use super::{
    Kernel,
    attach::{self, DESTROY_EVENT, Installed, RST_EVENT, TCP},
    cellmap::{self, CellSet, Generation},
    pins::{self, PinDir, Start},
};
use crate::{
    policy::{CellIds, Compiled},
    preflight::TRACEFS_PATH,
};

/// The eBPF object, built from `agent-ebpf` by this crate's build script.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cellwatch"));

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub cgroup_root: PathBuf,
    /// Where programs' links and maps are pinned (`--bpffs`).
    pub bpffs: PathBuf,
    /// Swap in this build's programs even when the pinned links run them already.
    pub replace_programs: bool,
    /// Capacity of the live-connection table.
    pub conn_capacity: u32,
    /// Size of the violation-event ring buffer, bytes (a power of two, page multiple).
    pub events_bytes: u32,
    /// Violation events per cell pair and direction per second.
    pub event_rate: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("the kernel refused cellwatch's eBPF object: {0}")]
    Load(#[source] aya::EbpfError),
    #[error(
        "the kernel's verifier refused the eBPF program {name} ({reason}); the full verifier \
         log is in the agent's log"
    )]
    Verifier { name: &'static str, reason: String },
    #[error("the kernel refused the eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("could not attach {what}: {source}")]
    Attach {
        what: String,
        #[source]
        source: ProgramError,
    },
    #[error("could not open the cgroup v2 root {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the eBPF object has no {0}: the agent and its embedded programs do not match")]
    Missing(&'static str),
    #[error("cannot pin at {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot pin the link of {what} (this kernel attached it without a bpf_link): {source}")]
    Unpinnable {
        what: String,
        #[source]
        source: LinkError,
    },
    #[error("cannot remove the unreadable pinned state: {0}")]
    Discard(#[source] crate::uninstall::UninstallError),
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

pub(super) fn map_err(name: &'static str) -> impl FnOnce(MapError) -> KernelError {
    move |source| KernelError::Map { name, source }
}

/// Typed handles on the maps userspace reads and writes.
pub(super) struct Maps {
    pub(super) pair_stats: PerCpuHashMap<MapData, PairKey, PairStats>,
    pub(super) conns: HashMap<MapData, u64, ConnState>,
    pub(super) owners: HashMap<MapData, u64, Owner>,
    pub(super) seed_opened: HashMap<MapData, PairKey, [u64; 2]>,
    pub(super) counters: PerCpuArray<MapData, u64>,
    pub(super) settings: Array<MapData, u32>,
    pub(super) cell_names: Array<MapData, CellName>,
    pub(super) meta: Array<MapData, u32>,
    /// Cell ids whose names are in `cell_names`.
    pub(super) names_written: HashSet<u32>,
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

/// Map sizes as loaded.
#[derive(Debug, Clone, Copy)]
pub(super) struct Capacity {
    pub(super) conns: u32,
    pub(super) pair_stats: u32,
    pub(super) cells_v4: u32,
    pub(super) cells_v6: u32,
    pub(super) policy: u32,
}

/// The object with its maps open, before any program is on a hook: the cell ids the
/// pinned state already uses are known, so the config compiles to the same ids.
pub struct Staged {
    ebpf: Ebpf,
    maps: Maps,
    events: RingBuf<MapData>,
    log_task: Option<tokio::task::JoinHandle<()>>,
    dir: PinDir,
    start: Start,
    cgroup_root: PathBuf,
    build: u32,
    features: Vec<(Feature, bool)>,
}

pub(super) fn open(opts: &LoadOptions) -> Result<Staged, KernelError> {
    let dir = PinDir::new(&opts.bpffs);
    let build = pins::build_id(EBPF_OBJECT);
    let start = pins::decide(pins::inspect(&dir), build, opts.replace_programs);
    if let Start::Discard(why) = start {
        warn!(
            bpffs = %dir.root().display(),
            "the pinned state {why}, and this agent reads a complete layout {LAYOUT_VERSION} \
             only: it is removed and counting starts from zero"
        );
        crate::uninstall::clear(dir.root()).map_err(KernelError::Discard)?;
    }
    dir.create().map_err(|source| KernelError::Pin { path: dir.root().to_owned(), source })?;
    undo_if_new(open_in(opts, dir.clone(), start, build), start, dir.root())
}

/// A failed first start leaves no half-made pins behind (the next start would find them
/// incomplete); a failed adoption leaves what runs alone.
fn undo_if_new<T>(r: Result<T, KernelError>, start: Start, dir: &Path) -> Result<T, KernelError> {
    if r.is_err() && start.is_new() {
        let _ = crate::uninstall::clear(dir);
    }
    r
}

fn open_in(
    opts: &LoadOptions,
    dir: PinDir,
    start: Start,
    build: u32,
) -> Result<Staged, KernelError> {
    let paths: Vec<(&str, PathBuf)> = pins::MAPS.iter().map(|m| (*m, dir.map(m))).collect();
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries("CONNS", opts.conn_capacity)
        .map_max_entries("OWNERS", opts.conn_capacity)
        .map_max_entries("EVENTS", opts.events_bytes);
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader.load(EBPF_OBJECT).map_err(KernelError::Load)?;
    let log_task = spawn_log_forwarder(&mut ebpf);

    let mut maps = take_maps(&mut ebpf, &dir, start)?;
    if maps.capacity.conns != opts.conn_capacity {
        warn!(
            pinned = maps.capacity.conns,
            requested = opts.conn_capacity,
            "the pinned connection table keeps its capacity; a new --conn-capacity takes \
             effect after `cellwatch uninstall`"
        );
    }
    let events = take(&mut ebpf, "EVENTS")?;
    let settings = &mut maps.settings;
    settings.set(SETTING_EVENT_RATE, opts.event_rate, 0).map_err(map_err("SETTINGS"))?;
    // Optional tracepoint fields: the programs find them at the offsets the settings say
    // (0 = absent), and the agent says what it cannot tell without one.
    let mut features = Vec::new();
    for f in [Feature::RstSockCookie, Feature::DestroySockCookie] {
        let offset = cookie_offset(f.event());
        match offset {
            Some(off) => settings.set(f.setting(), off, 0).map_err(map_err("SETTINGS"))?,
            None => warn!("{TCP}:{} has no sock_cookie field here: {}", f.event(), f.without()),
        }
        features.push((f, offset.is_some()));
    }
    Ok(Staged {
        ebpf,
        maps,
        events,
        log_task,
        dir,
        start,
        cgroup_root: opts.cgroup_root.clone(),
        build,
        features,
    })
}

/// What the running kernel offers that the agent can do without, probed at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// `tcp:tcp_receive_reset` carries `sock_cookie`: refused connects are told from
    /// timed-out ones (else both count as `other`).
    RstSockCookie,
    /// `tcp:tcp_destroy_sock` carries `sock_cookie`: connections older than the agent are
    /// seen closing.
    DestroySockCookie,
}

impl Feature {
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::RstSockCookie => "rst_sock_cookie",
            Feature::DestroySockCookie => "destroy_sock_cookie",
        }
    }

    /// The `tcp` tracepoint whose record has the field.
    fn event(self) -> &'static str {
        match self {
            Feature::RstSockCookie => RST_EVENT,
            Feature::DestroySockCookie => DESTROY_EVENT,
        }
    }

    /// The `SETTINGS` index the field's offset goes to.
    fn setting(self) -> u32 {
        match self {
            Feature::RstSockCookie => SETTING_RST_COOKIE_OFFSET,
            Feature::DestroySockCookie => SETTING_DESTROY_COOKIE_OFFSET,
        }
    }

    /// What the agent cannot tell without it.
    fn without(self) -> &'static str {
        match self {
            Feature::RstSockCookie => "refused connects are counted as `other`",
            Feature::DestroySockCookie => "connections older than the agent are not seen closing",
        }
    }
}

impl Staged {
    /// How this run treats what it found pinned.
    pub fn start_kind(&self) -> Start {
        self.start
    }

    /// The cell ids of the pinned state (none on a fresh start).
    pub fn cell_ids(&self) -> CellIds {
        if self.start.is_new() {
            return CellIds::default();
        }
        let names = (1..=agent_common::MAX_CELLS).filter_map(|id| {
            let n = self.maps.cell_names.get(&id, 0).ok()?;
            let name = n.name.get(..usize::from(n.len))?;
            (n.len > 0).then(|| (id, String::from_utf8_lossy(name).into_owned()))
        });
        CellIds::restore(names)
    }

    /// Writes `initial` into the cell map, then puts every program on its hook (or
    /// keeps the pinned ones), and records the layout and build last.
    pub fn start(self, initial: &Compiled) -> Result<Kernel, KernelError> {
        let (start, root) = (self.start, self.dir.root().to_owned());
        undo_if_new(self.finish(initial), start, &root)
    }

    fn finish(mut self, initial: &Compiled) -> Result<Kernel, KernelError> {
        let started = Instant::now();
        // Before anything is attached, so the very first connection is judged against
        // the full config; adopted programs flip over to it in one step.
        cellmap::apply(&mut self.maps, initial)?;
        info!(
            prefixes = initial.prefixes.len(),
            allow_rules = initial.allow.len(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "cell map written"
        );
        let installed = attach::install(&mut self.ebpf, &self.dir, self.start, &self.cgroup_root)?;
        let meta = &mut self.maps.meta;
        meta.set(META_BUILD, self.build, 0).map_err(map_err("META"))?;
        meta.set(META_LAYOUT, LAYOUT_VERSION, 0).map_err(map_err("META"))?;
        log_start(self.start, installed, &self.dir, &self.cgroup_root);
        Ok(Kernel {
            _programs: self.ebpf,
            maps: std::sync::Arc::new(std::sync::Mutex::new(self.maps)),
            events: Some(self.events),
            start: self.start,
            features: self.features,
            _log_task: self.log_task,
        })
    }
}

fn log_start(start: Start, done: Installed, dir: &PinDir, cgroup: &Path) {
    let (bpffs, cgroup) = (dir.root().display(), cgroup.display());
    match start {
        Start::Adopt => info!(
            %bpffs, programs = done.adopted,
            "adopted the running programs and their maps: counting went on while no agent ran"
        ),
        Start::Replace => info!(
            %bpffs, replaced = done.replaced, attached = done.attached,
            "swapped this build's programs onto the pinned links; maps and counts kept"
        ),
        Start::Fresh | Start::Discard(_) => info!(
            %bpffs, %cgroup, programs = done.attached,
            "eBPF programs attached and pinned"
        ),
    }
}

pub(super) fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, KernelError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(KernelError::Missing(name))?;
    T::try_from(map).map_err(map_err(name))
}

/// One cell-map set from its maps' names: IPv4 trie, IPv6 trie, cell flags, allow rules.
fn cell_set(
    ebpf: &mut Ebpf,
    [v4, v6, info, policy]: [&'static str; 4],
) -> Result<CellSet, KernelError> {
    Ok(CellSet {
        v4: take(ebpf, v4)?,
        v6: take(ebpf, v6)?,
        info: take(ebpf, info)?,
        policy: take(ebpf, policy)?,
        holds: Compiled::default(),
        known: true,
    })
}

fn take_maps(ebpf: &mut Ebpf, dir: &PinDir, start: Start) -> Result<Maps, KernelError> {
    let mut sets = [
        cell_set(ebpf, ["CELLS_V4_A", "CELLS_V6_A", "CELL_INFO_A", "POLICY_A"])?,
        cell_set(ebpf, ["CELLS_V4_B", "CELLS_V6_B", "CELL_INFO_B", "POLICY_B"])?,
    ];
    let settings: Array<MapData, u32> = take(ebpf, "SETTINGS")?;
    // A fresh object reads generation 0 (set A, empty): every peer external and allowed.
    // Adopted maps say which set the running programs read.
    let active = settings.get(&SETTING_GENERATION, 0).map_err(map_err("SETTINGS"))? as usize & 1;
    if !start.is_new() {
        // What the programs read now is read back when a write first targets it (the
        // first reload); the other set is the first write's target.
        sets[active].known = false;
        let target = &mut sets[1 - active];
        target.holds = cellmap::read_set(target)?;
    }
    let conns = max_entries(dir, "CONNS")?;
    Ok(Maps {
        pair_stats: take(ebpf, "PAIR_STATS")?,
        conns: take(ebpf, "CONNS")?,
        owners: take(ebpf, "OWNERS")?,
        seed_opened: take(ebpf, "SEED_OPENED")?,
        counters: take(ebpf, "COUNTERS")?,
        settings,
        cell_names: take(ebpf, "CELL_NAMES")?,
        meta: take(ebpf, "META")?,
        names_written: HashSet::new(),
        sets,
        // No flip of this process's is in flight: the first write need not wait.
        generation: Generation {
            active,
            since: Instant::now().checked_sub(cellmap::GRACE).unwrap_or_else(Instant::now),
        },
        capacity: Capacity {
            conns,
            pair_stats: PAIR_STATS_CAPACITY,
            cells_v4: CELLS_V4_CAPACITY,
            cells_v6: CELLS_V6_CAPACITY,
            policy: POLICY_CAPACITY,
        },
    })
}

/// Capacity of a pinned map, as the kernel has it.
fn max_entries(dir: &PinDir, name: &'static str) -> Result<u32, KernelError> {
    MapInfo::from_pin(dir.map(name)).map(|i| i.max_entries()).map_err(map_err(name))
}

/// Offset of `sock_cookie` in a tcp tracepoint's record, from tracefs.
fn cookie_offset(event: &str) -> Option<u32> {
    let path = format!("{TRACEFS_PATH}/events/{TCP}/{event}/format");
    let text = std::fs::read_to_string(path).ok()?;
    field_offset(&text, "sock_cookie")
}

/// Parses `field:__u64 sock_cookie; offset:64; size:8;` lines of a tracefs format file.
pub(super) fn field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|l| {
        let decl = l.trim().strip_prefix("field:")?.split(';').next()?;
        let name = decl.rsplit(|c: char| c.is_whitespace() || c == '*').next()?;
        if name != field {
            return None;
        }
        let off = l.split("offset:").nth(1)?.split(';').next()?;
        off.trim().parse().ok()
    })
}

/// aya-log records arrive through a ring buffer; forward them into `log`, which the
/// tracing subscriber bridges.
fn spawn_log_forwarder(ebpf: &mut Ebpf) -> Option<tokio::task::JoinHandle<()>> {
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(l) => l,
        Err(e) => {
            debug!(error = %e, "no aya-log map in the eBPF object");
            return None;
        }
    };
    let fd = logger.as_raw_fd();
    // SAFETY: the logger owns its ring buffer's fd and keeps it open for as long as the
    // AsyncFd (which owns the logger) exists; nothing else closes or replaces it.
    let registered =
        unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
    let mut afd = match registered {
        Ok(a) => a,
        Err(e) => {
            warn!(error = %e, fd, "cannot poll the eBPF log buffer; kernel log records are dropped");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        loop {
            let Ok(mut guard) = afd.readable_mut().await else { return };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tracefs_field_offsets_parse() {
        let fmt = "name: tcp_receive_reset\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
                   \tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
                   \tfield:__u8 daddr_v6[16];\toffset:46;\tsize:16;\tsigned:0;\n\
                   \tfield:__u64 sock_cookie;\toffset:64;\tsize:8;\tsigned:0;\n";
        assert_eq!(super::field_offset(fmt, "sock_cookie"), Some(64));
        assert_eq!(super::field_offset(fmt, "skaddr"), Some(8));
        assert_eq!(super::field_offset(fmt, "cookie"), None);
    }
}
