//! The eBPF side as the agent sees it. Every other module talks to the kernel through
//! [`Kernel`] and [`MapsHandle`]. Inside, top down:
//! - [`load`]: open the embedded object on its pinned maps, then attach;
//! - [`attach`]: each program on its hook; [`pins`]: what a start found pinned and
//!   what to make of it; [`unpin`]: removing it all (`cellwatch uninstall`);
//! - [`cellmap`]: the cell and policy maps written; [`stats`]: counters read;
//!   [`sweep`]: the live sweep and the seeding walk (the kernel's iterators);
//!   [`settle`]: connections to Service addresses counted once their backend is known;
//!   [`conns`]: the live connections they report; [`udp`]: the UDP programs on their
//!   hooks, idle flows removed;
//! - [`fields`]: the socket fields' offsets from the kernel's BTF; [`features`]: the
//!   capability ladder (optional kernel features, probed, and `--without`); [`logs`]:
//!   aya-log forwarded;
//! - [`maps`]: the typed map handles; [`object`]: the object and the names in it;
//!   [`error`]: what can go wrong.

mod attach;
mod cellmap;
mod conns;
mod error;
mod features;
mod fields;
mod load;
mod logs;
mod maps;
mod object;
mod pins;
mod settle;
mod stats;
mod sweep;
mod udp;
pub(crate) mod unpin;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
};

use agent_common::{Brief, Conn};
use agent_core::{metrics::Snapshot, policy::Compiled};
pub(crate) use conns::LiveConn;
pub(crate) use error::KernelError;
pub(crate) use features::{Feature, Found, UnknownFeature, Without, say as say_feature};
pub(crate) use load::{LoadOptions, Staged};
pub(crate) use pins::PinnedState;
pub(crate) use sweep::Seeding;
pub(crate) use sweep::{ListFilter, Side};

use crate::host::bpffs::PinDir;

/// The programs on their hooks and the maps the agent reads and writes. Dropping it
/// closes the agent's handles only: the pinned links keep the programs attached and
/// counting until `cellwatch uninstall`.
pub(crate) struct Kernel {
    /// Owns the programs; kept for their lifetime (and to load the seeding ones).
    ebpf: aya::Ebpf,
    shared: Arc<Shared>,
    /// The violation-event ring buffer, until [`Kernel::take_events`] hands it out.
    events: Option<aya::maps::RingBuf<aya::maps::MapData>>,
    /// What this run made of the pinned state it found.
    pinned: PinnedState,
    /// What the probes found of each optional kernel feature.
    findings: features::Findings,
    btf: aya::Btf,
    cgroup_root: PathBuf,
    /// Forwards `aya-log` records from the kernel into `tracing`.
    _log_task: Option<tokio::task::JoinHandle<()>>,
}

/// What readers (the HTTP path, the sweep task) and writers (config reloads) share.
struct Shared {
    maps: Mutex<maps::Maps>,
    sweeper: sweep::Sweeper,
    settler: settle::Settler,
    dir: PinDir,
}

/// A cheap handle on the kernel side for readers and writers.
#[derive(Clone)]
pub(crate) struct MapsHandle(Arc<Shared>);

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

    /// Optional kernel features, and whether each works here (probed, not forced off).
    pub(crate) fn features(&self) -> Vec<(Feature, bool)> {
        self.findings.rows()
    }

    /// Whether connections older than the agent can be seeded: the TCP iterator finds
    /// their sockets, and the destroy tracepoint's cookie sees them close.
    pub(crate) fn can_seed(&self) -> bool {
        self.findings.works(Feature::TcpIter) && self.findings.works(Feature::DestroySockCookie)
    }

    pub(crate) fn maps(&self) -> MapsHandle {
        MapsHandle(self.shared.clone())
    }

    /// The violation-event ring buffer, for the one task that drains it.
    pub(crate) fn take_events(&mut self) -> Option<aya::maps::RingBuf<aya::maps::MapData>> {
        self.events.take()
    }

    /// Puts connections older than the agent (socket cookie, as judged) in the kernel's
    /// tracking, and watches for their ends while any is open.
    pub(crate) fn seed(&mut self, plan: &[(u64, Conn)]) -> Result<Seeding, KernelError> {
        let done = {
            let handle = self.maps();
            let mut m = handle.lock();
            sweep::seed(&mut self.ebpf, &self.btf, &mut m, plan)?
        };
        if done.seeded > 0 {
            attach::attach_seeded_close(&mut self.ebpf, &self.shared.dir, &self.cgroup_root)?;
        }
        Ok(done)
    }
}

