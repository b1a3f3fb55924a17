//! The life of a TCP connection, from `sock_ops` on the cgroup v2 root: connect (client
//! SYN), established (either side), and the move to CLOSE. Everything is keyed by socket
//! cookie, and the connection's cells and verdict are fixed when it is first seen, so a
//! config reload never relabels a live connection.
#![expect(unsafe_code, reason = "a connection entry is updated in place through its map pointer")]
use agent_common::{
    AF_INET6, CONN_ESTABLISHED, CONN_FIN_RCVD, CONN_FIN_SENT, CONN_RST_SEEN, CTR_CONN_FORGOTTEN,
    CTR_CONN_TABLE_FULL, CTR_CONN_TRACKED, ConnState, DIR_EGRESS, DIR_INGRESS, FAIL_OTHER,
    FAIL_REFUSED, FAIL_RESET, FAIL_TIMEOUT, VERDICT_VIOLATION,
};
use aya_ebpf::{
    bindings::{
        BPF_NOEXIST, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB,
        BPF_TCP_CLOSE, BPF_TCP_CLOSE_WAIT, BPF_TCP_CLOSING, BPF_TCP_FIN_WAIT1, BPF_TCP_FIN_WAIT2,
        BPF_TCP_LAST_ACK,
    },
    helpers::bpf_ktime_get_ns,
    macros::sock_ops,
    programs::SockOpsContext,
};

use aya_log_ebpf::warn;

use crate::{
    cells::View,
    ctx::Ops,
    events,
    maps::{CONNS, OWNERS},
    netns,
    stats::{add, count, observe, slot},
};

#[sock_ops]
fn cellwatch_sockops(ctx: SockOpsContext) -> u32 {
    try_sockops(&Ops::new(&ctx));
    // sock_ops programs return 1 for "done"; cellwatch never changes the socket.
    1
}

#[inline(always)]
fn try_sockops(ops: &Ops<'_>) {
    match ops.op() {
        BPF_SOCK_OPS_TCP_CONNECT_CB => on_connect(ops),
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => on_active_established(ops),
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => on_passive_established(ops),
        BPF_SOCK_OPS_STATE_CB => on_state(ops, ops.arg(0), ops.arg(1)),
        _ => {}
    }
}

/// Both ends of the socket as the kernel sees them, plus whether it is IPv6.
struct Ends {
    v6: bool,
    local: [u8; 16],
    remote: [u8; 16],
}

#[inline(always)]
fn ends(ops: &Ops<'_>) -> Ends {
    let v6 = ops.family() == AF_INET6;
    Ends { v6, local: ops.local_addr(v6), remote: ops.remote_addr(v6) }
}

/// Client side: the SYN is about to leave. Decide cells and verdict, remember the start,
/// and note the namespace's source address for enforce mode.
#[inline(always)]
fn on_connect(ops: &Ops<'_>) {
    let e = ends(ops);
    let view = View::current();
    netns::learn(&view, ops.netns_cookie(), &e.local, e.v6);
    let (src, dst) = (view.cell_of(&e.local, e.v6), view.cell_of(&e.remote, e.v6));
    let port = ops.remote_port();
    let Some(v) = view.verdict(src, dst, port) else { return };
    let conn = new_conn(ops, &e, src, dst, DIR_EGRESS, v, 0);
    if !track(ops, &conn) {
        return;
    }
    if v == VERDICT_VIOLATION {
        let key = conn.pair_key();
        if let Some(s) = slot(&key) {
            // SAFETY: `s` points to this CPU's value of a live map entry.
            add(unsafe { &raw mut (*s).violations }, 1);
        }
        events::violation(&conn, &key, ops.cookie());
    }
}

