//! The eBPF side as the agent sees it: load and attach the programs ([`loader`]), fill
//! the cell and policy maps ([`cellmap`]) and read the counters ([`stats`]).
//! Every other module talks to the kernel through [`Kernel`].

mod cellmap;
mod loader;
mod stats;

use std::sync::{Arc, Mutex, MutexGuard};

pub use loader::{KernelError, LoadOptions};
pub use stats::{MapFill, Snapshot};

use crate::policy::Compiled;

/// The loaded, attached programs and the maps the agent reads and writes. Dropping it
/// detaches everything.
pub struct Kernel {
    /// Owns the programs and their links; kept for their lifetime.
    _programs: aya::Ebpf,
    maps: Arc<Mutex<loader::Maps>>,
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
}
