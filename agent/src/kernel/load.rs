//! Starting the kernel side, in two steps. [`open`]: the embedded object is loaded on
//! its pinned maps (made and pinned by a first start, adopted by every later one), so
//! the cell ids the pinned state uses are known before the config is compiled.
//! [`Staged::attach`]: the compiled config is written into the cell map, then every
//! program goes on its hook ([`super::attach`]), and the layout and build are recorded.
use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use agent_common::{
    LAYOUT_VERSION, META_BUILD, META_LAYOUT, SETTING_CONN_CAPACITY, SETTING_EVENT_RATE,
    SETTING_UDP_IDLE,
};
use agent_core::{ids::CellIds, policy::Compiled};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{MapData, RingBuf},
};
use tracing::{info, warn};

use super::{
    Kernel, Shared,
    attach::{self, Installed},
    cellmap,
    error::{KernelError, map_err},
    features::{self, Feature, Findings, Without},
    fields, logs,
    maps::{self, Maps},
    object::{self, EBPF_OBJECT},
    pins::{self, PinnedState},
    sweep::Sweeper,
    unpin,
};
use crate::host::bpffs::PinDir;

#[derive(Debug, Clone)]
pub(crate) struct LoadOptions {
    pub(crate) cgroup_root: PathBuf,
    /// Where programs' links and maps are pinned (`--bpffs`).
    pub(crate) bpffs: PathBuf,
    /// Swap in this build's programs even when the pinned links run them already.
    pub(crate) replace_programs: bool,
    /// Most live connections tracked at once.
    pub(crate) conn_capacity: u32,
    /// Size of the violation-event ring buffer, bytes (a power of two, page multiple).
    pub(crate) events_bytes: u32,
    /// Violation events per cell pair and direction per second.
    pub(crate) event_rate: u32,
    /// Time every `sock_ops` op (for benchmarks; costs a clock read per run).
    pub(crate) profile_kernel: bool,
    /// Optional features to do without, as if the kernel had refused them (`--without`).
    pub(crate) without: Without,
    /// Entries of each of the two pair tables when they are made (tests fill them).
    pub(crate) pair_tables: Option<u32>,
    /// Silence after which a UDP flow ends (`--udp-idle`), whole seconds.
    pub(crate) udp_idle_secs: u32,
    /// Flows of the UDP flow table when it is made (tests fill it).
    pub(crate) udp_flows: Option<u32>,
}

/// The object with its maps open, before any program is on a hook.
pub(crate) struct Staged {
    ebpf: Ebpf,
    maps: Maps,
    events: RingBuf<MapData>,
    log_task: Option<tokio::task::JoinHandle<()>>,
    dir: PinDir,
    pinned: PinnedState,
    cgroup_root: PathBuf,
    build: u32,
    findings: Findings,
    without: Without,
    btf: Btf,
}

/// Loads the object on the maps pinned under `opts.bpffs`. Must run inside a tokio
/// runtime (the log forwarder is a task).
pub(super) fn open(opts: &LoadOptions) -> Result<Staged, KernelError> {
    let dir = PinDir::new(&opts.bpffs);
    let build = pins::build_id(EBPF_OBJECT);
    let pinned = pins::decide(pins::inspect(&dir), build, opts.replace_programs);
    if let PinnedState::Discarded(why) = pinned {
        warn!(
            bpffs = %dir.root().display(),
            "the pinned state {why}, and this agent reads a complete layout {LAYOUT_VERSION} \
             only: it is removed and counting starts from zero"
        );
        unpin::clear(dir.root()).map_err(KernelError::Discard)?;
    }
    dir.create().map_err(|source| KernelError::Pin { path: dir.root().to_owned(), source })?;
    undo_if_new(open_in(opts, dir.clone(), pinned, build), pinned, dir.root())
}

/// A failed first start leaves no half-made pins behind (the next start would find them
/// incomplete); a failed adoption leaves what runs alone.
fn undo_if_new<T>(
    r: Result<T, KernelError>,
    pinned: PinnedState,
    dir: &Path,
) -> Result<T, KernelError> {
    if r.is_err() && pinned.is_new() {
        let _ = unpin::clear(dir);
    }
    r
}

