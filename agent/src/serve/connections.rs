//! `GET /connections`: the live connections as a sweep finds them, with cells and
//! verdict as judged at open, the process (from the kernel for clients, from /proc for
//! servers), its container, and the bytes and RTT the counters hold of it (the request
//! sweeps first, so the two agree).
#![forbid(unsafe_code)]

use std::{collections::HashMap, net::SocketAddr};

use agent_common::{Brief, CONN_SEEDED, Direction, LIST_MAX, Verdict};
use agent_core::{
    events::{addr, comm},
    ids::CellIds,
    metrics::{HOLDOUTS_PER_CELL, Holdout},
    query::Query,
};
use serde::Serialize;

use super::{http::Unanswered, violations::End};
use crate::{
    host::{cgroups::Workloads, clock, procs, sockdiag},
    kernel::{KernelError, ListFilter, LiveConn, MapsHandle, Side},
};

#[derive(Debug, Serialize)]
pub(crate) struct Connection {
    pub(crate) cookie: u64,
    pub(crate) direction: &'static str,
    pub(crate) verdict: &'static str,
    /// The client.
    pub(crate) src: End,
    /// The server.
    pub(crate) dst: End,
    pub(crate) pid: Option<u32>,
    pub(crate) comm: Option<String>,
    pub(crate) cgroup_id: Option<u64>,
    pub(crate) container_id: Option<String>,
    pub(crate) pod_uid: Option<String>,
    pub(crate) srtt_us: Option<u32>,
    /// Payload bytes this node's socket sent (acknowledged) and received since it was
    /// first counted: what the pair's byte counters hold of it.
    pub(crate) bytes_sent: Option<u64>,
    pub(crate) bytes_received: Option<u64>,
    /// The configured service the server's end is, if any.
    pub(crate) service: Option<String>,
    pub(crate) age_seconds: f64,
    /// Found open when the agent started.
    pub(crate) seeded: bool,
}

pub(crate) fn list(
    maps: &MapsHandle,
    ids: &CellIds,
    cgroups: &Workloads,
    q: &Query,
) -> Result<Vec<Connection>, Unanswered> {
    let side = if q.drained.is_some() { Side::Into } else { Side::Either };
    let cell = match q.cell.as_ref().or(q.drained.as_ref()).map(|c| ids.lookup(c)) {
        // A cell no connection was ever counted in has none open.
        Some(None) => return Ok(Vec::new()),
        Some(Some(id)) => Some(id),
        None => None,
    };
    let verdict =
        q.verdict.map(|v| if v == "violation" { Verdict::VIOLATION } else { Verdict::ALLOWED });
    let live = newest(maps, ListFilter { cell, side, verdict }, q.limit)?;
    let servers = Servers::of(&live);
    Ok(live.into_iter().map(|l| connection(&l, ids, cgroups, &servers)).collect())
}

/// The client processes on this node that hold connections open into the drained cells
/// (one listing for all of them: the kernel picks the client sides into any drained
/// cell), the [`HOLDOUTS_PER_CELL`] holding most per cell, ties by name. Past `LIST_MAX`
/// such connections, the oldest are the ones counted: a drain's holdouts are its
/// long-lived connections. None when they cannot be listed (no live sweep on this
/// kernel: said once at start, as for `/connections`).
pub(crate) fn holdouts(maps: &MapsHandle, ids: &CellIds, cgroups: &Workloads) -> Vec<Holdout> {
    let filter = ListFilter { cell: None, side: Side::Holdouts, verdict: None };
    let oldest = |mut briefs: Vec<Brief>| {
        briefs.sort_unstable_by_key(|b| b.start_ns);
        briefs.truncate(LIST_MAX as usize);
        briefs.into_iter().map(|b| b.cookie).collect()
    };
    let live = match maps.live(filter, oldest) {
        Ok(live) => live,
        Err(e) => {
            tracing::debug!(error = %e, "the holdouts of the drained cells cannot be listed");
            return Vec::new();
        }
    };
    let servers = Servers::of(&live);
    let mut held: HashMap<(u32, u32, String, String), u64> = HashMap::new();
    for l in &live {
        let c = connection(l, ids, cgroups, &servers);
        let comm = c.comm.unwrap_or_else(|| "unknown".to_owned());
        let container = c.container_id.map_or_else(|| "host".to_owned(), |id| short(&id));
        *held.entry((l.conn.dst_cell, l.conn.src_cell, comm, container)).or_default() += 1;
    }
    let mut held: Vec<_> = held.into_iter().collect();
    // Per cell, most held first.
    held.sort_unstable_by(|a, b| a.0.0.cmp(&b.0.0).then(b.1.cmp(&a.1)).then_with(|| a.0.cmp(&b.0)));
    let mut out: Vec<Holdout> = Vec::new();
    for ((cell, src_cell, comm, container), connections) in held {
        if out.iter().filter(|h| h.cell == cell).count() < HOLDOUTS_PER_CELL {
            out.push(Holdout { cell, src_cell, comm, container, connections });
        }
    }
    out
}

