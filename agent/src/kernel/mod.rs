//! The eBPF side as the agent sees it. Every other module talks to the kernel through
//! [`Kernel`] and [`MapsHandle`]. Inside, top down:
//! - [`load`]: open the embedded object on its pinned maps, then attach;
//! - [`attach`]: each program on its hook; [`pins`]: what a start found pinned and
//!   what to make of it; [`unpin`]: removing it all (`cellwatch uninstall`);
//! - [`cellmap`]: the cell and policy maps written; [`stats`]: counters read;
//!   [`conns`]: the live-connection table listed and seeded;
//! - [`features`]: optional kernel features probed; [`logs`]: aya-log forwarded;
//! - [`maps`]: the typed map handles; [`object`]: the object and the names in it;
//!   [`error`]: what can go wrong.

mod attach;
mod cellmap;
mod conns;
mod error;
mod features;
mod load;
mod logs;
mod maps;
mod object;
mod pins;
mod stats;
pub(crate) mod unpin;

use std::sync::{Arc, Mutex, MutexGuard};

use agent_common::{ConnState, PairKey};
use agent_core::{metrics::Snapshot, policy::Compiled};
pub(crate) use conns::LiveConn;
pub(crate) use error::KernelError;
pub(crate) use features::Feature;
pub(crate) use load::{LoadOptions, Staged};
pub(crate) use pins::PinnedState;

/// The programs on their hooks and the maps the agent reads and writes. Dropping it
/// closes the agent's handles only: the pinned links keep the programs attached and
/// counting until `cellwatch uninstall`.
pub(crate) struct Kernel {
    /// Owns the programs and their links; kept for their lifetime.
    _programs: aya::Ebpf,
    maps: Arc<Mutex<maps::Maps>>,
    /// The violation-event ring buffer, until [`Kernel::take_events`] hands it out.
    events: Option<aya::maps::RingBuf<aya::maps::MapData>>,
    /// What this run made of the pinned state it found.
    pinned: PinnedState,
    /// Optional kernel features, and whether this kernel has them.
    features: Vec<(Feature, bool)>,
    /// Forwards `aya-log` records from the kernel into `tracing`.
    _log_task: Option<tokio::task::JoinHandle<()>>,
}

/// A cheap handle for readers (the HTTP scrape path) and writers (config reloads).
#[derive(Clone)]
pub(crate) struct MapsHandle(Arc<Mutex<maps::Maps>>);

impl Kernel {
    /// Opens the embedded eBPF object on the maps pinned under `opts.bpffs` (made there
    /// on a first start); [`Staged::attach`] then attaches. Must run inside a tokio
    /// runtime (the log forwarder is a task).
    pub(crate) fn open(opts: &LoadOptions) -> Result<Staged, KernelError> {
        load::open(opts)
    }

    /// What this run made of the pinned state it found.
    pub(crate) fn pinned_state(&self) -> PinnedState {
        self.pinned
    }

    /// Optional kernel features, and whether this kernel has them.
    pub(crate) fn features(&self) -> &[(Feature, bool)] {
        &self.features
    }

    pub(crate) fn maps(&self) -> MapsHandle {
        MapsHandle(self.maps.clone())
    }

    /// The violation-event ring buffer, for the one task that drains it.
    pub(crate) fn take_events(&mut self) -> Option<aya::maps::RingBuf<aya::maps::MapData>> {
        self.events.take()
    }
}

impl MapsHandle {
    fn lock(&self) -> MutexGuard<'_, maps::Maps> {
        crate::sync::lock(&self.0)
    }

    /// Reads every counter the metrics need.
    pub(crate) fn snapshot(&self) -> Result<Snapshot, KernelError> {
        stats::read(&self.lock())
    }

    /// Replaces the cell and policy maps' contents with `c`.
    pub(crate) fn apply(&self, c: &Compiled) -> Result<(), KernelError> {
        cellmap::apply(&mut self.lock(), c)
    }

    /// Live connections `keep` selects, at most `limit`.
    pub(crate) fn live(
        &self,
        limit: usize,
        keep: &dyn Fn(&ConnState) -> bool,
    ) -> Result<Vec<LiveConn>, KernelError> {
        conns::live(&self.lock(), limit, keep)
    }

    /// Adds a connection older than the agent; false if the kernel already tracks it.
    pub(crate) fn seed(&self, cookie: u64, state: &ConnState) -> Result<bool, KernelError> {
        conns::seed(&mut self.lock(), cookie, state)
    }

    /// Takes back a seeded connection that closed unseen; true if it was still there.
    pub(crate) fn unseed(&self, cookie: u64, key: &PairKey) -> Result<bool, KernelError> {
        conns::unseed(&mut self.lock(), cookie, key)
    }
}