fn open_in(
    opts: &LoadOptions,
    dir: PinDir,
    pinned: PinnedState,
    build: u32,
) -> Result<Staged, KernelError> {
    let paths: Vec<(&str, PathBuf)> =
        object::PINNED_MAPS.iter().map(|m| (*m, dir.map(m))).collect();
    let mut loader = EbpfLoader::new();
    loader.map_max_entries(object::EVENTS, opts.events_bytes);
    if let Some(n) = opts.pair_tables {
        loader.map_max_entries(object::PAIR_STATS, n);
        loader.map_max_entries(object::PAIR_OVERFLOW, n);
    }
    if let Some(n) = opts.udp_flows {
        loader.map_max_entries(object::UDP_FLOWS, n);
    }
    let profile = u32::from(opts.profile_kernel);
    loader.override_global(object::PROFILE_KERNEL, &profile, true);
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader.load(EBPF_OBJECT).map_err(KernelError::Load)?;
    let log_task = logs::spawn_forwarder(&mut ebpf);

    let mut maps = maps::take_all(&mut ebpf)?;
    if !pinned.is_new() {
        cellmap::adopt(&mut maps)?;
    }
    fields::write(&mut maps)?;
    let events = maps::events(&mut ebpf)?;
    let settings = &mut maps.settings;
    let set = |s: &mut aya::maps::Array<MapData, u32>, i, v| {
        s.set(i, v, 0).map_err(map_err(object::SETTINGS))
    };
    // Each CPU keeps its own window (in the pair's per-CPU slot: no shared state to
    // contend on), with the whole rate.
    set(settings, SETTING_EVENT_RATE, opts.event_rate)?;
    set(settings, SETTING_CONN_CAPACITY, opts.conn_capacity)?;
    set(settings, SETTING_UDP_IDLE, opts.udp_idle_secs)?;
    maps.capacity.conns = opts.conn_capacity;
    if let Some(n) = opts.pair_tables {
        (maps.capacity.pair_stats, maps.capacity.pair_overflow) = (n, n);
    }
    if let Some(n) = opts.udp_flows {
        maps.capacity.udp_flows = n;
    }
    let mut findings = Findings::default();
    let destroy = features::probe_destroy_cookie(&mut maps.settings, &opts.without)?;
    findings.record(Feature::DestroySockCookie, destroy);
    let btf = Btf::from_sys_fs().map_err(|e| KernelError::Btf(e.to_string()))?;
    Ok(Staged {
        ebpf,
        maps,
        events,
        log_task,
        dir,
        pinned,
        cgroup_root: opts.cgroup_root.clone(),
        build,
        findings,
        without: opts.without.clone(),
        btf,
    })
}

impl Staged {
    /// The cell ids of the pinned state (none on a fresh start).
    pub(crate) fn cell_ids(&self) -> CellIds {
        if self.pinned.is_new() {
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
    pub(crate) fn attach(self, initial: &Compiled) -> Result<Kernel, KernelError> {
        let (pinned, root) = (self.pinned, self.dir.root().to_owned());
        undo_if_new(self.finish(initial), pinned, &root)
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
        let installed = attach::install(&mut self.ebpf, &self.dir, self.pinned, &self.cgroup_root)?;
        let udp = super::udp::install(
            &mut self.ebpf,
            &self.dir,
            self.pinned,
            &self.cgroup_root,
            &self.without,
        )?;
        self.findings.record(Feature::Udp, udp);
        let meta = &mut self.maps.meta;
        meta.set(META_BUILD, self.build, 0).map_err(map_err(object::META))?;
        meta.set(META_LAYOUT, LAYOUT_VERSION, 0).map_err(map_err(object::META))?;
        log_attached(self.pinned, installed, &self.dir, &self.cgroup_root);
        // The optional mechanisms, each probed by loading and running it: none of them
        // stops the agent (the core is on its hooks already).
        let maps = std::sync::Mutex::new(self.maps);
        let (ebpf, btf, found) = (&mut self.ebpf, &self.btf, &mut self.findings);
        let sweeper = Sweeper::new(ebpf, btf, &maps, &self.without, found);
        let settler = super::settle::Settler::new(ebpf, btf, &self.dir, &self.without, found);
        info!(features = %self.findings.summary(), "kernel features probed");
        Ok(Kernel {
            ebpf: self.ebpf,
            shared: std::sync::Arc::new(Shared { maps, sweeper, settler, dir: self.dir }),
            events: Some(self.events),
            pinned: self.pinned,
            findings: self.findings,
            btf: self.btf,
            cgroup_root: self.cgroup_root,
            _log_task: self.log_task,
        })
    }
}

fn log_attached(pinned: PinnedState, done: Installed, dir: &PinDir, cgroup: &Path) {
    let (bpffs, cgroup) = (dir.root().display(), cgroup.display());
    match pinned {
        PinnedState::Adopted => info!(
            %bpffs, programs = done.adopted,
            "adopted the running programs and their maps: counting went on while no agent ran"
        ),
        PinnedState::Replaced => info!(
            %bpffs, replaced = done.replaced, attached = done.attached,
            "swapped this build's programs onto the pinned links; maps and counts kept"
        ),
        PinnedState::Fresh | PinnedState::Discarded(_) => info!(
            %bpffs, %cgroup, programs = done.attached,
            "eBPF programs attached and pinned"
        ),
    }
}