/// A container id as `docker ps` and `crictl ps` show it: its first 12 characters.
fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

/// The newest `limit` live connections that pass `filter`, newest first.
fn newest(
    maps: &MapsHandle,
    filter: ListFilter,
    limit: usize,
) -> Result<Vec<LiveConn>, Unanswered> {
    // The kernel filters; of what passes, the newest `limit`; then their full records.
    let choose = |mut briefs: Vec<Brief>| {
        briefs.sort_unstable_by_key(|b| std::cmp::Reverse(b.start_ns));
        briefs.truncate(limit.min(LIST_MAX as usize));
        briefs.into_iter().map(|b| b.cookie).collect()
    };
    let mut live: Vec<LiveConn> = maps.live(filter, choose).map_err(|e| match e {
        KernelError::NoWalk => Unanswered::Unavailable(e.to_string()),
        e => Unanswered::Failed(format!("reading the live connections failed: {e}")),
    })?;
    // Newest first (a connection that closed between the two passes is not listed).
    live.sort_unstable_by_key(|l| std::cmp::Reverse(l.conn.start_ns));
    live.truncate(limit);
    Ok(live)
}

/// Servers' processes: the kernel records only who connects, so the socket's inode
/// (from sock_diag, this network namespace) leads to its holder in /proc.
struct Servers {
    /// Socket inodes, by cookie.
    inodes: HashMap<u64, u32>,
    /// Pid and command of each inode's holder.
    holders: HashMap<u32, (u32, String)>,
}

impl Servers {
    /// The holders of the sockets of `live` the kernel knows no process of.
    fn of(live: &[LiveConn]) -> Self {
        let unowned: Vec<(SocketAddr, SocketAddr, u64)> = live
            .iter()
            .filter(|l| l.conn.pid == 0)
            .map(|l| {
                let c = &l.conn;
                let end = |a, port| SocketAddr::new(addr(c.family, a), port);
                (end(c.local_addr, c.local_port), end(c.remote_addr, c.remote_port), c.cookie)
            })
            .collect();
        let inodes: HashMap<u64, u32> = sockdiag::find(&unowned)
            .map(|v| v.into_iter().filter(|s| s.inode != 0).map(|s| (s.cookie, s.inode)).collect())
            .unwrap_or_default();
        let holders = procs::holders(&inodes.values().copied().collect());
        Self { inodes, holders }
    }

    fn holder(&self, cookie: u64) -> Option<&(u32, String)> {
        self.inodes.get(&cookie).and_then(|i| self.holders.get(i))
    }
}

/// One live connection as `/connections` shows it.
fn connection(l: &LiveConn, ids: &CellIds, cgroups: &Workloads, servers: &Servers) -> Connection {
    let (c, now) = (&l.conn, &l.now);
    let egress = c.direction() == Direction::EGRESS;
    let local = End { cell: String::new(), addr: addr(c.family, c.local_addr), port: c.local_port };
    let remote =
        End { cell: String::new(), addr: addr(c.family, c.remote_addr), port: c.remote_port };
    let (mut src, mut dst) = if egress { (local, remote) } else { (remote, local) };
    src.cell = ids.name(c.src_cell).to_owned();
    dst.cell = ids.name(c.dst_cell).to_owned();
    let (mut pid, mut name) = ((c.pid != 0).then_some(c.pid), comm(&c.comm));
    if pid.is_none()
        && let Some((p, n)) = servers.holder(c.cookie)
    {
        pid = Some(*p);
        name = Some(n.clone());
    }
    let w = cgroups.workload(c.cgroup_id);
    Connection {
        cookie: c.cookie,
        direction: c.direction().label(),
        verdict: c.verdict().label(),
        src,
        dst,
        pid,
        comm: name,
        cgroup_id: (c.cgroup_id != 0).then_some(c.cgroup_id),
        container_id: w.container_id,
        pod_uid: w.pod_uid,
        srtt_us: (now.srtt_us != 0).then_some(now.srtt_us),
        bytes_sent: Some(now.claimed.sent),
        bytes_received: Some(now.claimed.received),
        service: ids.service_name(c.service).map(str::to_owned),
        age_seconds: clock::age_seconds(c.start_ns),
        seeded: c.flags & CONN_SEEDED != 0,
    }
}
