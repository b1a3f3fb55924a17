//! The eBPF side as the agent sees it: open the object on its pinned maps ([`loader`],
//! [`pins`]), put the programs on their hooks ([`attach`]), fill the cell and policy maps
//! ([`cellmap`]) and read the counters ([`stats`]). Every other module talks to the
//! kernel through [`Kernel`].

mod attach;
mod cellmap;
mod conns;
mod loader;
mod pins;
mod stats;

use std::sync::{Arc, Mutex, MutexGuard};

pub use conns::LiveConn;
pub use loader::{Feature, KernelError, LoadOptions, Staged};
pub use pins::Start;
pub use stats::{MapFill, Snapshot};

use crate::policy::Compiled;

/// The programs on their hooks and the maps the agent reads and writes. Dropping it
/// closes the agent's handles only: the pinned links keep the programs attached and
/// counting until `cellwatch uninstall`.
pub struct Kernel {
    /// Owns the programs and their links; kept for their lifetime.
    _programs: aya::Ebpf,
    maps: Arc<Mutex<loader::Maps>>,
    /// The violation-event ring buffer, until [`Kernel::take_events`] hands it out.
    events: Option<aya::maps::RingBuf<aya::maps::MapData>>,
    /// How this run treated the pinned state it found.
    start: Start,
    /// Optional kernel features, and whether this kernel has them.
    features: Vec<(Feature, bool)>,
    /// Forwards `aya-log` records from the kernel into `tracing`.
    _log_task: Option<tokio::task::JoinHandle<()>>,
}

/// A cheap handle for readers (the HTTP scrape path) and writers (config reloads).
#[derive(Clone)]
pub struct MapsHandle(Arc<Mutex<loader::Maps>>);

impl Kernel {
    /// Opens the embedded eBPF object on the maps pinned under `opts.bpffs` (made there
    /// on a first start); [`Staged::start`] then attaches. Must run inside a tokio
    /// runtime (the log forwarder is a task).
    pub fn open(opts: &LoadOptions) -> Result<Staged, KernelError> {
        loader::open(opts)
    }

    /// How this run treated the pinned state it found.
    pub fn start_kind(&self) -> Start {
        self.start
    }

    /// Optional kernel features, and whether this kernel has them.
    pub fn features(&self) -> &[(Feature, bool)] {
        &self.features
    }

    pub fn maps(&self) -> MapsHandle {
        MapsHandle(self.maps.clone())
    }

    /// The violation-event ring buffer, for the one task that drains it.
    pub fn take_events(&mut self) -> Option<aya::maps::RingBuf<aya::maps::MapData>> {
        self.events.take()
    }
}

impl MapsHandle {
    fn lock(&self) -> MutexGuard<'_, loader::Maps> {
        // A panic while holding the lock leaves the maps themselves intact (they live in
        // the kernel), so a poisoned lock is safe to reuse.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads every counter the metrics need.
    pub fn snapshot(&self) -> Result<Snapshot, KernelError> {
        stats::read(&self.lock())
    }

    /// Replaces the cell and policy maps' contents with `c`.
    pub fn apply(&self, c: &Compiled) -> Result<(), KernelError> {
        cellmap::apply(&mut self.lock(), c)
    }

    /// Live connections `keep` selects, at most `limit`.
    pub fn live(
        &self,
        limit: usize,
        keep: &dyn Fn(&agent_common::ConnState) -> bool,
    ) -> Result<Vec<LiveConn>, KernelError> {
        conns::live(&self.lock(), limit, keep)
    }

    /// Adds a connection older than the agent; false if the kernel already tracks it.
    pub fn seed(
        &self,
        cookie: u64,
        state: &agent_common::ConnState,
        key: &agent_common::PairKey,
        violation: bool,
    ) -> Result<bool, KernelError> {
        conns::seed(&mut self.lock(), cookie, state, key, violation)
    }

    /// Takes back a seeded connection that closed unseen; true if it was still there.
    pub fn unseed(
        &self,
        cookie: u64,
        key: &agent_common::PairKey,
        violation: bool,
    ) -> Result<bool, KernelError> {
        conns::unseed(&mut self.lock(), cookie, key, violation)
    }
}
