//! The eBPF side as the agent sees it: load and attach the programs ([`loader`]), fill
//! the cell and policy maps ([`cellmap`]) and read the counters ([`stats`]).
//! Every other module talks to the kernel through [`Kernel`].

mod cellmap;
mod conns;
mod loader;
mod stats;

use std::sync::{Arc, Mutex, MutexGuard};

pub use conns::LiveConn;
pub use loader::{KernelError, LoadOptions};
pub use stats::{MapFill, Snapshot};

use crate::policy::Compiled;

/// The loaded, attached programs and the maps the agent reads and writes. Dropping it
/// detaches everything.
pub struct Kernel {
    /// Owns the programs and their links; kept for their lifetime.
    _programs: aya::Ebpf,
    maps: Arc<Mutex<loader::Maps>>,
    /// The violation-event ring buffer, until [`Kernel::take_events`] hands it out.
    events: Option<aya::maps::RingBuf<aya::maps::MapData>>,
    /// Forwards `aya-log` records from the kernel into `tracing`.
    _log_task: Option<tokio::task::JoinHandle<()>>,
}

/// A cheap handle for readers (the HTTP scrape path) and writers (config reloads).
#[derive(Clone)]
pub struct MapsHandle(Arc<Mutex<loader::Maps>>);

impl Kernel {
    /// Loads the embedded eBPF object, writes `initial` into its maps, then attaches.
    /// Must run inside a tokio runtime (the log forwarder is a task).
    pub fn load(opts: &LoadOptions, initial: &Compiled) -> Result<Self, KernelError> {
        loader::load(opts, initial)
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