/// Client side: the handshake completed. Count it opened and its connect latency.
#[inline(always)]
fn on_active_established(ops: &Ops<'_>) {
    let cookie = ops.cookie();
    let Some(conn) = CONNS.get_ptr_mut(cookie) else { return };
    let now = now_ns();
    // SAFETY: `conn` points to a live entry of CONNS; only this socket's callbacks
    // touch it, and the kernel runs them under the socket lock.
    let key = unsafe {
        (*conn).established_ns = now;
        (*conn).flags |= CONN_ESTABLISHED;
        (*conn).base_acked = ops.bytes_acked();
        (*conn).base_received = ops.bytes_received();
        (*conn).pair_key()
    };
    // SAFETY: as above.
    let latency_ns = now.saturating_sub(unsafe { (*conn).start_ns });
    if let Some(s) = slot(&key) {
        // SAFETY: `s` points to this CPU's value of a live map entry.
        unsafe {
            add(&raw mut (*s).opened, 1);
            add(&raw mut (*s).latency_sum_ns, latency_ns);
            observe(&raw mut (*s).latency_hist, latency_ns / 1000);
        }
    }
}

/// Server side: a new connection was accepted by the kernel.
#[inline(always)]
fn on_passive_established(ops: &Ops<'_>) {
    let e = ends(ops);
    let view = View::current();
    netns::learn(&view, ops.netns_cookie(), &e.local, e.v6);
    let (src, dst) = (view.cell_of(&e.remote, e.v6), view.cell_of(&e.local, e.v6));
    let port = ops.local_port();
    let Some(v) = view.verdict(src, dst, port) else { return };
    let conn = new_conn(ops, &e, src, dst, DIR_INGRESS, v, CONN_ESTABLISHED);
    if !track(ops, &conn) {
        return;
    }
    let key = conn.pair_key();
    if let Some(s) = slot(&key) {
        // SAFETY: `s` points to this CPU's value of a live map entry.
        unsafe {
            add(&raw mut (*s).opened, 1);
            if v == VERDICT_VIOLATION {
                add(&raw mut (*s).violations, 1);
            }
        }
    }
    if v == VERDICT_VIOLATION {
        events::violation(&conn, &key, ops.cookie());
    }
}

/// A state change. The FIN each way takes a sequence number that `bytes_acked` and
/// `bytes_received` count; noting who sent one lets the close count payload only.
#[inline(always)]
fn on_state(ops: &Ops<'_>, old: u32, new: u32) {
    let mark = match new {
        BPF_TCP_FIN_WAIT1 | BPF_TCP_LAST_ACK => CONN_FIN_SENT,
        BPF_TCP_CLOSE_WAIT | BPF_TCP_CLOSING => CONN_FIN_RCVD,
        BPF_TCP_CLOSE => return on_close(ops, old),
        _ => return,
    };
    if let Some(conn) = CONNS.get_ptr_mut(ops.cookie()) {
        // SAFETY: `conn` points to a live entry of CONNS.
        unsafe { (*conn).flags |= mark };
    }
}

/// The socket reached CLOSE: count it closed (with its bytes, RTT and retransmits), or
/// failed if it never got established. Then forget it.
#[inline(always)]
fn on_close(ops: &Ops<'_>, old: u32) {
    let cookie = ops.cookie();
    let Some(conn) = CONNS.get_ptr(cookie) else { return };
    // SAFETY: `conn` points to a live entry; it is copied out before the entry is removed.
    let mut conn = unsafe { *conn };
    // Leaving FIN_WAIT2 for CLOSE means the peer's FIN came (tcp_time_wait), unless a
    // RST ended it; the rare FIN_WAIT2 timeout is indistinguishable and counted alike.
    if old == BPF_TCP_FIN_WAIT2 && conn.flags & CONN_RST_SEEN == 0 {
        conn.flags |= CONN_FIN_RCVD;
    }
    if CONNS.remove(cookie).is_ok() {
        let _ = count(CTR_CONN_FORGOTTEN);
    }
    let _ = OWNERS.remove(cookie);
    let Some(s) = slot(&conn.pair_key()) else { return };
    let rst = conn.flags & CONN_RST_SEEN != 0;
    if conn.flags & CONN_ESTABLISHED != 0 {
        let srtt = u64::from(ops.srtt_us());
        // SAFETY: `s` points to this CPU's value of a live map entry.
        unsafe {
            add(&raw mut (*s).closed, 1);
            add(&raw mut (*s).bytes_sent, payload_sent(ops, &conn));
            add(&raw mut (*s).bytes_received, payload_received(ops, &conn));
            add(&raw mut (*s).retransmits, u64::from(ops.total_retrans()));
            add(&raw mut (*s).rtt_sum_us, srtt);
            observe(&raw mut (*s).rtt_hist, srtt);
            if rst {
                add(&raw mut (*s).failed[FAIL_RESET], 1);
            }
        }
    } else if conn.direction == DIR_EGRESS {
        let reason = if rst {
            FAIL_REFUSED
        } else if ops.total_retrans() > 0 {
            // The SYN was retransmitted and no RST came back: the kernel gave up.
            FAIL_TIMEOUT
        } else {
            FAIL_OTHER
        };
        // SAFETY: `s` points to this CPU's value of a live map entry.
        unsafe { add(&raw mut (*s).failed[reason], 1) };
    }
}

