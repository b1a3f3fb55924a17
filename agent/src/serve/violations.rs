//! Violation events from the kernel: drained from the ring buffer every 100 ms (one
//! wakeup per batch, not per event), each logged as one structured line and kept, the
//! most recent first, for `GET /violations`.
#![forbid(unsafe_code)]

use std::{
    collections::VecDeque,
    net::IpAddr,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use agent_common::ViolationEvent;
use agent_core::{
    events::{addr, comm, decode},
    ids::CellIds,
};
use aya::maps::{MapData, RingBuf};
use serde::Serialize;
use tracing::{info, warn};

use crate::{
    host::{cgroups::Workloads, clock},
    sync,
};

/// How many recent violations `/violations` keeps.
pub(crate) const RECENT: usize = 1024;
const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// One end of a connection.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct End {
    pub(crate) cell: String,
    pub(crate) addr: IpAddr,
    pub(crate) port: u16,
}

/// A violation as `/violations` serves it. `src` is the client.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Violation {
    /// Seconds since the Unix epoch.
    pub(crate) time: f64,
    pub(crate) src: End,
    pub(crate) dst: End,
    pub(crate) direction: &'static str,
    pub(crate) pid: Option<u32>,
    pub(crate) comm: Option<String>,
    pub(crate) cgroup_id: Option<u64>,
    pub(crate) cgroup: Option<String>,
    pub(crate) container_id: Option<String>,
    pub(crate) pod_uid: Option<String>,
    pub(crate) cookie: u64,
    /// Refused by enforce mode (the connect failed with EPERM); false when only flagged.
    pub(crate) denied: bool,
}

/// The recent violations, shared with the HTTP endpoint.
pub(crate) struct Recent {
    events: Mutex<VecDeque<Violation>>,
    /// Records the agent could not decode (never expected; counted to be seen).
    bad_records: AtomicU64,
    /// How many violation log lines may be written now: one node-wide bucket, whatever
    /// the per-pair rate lets through, so a storm of leaking pairs cannot flood the
    /// node's logs.
    log: Mutex<LogBucket>,
    /// Log lines the bucket held back (the events are kept and served all the same).
    log_suppressed: AtomicU64,
}

impl Default for Recent {
    fn default() -> Self {
        Self {
            events: Mutex::new(VecDeque::with_capacity(RECENT)),
            bad_records: AtomicU64::new(0),
            log: Mutex::new(LogBucket::new(Instant::now())),
            log_suppressed: AtomicU64::new(0),
        }
    }
}

/// Violation log lines per second, node-wide, and the burst allowed.
const LOG_RATE: f64 = 20.0;
const LOG_BURST: f64 = 100.0;

/// A token bucket: `LOG_RATE` tokens a second, at most `LOG_BURST`.
struct LogBucket {
    tokens: f64,
    at: Instant,
    /// Held back since the last line written, said in the next one.
    held_back: u64,
}

impl LogBucket {
    fn new(now: Instant) -> Self {
        Self { tokens: LOG_BURST, at: now, held_back: 0 }
    }

    /// `Some(lines held back before this one)` when a line may be written at `now`.
    fn take(&mut self, now: Instant) -> Option<u64> {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * LOG_RATE).min(LOG_BURST);
        self.at = now;
        if self.tokens < 1.0 {
            self.held_back += 1;
            return None;
        }
        self.tokens -= 1.0;
        Some(std::mem::take(&mut self.held_back))
    }
}

impl Recent {
    fn push(&self, v: Violation) {
        let mut q = sync::lock(&self.events);
        if q.len() == RECENT {
            q.pop_back();
        }
        q.push_front(v);
    }

    /// How many ring-buffer records could not be decoded.
    pub(crate) fn undecodable(&self) -> u64 {
        self.bad_records.load(Ordering::Relaxed)
    }

