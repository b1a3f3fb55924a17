//! Connections older than the agent: found with a `sock_diag` dump once the programs
//! are attached, judged by the same rules, and put in the kernel's table so they count
//! as active and are seen closing (by `tcp:tcp_destroy_sock`).
//!
//! Limits: only this network namespace's sockets are dumped, and a seeded connection's
//! bytes and RTT are not counted at its close (the tracepoint carries neither).
#![forbid(unsafe_code)]

use std::{collections::HashSet, net::SocketAddr};

use agent_common::{
    AF_INET, AF_INET6, CELL_EXTERNAL, CONN_ESTABLISHED, CONN_SEEDED, ConnState, DIR_EGRESS,
    DIR_INGRESS, PairKey, VERDICT_ALLOWED, VERDICT_VIOLATION,
};
use agent_core::{
    config::Config,
    events::raw_addr,
    ids::CellIds,
    policy::{self, Place, Verdict},
};
use netlink_packet_sock_diag::inet::StateFlags;
use tracing::{info, warn};

use crate::{
    host::{
        sockdiag::{self, TCP_LISTEN, TcpSocket},
        sys,
    },
    kernel::MapsHandle,
};

/// What seeding found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Seeded {
    pub(crate) added: usize,
    pub(crate) already_tracked: usize,
    pub(crate) closed_meanwhile: usize,
}

/// A seeded connection's pair key, to take it back if needed.
struct Planted {
    cookie: u64,
    key: PairKey,
}

pub(crate) fn seed(maps: &MapsHandle, cfg: &Config, ids: &mut CellIds) -> Seeded {
    let mut report = Seeded::default();
    let sockets = match sockdiag::dump(StateFlags::ESTABLISHED | StateFlags::LISTEN) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot list existing connections; only new ones are counted");
            return report;
        }
    };
    let listening: HashSet<u16> =
        sockets.iter().filter(|s| s.state == TCP_LISTEN).map(|s| s.local.port()).collect();
    let mut planted = Vec::new();
    for s in sockets.iter().filter(|s| s.state != TCP_LISTEN) {
        let Some(state) = judge(cfg, ids, s, &listening) else { continue };
        match maps.seed(s.cookie, &state) {
            Ok(true) => {
                report.added += 1;
                planted.push(Planted { cookie: s.cookie, key: state.pair_key() });
            }
            Ok(false) => report.already_tracked += 1,
            Err(e) => warn!(error = %e, "cannot add an existing connection"),
        }
    }
    // Take back what closed between the dump and its seeding: it would never be seen
    // closing. A socket in TIME_WAIT keeps its cookie but is past its destroy, so it
    // counts as closed here.
    let live = StateFlags::all() - StateFlags::TIME_WAIT - StateFlags::CLOSE;
    if let Ok(now) = sockdiag::dump(live) {
        let alive: HashSet<u64> = now.iter().map(|s| s.cookie).collect();
        for p in planted.iter().filter(|p| !alive.contains(&p.cookie)) {
            if maps.unseed(p.cookie, &p.key).unwrap_or(false) {
                report.closed_meanwhile += 1;
            }
        }
    }
    info!(
        added = report.added,
        already_tracked = report.already_tracked,
        closed_meanwhile = report.closed_meanwhile,
        "connections older than the agent counted"
    );
    report
}

/// The table entry of an existing socket, or `None` when it is not tracked. The side
/// whose local port is listening is the server.
fn judge(
    cfg: &Config,
    ids: &mut CellIds,
    s: &TcpSocket,
    listening: &HashSet<u16>,
) -> Option<ConnState> {
    let server_side = listening.contains(&s.local.port());
    let (client, server): (SocketAddr, SocketAddr) =
        if server_side { (s.remote, s.local) } else { (s.local, s.remote) };
    let verdict = policy::verdict(cfg, client.ip(), server.ip(), server.port())?;
    let id = |ids: &mut CellIds, p: Place<'_>| match p {
        Place::Cell(n) => ids.id(n).ok(),
        Place::External => Some(CELL_EXTERNAL),
        Place::Ignored => None,
    };
    let src_cell = id(ids, policy::place(cfg, client.ip()))?;
    let dst_cell = id(ids, policy::place(cfg, server.ip()))?;
    let now = sys::monotonic_ns();
    Some(ConnState {
        start_ns: now,
        established_ns: now,
        src_cell,
        dst_cell,
        direction: if server_side { DIR_INGRESS } else { DIR_EGRESS },
        verdict: if verdict == Verdict::Violation { VERDICT_VIOLATION } else { VERDICT_ALLOWED },
        flags: CONN_ESTABLISHED | CONN_SEEDED,
        _pad0: 0,
        family: if s.local.is_ipv6() { AF_INET6 } else { AF_INET },
        _pad1: 0,
        local_addr: raw_addr(s.local.ip()),
        remote_addr: raw_addr(s.remote.ip()),
        local_port: s.local.port(),
        remote_port: s.remote.port(),
        _pad2: 0,
        // Everything moved before the agent started is left out, however much it was.
        base_acked: s.bytes_acked.unwrap_or(0),
        base_received: s.bytes_received.unwrap_or(0),
    })
}