impl MapsHandle {
    fn lock(&self) -> MutexGuard<'_, maps::Maps> {
        crate::sync::lock(&self.0.maps)
    }

    /// Writes where connections to service addresses went (socket cookie, resolution)
    /// and counts those of them that closed before; returns how many of those it counted.
    pub(crate) fn resolve(
        &self,
        resolved: &[(u64, agent_common::Resolution)],
    ) -> Result<usize, KernelError> {
        self.0.settler.resolve(&self.0.maps, resolved)
    }

    /// Connections to service addresses that closed before their backend was known and
    /// wait for it still.
    pub(crate) fn waiting_deferred(&self) -> Vec<agent_common::Deferred> {
        settle::Settler::waiting(&self.0.maps)
    }

    /// Config reloads counted so far (successes, failures), by this agent and the ones
    /// before it on the same pinned maps.
    pub(crate) fn reloads(&self) -> (u64, u64) {
        let m = self.lock();
        let get = |i| m.meta.get(&i, 0).map_or(0, u64::from);
        (get(agent_common::META_RELOADS_SUCCESS), get(agent_common::META_RELOADS_ERROR))
    }

    /// Counts one config reload in the pinned maps. The agent is their only writer.
    pub(crate) fn count_reload(&self, success: bool) -> Result<(), KernelError> {
        let i = if success {
            agent_common::META_RELOADS_SUCCESS
        } else {
            agent_common::META_RELOADS_ERROR
        };
        let mut m = self.lock();
        let n = m.meta.get(&i, 0).unwrap_or(0).wrapping_add(1);
        m.meta.set(i, n, 0).map_err(error::map_err(object::META))
    }

    /// Reads every counter the metrics need.
    pub(crate) fn snapshot(&self) -> Result<Snapshot, KernelError> {
        stats::read(&self.lock())
    }

    /// Replaces the cell and policy maps' contents with `c`.
    pub(crate) fn apply(&self, c: &Compiled) -> Result<(), KernelError> {
        cellmap::apply(&mut self.lock(), c)
    }

    /// Removes the UDP flows idle for longer than `idle`; returns how many are left.
    pub(crate) fn expire_udp(&self, idle: std::time::Duration) -> Result<u64, KernelError> {
        udp::expire(&mut self.lock(), idle)
    }

    /// One live sweep: what open connections moved, into the counters.
    pub(crate) fn sweep(&self) -> Result<(), KernelError> {
        self.0.sweeper.run(&self.0.maps)
    }

    /// A sweep that also lists the live connections `choose` picks from a brief of each
    /// (at most `LIST_MAX` cookies), as the counters now hold them.
    pub(crate) fn live(
        &self,
        filter: ListFilter,
        choose: impl FnOnce(Vec<Brief>) -> Vec<u64>,
    ) -> Result<Vec<LiveConn>, KernelError> {
        let listed = self.0.sweeper.list(&self.0.maps, filter, choose)?;
        Ok(listed.into_iter().map(LiveConn::from).collect())
    }

    /// Takes the seeded-close tracepoint off its hook once no connection older than the
    /// agent is open; true if it did so now.
    pub(crate) fn retire_seeded_close(&self) -> Result<bool, KernelError> {
        if conns::seeded_open(&self.lock())? > 0 {
            return Ok(false);
        }
        attach::detach_seeded_close(&self.0.dir)
    }
}
