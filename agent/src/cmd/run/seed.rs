//! Connections older than the agent: found with a `sock_diag` dump once the programs
//! are attached, judged by the same rules, and handed to the kernel, which puts each in
//! its socket's storage (the seeding iterator) so it counts as active, is swept live and
//! is seen closing (`tcp:tcp_destroy_sock`).
//!
//! Limit: only this network namespace's sockets are dumped.
#![forbid(unsafe_code)]

use std::{collections::HashSet, net::SocketAddr};

use agent_common::{
    AF_INET, AF_INET6, CELL_EXTERNAL, CELL_UNRESOLVED, Claimed, Conn, Direction, NO_SERVICE,
    Progress, Verdict,
};
use agent_core::{
    config::Config,
    conntrack::Tuple,
    events::raw_addr,
    ids::CellIds,
    policy::{self, Place},
};
use netlink_packet_sock_diag::inet::StateFlags;
use tracing::{info, warn};

use crate::{
    host::{
        conntrack::{Conntrack, Destination},
        sockdiag::{self, TCP_LISTEN, TcpSocket},
        sys,
    },
    kernel::Kernel,
};

/// Finds, judges and hands over the connections older than the agent.
pub(crate) fn seed(kernel: &mut Kernel, cfg: &Config, ids: &mut CellIds) {
    let sockets = match sockdiag::dump(StateFlags::ESTABLISHED | StateFlags::LISTEN) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot list existing connections; only new ones are counted");
            return;
        }
    };
    let listening: HashSet<u16> =
        sockets.iter().filter(|s| s.state == TCP_LISTEN).map(|s| s.local.port()).collect();
    let mut ct = (!cfg.service_cidrs.is_empty()).then(|| Conntrack::open().ok()).flatten();
    let plan: Vec<(u64, Conn)> = sockets
        .iter()
        .filter(|s| s.state != TCP_LISTEN)
        .filter_map(|s| judge(cfg, ids, s, &listening, &mut ct).map(|c| (s.cookie, c)))
        .collect();
    match kernel.seed(&plan) {
        Ok(done) => info!(
            added = done.seeded,
            already_tracked = done.already_tracked,
            closed_meanwhile = done.closed_meanwhile,
            not_tracked_no_room = done.no_room,
            "connections older than the agent counted"
        ),
        Err(e) => warn!(error = %e, "cannot count the connections older than the agent"),
    }
}

/// The connection an existing socket is, or `None` when it is not tracked. The side
/// whose local port is listening is the server.
fn judge(
    cfg: &Config,
    ids: &mut CellIds,
    s: &TcpSocket,
    listening: &HashSet<u16>,
    ct: &mut Option<Conntrack>,
) -> Option<Conn> {
    let server_side = listening.contains(&s.local.port());
    let (client, mut server): (SocketAddr, SocketAddr) =
        if server_side { (s.remote, s.local) } else { (s.local, s.remote) };
    // A client of a Service address: judged by the backend its DNAT chose.
    let mut unresolved = false;
    if !server_side && cfg.service_cidrs.iter().any(|n| n.contains(&server.ip().to_canonical())) {
        let t = Tuple {
            src: SocketAddr::new(client.ip().to_canonical(), client.port()),
            dst: SocketAddr::new(server.ip().to_canonical(), server.port()),
        };
        match ct.as_mut().map(|c| c.destination(&t)) {
            Some(Ok(Destination::Backend(b))) => server = b,
            _ => unresolved = true,
        }
    }
    let verdict = if unresolved {
        Verdict::ALLOWED
    } else {
        policy::verdict(cfg, client.ip(), server.ip(), server.port())?
    };
    let id = |ids: &mut CellIds, p: Place<'_>| match p {
        Place::Cell(n) => ids.id(n).ok(),
        Place::External => Some(CELL_EXTERNAL),
        Place::Ignored => None,
    };
    let src_cell = id(ids, policy::place(cfg, client.ip()))?;
    let dst_cell =
        if unresolved { CELL_UNRESOLVED } else { id(ids, policy::place(cfg, server.ip()))? };
    let now = sys::monotonic_ns();
    Some(Conn {
        start_ns: now,
        established_ns: now,
        cookie: s.cookie,
        cgroup_id: 0,
        pid: 0,
        src_cell,
        dst_cell,
        closed: 0,
        direction: if server_side { Direction::INGRESS.0 } else { Direction::EGRESS.0 },
        verdict: verdict.0,
        // The kernel sets the flags and what the connection moved so far.
        flags: 0,
        generation: 0,
        family: if s.local.is_ipv6() { AF_INET6 } else { AF_INET },
        local_port: s.local.port(),
        remote_port: s.remote.port(),
        service: policy::service(cfg, server.ip(), server.port())
            .and_then(|name| ids.service_lookup(name))
            .unwrap_or(NO_SERVICE),
        _pad2: 0,
        counted: 0,
        local_addr: raw_addr(s.local.ip()),
        remote_addr: raw_addr(s.remote.ip()),
        comm: [0; 16],
        base: Progress::default(),
        claimed: Claimed::default(),
    })
}