/// Payload bytes the peer acknowledged: acked bytes past the handshake, less our FIN
/// once it was acknowledged (everything sent acked: snd_una == snd_nxt).
#[inline(always)]
fn payload_sent(ops: &Ops<'_>, c: &ConnState) -> u64 {
    let (una, nxt) = ops.snd_una_nxt();
    let fin = u64::from(c.flags & CONN_FIN_SENT != 0 && una == nxt);
    ops.bytes_acked().saturating_sub(c.base_acked + fin)
}

/// Payload bytes received: received bytes past the handshake, less the peer's FIN.
#[inline(always)]
fn payload_received(ops: &Ops<'_>, c: &ConnState) -> u64 {
    let fin = u64::from(c.flags & CONN_FIN_RCVD != 0);
    ops.bytes_received().saturating_sub(c.base_received + fin)
}

#[inline(always)]
fn new_conn(
    ops: &Ops<'_>,
    e: &Ends,
    src: u32,
    dst: u32,
    direction: u8,
    verdict: u8,
    flags: u8,
) -> ConnState {
    let now = now_ns();
    ConnState {
        start_ns: now,
        established_ns: if flags & CONN_ESTABLISHED != 0 { now } else { 0 },
        src_cell: src,
        dst_cell: dst,
        direction,
        verdict,
        flags,
        _pad0: 0,
        family: ops.family(),
        _pad1: 0,
        local_addr: e.local,
        remote_addr: e.remote,
        local_port: ops.local_port(),
        remote_port: ops.remote_port(),
        // Passive sockets are created established: their handshake share is read now.
        base_acked: if flags & CONN_ESTABLISHED != 0 { ops.bytes_acked() } else { 0 },
        base_received: if flags & CONN_ESTABLISHED != 0 { ops.bytes_received() } else { 0 },
        _pad2: 0,
    }
}

/// Stores the connection and asks for its state changes. False (and an error counted)
/// when the connection table is full: the connection is then not counted at all, so
/// opened and closed stay consistent.
#[inline(always)]
fn track(ops: &Ops<'_>, conn: &ConnState) -> bool {
    if CONNS.insert(ops.cookie(), conn, u64::from(BPF_NOEXIST)).is_err() {
        // Log on the 1st, 2nd, 4th, 8th... drop per CPU: overload cannot flood the log;
        // the exact count is cellwatch_events_lost_total{source="conn_table_full"}.
        let before = count(CTR_CONN_TABLE_FULL);
        if before.is_power_of_two() || before == 0 {
            warn!(
                ops.ctx(),
                "connection table full: {} connections not tracked on this CPU",
                before + 1
            );
        }
        return false;
    }
    if !ops.set_cb_flags(BPF_SOCK_OPS_STATE_CB_FLAG) {
        let _ = CONNS.remove(ops.cookie());
        return false;
    }
    let _ = count(CTR_CONN_TRACKED);
    true
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    unsafe { bpf_ktime_get_ns() }
}