    /// How many violation log lines the node-wide bucket held back.
    pub(crate) fn log_suppressed(&self) -> u64 {
        self.log_suppressed.load(Ordering::Relaxed)
    }

    /// The most recent `limit`, newest first.
    pub(crate) fn latest(&self, limit: usize) -> Vec<Violation> {
        let q = sync::lock(&self.events);
        q.iter().take(limit).cloned().collect()
    }
}

/// Turns a kernel event into what users see.
pub(crate) fn view(e: &ViolationEvent, ids: &CellIds, cgroups: &Workloads) -> Violation {
    let w = cgroups.workload(e.cgroup_id);
    Violation {
        time: clock::unix_seconds(e.ts_ns),
        src: End {
            cell: ids.name(e.src_cell).to_owned(),
            addr: addr(e.family, e.src_addr),
            port: e.src_port,
        },
        dst: End {
            cell: ids.name(e.dst_cell).to_owned(),
            addr: addr(e.family, e.dst_addr),
            port: e.dst_port,
        },
        direction: e.direction().label(),
        pid: (e.pid != 0).then_some(e.pid),
        comm: comm(&e.comm),
        cgroup_id: (e.cgroup_id != 0).then_some(e.cgroup_id),
        cgroup: w.cgroup,
        container_id: w.container_id,
        pod_uid: w.pod_uid,
        cookie: e.cookie,
        denied: e.kind() == agent_common::EventKind::DENIED,
    }
}

impl Recent {
    /// One ring-buffer record: decoded, logged as one line and kept; or, when it does not
    /// decode, counted (`cellwatch_events_lost_total{source="violation_undecodable"}`).
    pub(crate) fn ingest(&self, record: &[u8], ids: &RwLock<CellIds>, cgroups: &Workloads) {
        let e = match decode(record) {
            Ok(e) => e,
            Err(e) => {
                self.bad_records.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "undecodable violation record");
                return;
            }
        };
        let v = view(&e, &sync::read(ids), cgroups);
        let Some(held_back) = sync::lock(&self.log).take(Instant::now()) else {
            self.log_suppressed.fetch_add(1, Ordering::Relaxed);
            self.push(v);
            return;
        };
        info!(
            target: "cellwatch::violation",
            src_cell = %v.src.cell,
            dst_cell = %v.dst.cell,
            src = %std::net::SocketAddr::new(v.src.addr, v.src.port),
            dst = %std::net::SocketAddr::new(v.dst.addr, v.dst.port),
            direction = v.direction,
            pid = v.pid,
            comm = v.comm.as_deref(),
            container_id = v.container_id.as_deref(),
            pod_uid = v.pod_uid.as_deref(),
            denied = v.denied,
            log_lines_held_back = held_back,
            "{}",
            if v.denied {
                "cross-cell connect refused (enforce mode)"
            } else {
                "cross-cell connection against policy"
            }
        );
        self.push(v);
    }
}

/// Drains the ring buffer on a thread of its own until `stop` is set.
pub(crate) fn spawn_drain(
    mut ring: RingBuf<MapData>,
    ids: Arc<RwLock<CellIds>>,
    cgroups: Arc<Workloads>,
    recent: Arc<Recent>,
    requests: std::sync::mpsc::SyncSender<ViolationEvent>,
    dropped: prometheus::IntCounter,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            while let Some(item) = ring.next() {
                // Requests to find a Service backend share the ring buffer.
                if let Ok(e) = decode(&item)
                    && e.kind() == agent_common::EventKind::RESOLVE
                {
                    // A request past the bound is asked again: by the next sweep for an
                    // open connection, by the answerer's scan of DEFERRED for a closed one.
                    if let Err(std::sync::mpsc::TrySendError::Full(_)) = requests.try_send(e) {
                        dropped.inc();
                    }
                    continue;
                }
                recent.ingest(&item, &ids, &cgroups);
            }
            std::thread::sleep(DRAIN_EVERY);
        }
    })
}

#[cfg(test)]
mod tests;
