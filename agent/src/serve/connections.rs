//! `GET /connections`: the kernel's live-connection table, with cells and verdict as
//! judged at open, the process (from the kernel for clients, from /proc for servers),
//! its container, and live RTT and bytes from `sock_diag`.
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};

use agent_common::{
    CONN_SEEDED, ConnState, DIR_EGRESS, VERDICT_VIOLATION, direction_label, verdict_label,
};
use agent_core::{
    events::{addr, comm},
    ids::CellIds,
    query::Query,
};
use netlink_packet_sock_diag::inet::StateFlags;
use serde::Serialize;

use super::violations::End;
use crate::{
    host::{cgroups::Resolver, clock, procs, sockdiag},
    kernel::MapsHandle,
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
    /// Payload bytes this node's socket sent (acknowledged) and received so far.
    pub(crate) bytes_sent: Option<u64>,
    pub(crate) bytes_received: Option<u64>,
    pub(crate) age_seconds: f64,
    /// Found open when the agent started.
    pub(crate) seeded: bool,
}

pub(crate) fn list(
    maps: &MapsHandle,
    ids: &CellIds,
    cgroups: &Resolver,
    q: &Query,
) -> Result<Vec<Connection>, String> {
    let cell_id = q.cell.as_ref().map(|c| ids.lookup(c));
    let keep = |s: &ConnState| {
        let verdict_ok =
            q.verdict.is_none_or(|v| (v == "violation") == (s.verdict == VERDICT_VIOLATION));
        let cell_ok = match cell_id {
            None => true,
            Some(None) => false,
            Some(Some(id)) => s.src_cell == id || s.dst_cell == id,
        };
        verdict_ok && cell_ok
    };
    let live = maps
        .live(q.limit, &keep)
        .map_err(|e| format!("reading the connection table failed: {e}"))?;
    let diag: HashMap<u64, sockdiag::TcpSocket> = sockdiag::dump(StateFlags::all())
        .map(|v| v.into_iter().map(|s| (s.cookie, s)).collect())
        .unwrap_or_default();
    let unowned: HashSet<u32> = live
        .iter()
        .filter(|c| c.owner.is_none())
        .filter_map(|c| diag.get(&c.cookie))
        .map(|s| s.inode)
        .filter(|i| *i != 0)
        .collect();
    let holders = procs::holders(&unowned);

    let mut out: Vec<Connection> = live
        .into_iter()
        .map(|c| {
            let s = &c.state;
            let egress = s.direction == DIR_EGRESS;
            let local =
                End { cell: String::new(), addr: addr(s.family, s.local_addr), port: s.local_port };
            let remote = End {
                cell: String::new(),
                addr: addr(s.family, s.remote_addr),
                port: s.remote_port,
            };
            let (mut src, mut dst) = if egress { (local, remote) } else { (remote, local) };
            src.cell = ids.name(s.src_cell).to_owned();
            dst.cell = ids.name(s.dst_cell).to_owned();
            let d = diag.get(&c.cookie);
            let (mut pid, mut name, cgroup) = match c.owner {
                Some(o) => (Some(o.pid), comm(&o.comm), Some(o.cgroup_id)),
                None => (None, None, None),
            };
            if pid.is_none()
                && let Some((p, n)) = d.and_then(|d| holders.get(&d.inode))
            {
                pid = Some(*p);
                name = Some(n.clone());
            }
            let w = cgroups.workload(cgroup.unwrap_or(0));
            Connection {
                cookie: c.cookie,
                direction: direction_label(s.direction),
                verdict: verdict_label(s.verdict),
                src,
                dst,
                pid,
                comm: name,
                cgroup_id: cgroup.filter(|c| *c != 0),
                container_id: w.container_id,
                pod_uid: w.pod_uid,
                srtt_us: d.and_then(|d| d.srtt_us),
                bytes_sent: d.and_then(|d| d.bytes_acked).map(|b| b.saturating_sub(s.base_acked)),
                bytes_received: d
                    .and_then(|d| d.bytes_received)
                    .map(|b| b.saturating_sub(s.base_received)),
                age_seconds: clock::age_seconds(s.start_ns),
                seeded: s.flags & CONN_SEEDED != 0,
            }
        })
        .collect();
    out.sort_by(|a, b| b.age_seconds.total_cmp(&a.age_seconds));
    Ok(out)
}
