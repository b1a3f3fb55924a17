//! The life of a TCP connection, from `sock_ops` on the cgroup v2 root: connect (client
//! SYN), established (either side), and the move to CLOSE. State lives in the socket's
//! own storage (`conn.rs`), and the connection's cells and verdict are fixed when it is
//! first seen, so a config reload never relabels a live connection. While it is open the
//! sweep (`sweep.rs`) moves its bytes into the counters; its close claims the rest.
#![expect(unsafe_code, reason = "a connection's storage is written in place through its pointer")]

use agent_common::{
    AF_INET6, CELL_SERVICE_ADDR, CONN_ESTABLISHED, CONN_SEEDED, CONN_SERVICE_ADDR, CONN_TRACKED,
    CTR_CONN_TABLE_FULL, Claimed, Conn, Direction, ECONNREFUSED, ECONNRESET, EPIPE, ETIMEDOUT,
    Failure, PROFILE_SLOTS, PROFILE_STATE_CLOSE, Progress, Verdict, observes_rtt,
};
use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB,
        BPF_TCP_CLOSE,
    },
    helpers::bpf_ktime_get_ns,
    macros::sock_ops,
    programs::SockOpsContext,
};
use aya_log_ebpf::warn;

use crate::{
    cells::View,
    close::{Final, account},
    conn,
    ctx::Ops,
    drain, events,
    kread::Sock,
    netns, service_addr,
    stats::{Slot, add, count},
};

/// 1 when the agent loaded the programs with `--profile-kernel`. A read-only global: the
/// verifier knows its value and drops the profiling code when it is 0, so it costs
/// nothing then.
#[unsafe(no_mangle)]
static PROFILE_KERNEL: u32 = 0;

#[sock_ops]
fn cellwatch_sockops(ctx: SockOpsContext) -> u32 {
    let ops = Ops::new(&ctx);
    // SAFETY: a read of a constant the loader may have patched.
    if unsafe { core::ptr::read_volatile(&raw const PROFILE_KERNEL) } == 1 {
        let start = now_ns();
        try_sockops(&ops);
        profile(&ops, now_ns().saturating_sub(start));
    } else {
        try_sockops(&ops);
    }
    // sock_ops programs return 1 for "done"; cellwatch never changes the socket.
    1
}

/// Counts one run of this op and its time.
#[inline(always)]
fn profile(ops: &Ops<'_>, ns: u64) {
    let op = ops.op();
    let slot = if op == BPF_SOCK_OPS_STATE_CB && ops.arg(1) == BPF_TCP_CLOSE {
        PROFILE_STATE_CLOSE
    } else {
        op
    };
    if slot < PROFILE_SLOTS
        && let Some(c) = crate::maps::PROFILE.get_ptr_mut(slot)
    {
        // SAFETY: `c` is this CPU's value of a live array entry.
        unsafe {
            add(&raw mut (*c).runs, 1);
            add(&raw mut (*c).ns, ns);
        }
    }
}

#[inline(always)]
fn try_sockops(ops: &Ops<'_>) {
    match ops.op() {
        BPF_SOCK_OPS_TCP_CONNECT_CB => on_connect(ops),
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => on_active_established(ops),
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => on_passive_established(ops),
        BPF_SOCK_OPS_STATE_CB if ops.arg(1) == BPF_TCP_CLOSE => on_close(ops),
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

/// Client side: the SYN is about to leave. `connect4`/`connect6` made the storage with
/// the owner and the server's cell; decide the client's cell and the verdict, and ask
/// for the state changes.
#[inline(always)]
fn on_connect(ops: &Ops<'_>) {
    let Some(sk) = ops.sk() else { return };
    let Some(c) = conn::get(sk) else { return };
    let e = ends(ops);
    let view = View::current();
    // SAFETY: `c` points to this socket's storage; only its own callbacks, run under
    // the socket lock, write it.
    let (generation, known) = unsafe { ((*c).generation, ((*c).dst_cell, (*c).service)) };
    let port = ops.remote_port();
    // The server's cell and service as connect4 found them, unless a reload came in
    // between.
    let (dst, service) =
        if generation == view.generation() { known } else { view.server_of(&e.remote, e.v6, port) };
    let src = view.cell_of(&e.local, e.v6);
    // Only if the kernel chose this source (`learn` reads that in `c`, so this frame
    // keeps nothing more: `sock_ops` is at the 512-byte stack on 6.1).
    // SAFETY: `c` as above.
    unsafe { netns::learn(ops.netns_cookie(), &e.local, e.v6, src, c) };
    let Some(verdict) = view.verdict(src, dst, port) else {
        conn::forget(sk);
        return;
    };
    if !ops.set_cb_flags(BPF_SOCK_OPS_STATE_CB_FLAG) {
        conn::forget(sk);
        return;
    }
    if !conn::admit() {
        table_full(ops);
        conn::forget(sk);
        return;
    }
    let start = Start {
        start_ns: now_ns(),
        established_ns: 0,
        src,
        dst,
        service,
        direction: Direction::EGRESS,
        verdict,
        local_port: ops.local_port(),
        remote_port: port,
    };
    // SAFETY: as above.
    let key = unsafe {
        fill(c, ops, &e, &start, Progress::default);
        (*c).closed = 0;
        (*c).counted = 0;
        // To a service address: judged by its backend, once the agent has found it.
        (*c).flags =
            if dst == CELL_SERVICE_ADDR { CONN_TRACKED | CONN_SERVICE_ADDR } else { CONN_TRACKED };
        (*c).claimed = Claimed::default();
        (*c).pair_key()
    };
    if verdict == Verdict::VIOLATION
        && let Some(slot) = Slot::of(&key)
    {
        // SAFETY: the slot's pointer is this CPU's value of a live pair entry.
        unsafe { add(&raw mut (*slot.stats()).violations, 1) };
        // SAFETY: `c` as above.
        events::violation(unsafe { &*c }, &slot);
    }
}

/// What a connection starts being tracked with, besides what its socket says.
struct Start {
    start_ns: u64,
    established_ns: u64,
    src: u32,
    dst: u32,
    service: u16,
    direction: Direction,
    verdict: Verdict,
    local_port: u16,
    remote_port: u16,
}

/// Fills the storage `c` of a connection to be tracked, in place (a `Conn` on the stack
/// would not fit beside the rest): `start`, the socket's cookie, family and ends `e`,
/// and `base()`, what it moved before it was counted. The flags are the caller's.
///
/// # Safety
/// `c` must point to this socket's storage, written only under the socket lock.
#[inline(always)]
unsafe fn fill(
    c: *mut Conn,
    ops: &Ops<'_>,
    e: &Ends,
    start: &Start,
    base: impl FnOnce() -> Progress,
) {
    // SAFETY: per the contract.
    unsafe {
        (*c).start_ns = start.start_ns;
        (*c).established_ns = start.established_ns;
        (*c).cookie = ops.cookie();
        (*c).src_cell = start.src;
        (*c).dst_cell = start.dst;
        (*c).service = start.service;
        (*c).direction = start.direction.0;
        (*c).verdict = start.verdict.0;
        (*c).family = ops.family();
        (*c).local_port = start.local_port;
        (*c).remote_port = start.remote_port;
        (*c).local_addr = e.local;
        (*c).remote_addr = e.remote;
        (*c).base = base();
    }
}

/// Client side: the handshake completed. Count it opened, with its connect latency, and
/// note what the handshake moved so only payload counts.
#[inline(always)]
fn on_active_established(ops: &Ops<'_>) {
    let Some(c) = ops.sk().and_then(conn::get) else { return };
    let now = now_ns();
    // SAFETY: `c` points to this socket's storage, written only under its lock.
    let (key, start) = unsafe {
        if (*c).flags & CONN_TRACKED == 0 {
            return;
        }
        (*c).established_ns = now;
        (*c).flags |= CONN_ESTABLISHED;
        (*c).base = handshake(ops);
        if (*c).flags & CONN_SERVICE_ADDR != 0 {
            // Counted under its backend once the agent has found it.
            crate::events::resolve_request(&*c);
            return;
        }
        ((*c).pair_key(), (*c).start_ns)
    };
    if let Some(slot) = Slot::of(&key) {
        slot.opened(now.saturating_sub(start));
        drain::opened(&View::current(), &slot, key.dst_cell);
    }
}

/// What the handshake moved: the SYN each way (and data a TCP Fast Open SYN carried).
#[inline(always)]
fn handshake(ops: &Ops<'_>) -> Progress {
    let acked = ops.bytes_acked();
    // A SYN carries no payload, so nothing was sent once, unless the SYN carried data
    // (Fast Open): then the socket says how much.
    let sent_once = if acked > 1 {
        ops.sk().and_then(|sk| Sock::of(sk.cast_const())).and_then(|s| s.sent_once()).unwrap_or(0)
    } else {
        0
    };
    Progress { acked, sent_once, received: ops.bytes_received(), retrans: 0 }
}

/// Server side: a new connection was accepted by the kernel.
#[inline(always)]
fn on_passive_established(ops: &Ops<'_>) {
    let e = ends(ops);
    let view = View::current();
    let port = ops.local_port();
    let src = view.cell_of(&e.remote, e.v6);
    let (dst, service) = view.server_of(&e.local, e.v6, port);
    // SAFETY: no connection storage to read (null).
    unsafe { netns::learn(ops.netns_cookie(), &e.local, e.v6, dst, core::ptr::null()) };
    let Some(verdict) = view.verdict(src, dst, port) else { return };
    let Some(sk) = ops.sk() else { return };
    if !conn::admit() {
        table_full(ops);
        return;
    }
    if !ops.set_cb_flags(BPF_SOCK_OPS_STATE_CB_FLAG) {
        conn::release();
        return;
    }
    let Some(c) = conn::get_or_make(sk, None) else {
        conn::release();
        return;
    };
    let now = now_ns();
    let start = Start {
        start_ns: now,
        established_ns: now,
        src,
        dst,
        service,
        direction: Direction::INGRESS,
        verdict,
        local_port: port,
        remote_port: ops.remote_port(),
    };
    // SAFETY: `c` points to this socket's new storage; the flags go last, so a sweep
    // never takes it for a tracked connection half written.
    let key = unsafe {
        fill(c, ops, &e, &start, || handshake(ops));
        (*c).generation = view.generation();
        core::ptr::write_volatile(&raw mut (*c).flags, CONN_TRACKED | CONN_ESTABLISHED);
        (*c).pair_key()
    };
    let Some(slot) = Slot::of(&key) else { return };
    let s = slot.stats();
    // SAFETY: `s` is this CPU's value of a live pair entry.
    unsafe {
        add(&raw mut (*s).opened, 1);
        if verdict == Verdict::VIOLATION {
            add(&raw mut (*s).violations, 1);
        }
    }
    drain::opened(&view, &slot, dst);
    if verdict == Verdict::VIOLATION {
        // SAFETY: `c` points to this socket's storage.
        events::violation(unsafe { &*c }, &slot);
    }
}

/// The socket reached CLOSE: claim the rest of what it moved, count it closed (or
/// failed, if it never got established) and free its place. A connection to a service
/// address whose backend is not known yet is kept for the settling instead.
#[inline(always)]
fn on_close(ops: &Ops<'_>) {
    let Some(sk) = ops.sk() else { return };
    let Some(c) = conn::get(sk) else { return };
    // SAFETY: `c` points to this socket's storage; `closed` is set, as one word, before
    // the last claim, so a sweep that starts after it claims nothing.
    let (flags, mut key, direction, cookie) = unsafe {
        let flags = (*c).flags;
        // A seeded connection's end is its destroy's to count (`destroy.rs`), even when an
        // earlier agent's programs asked for its state changes.
        if flags & CONN_TRACKED == 0 || flags & CONN_SEEDED != 0 || (*c).closed != 0 {
            return;
        }
        core::ptr::write_volatile(&raw mut (*c).closed, 1);
        (flags, (*c).pair_key(), (*c).direction(), (*c).cookie)
    };
    conn::release();
    let established = flags & CONN_ESTABLISHED != 0;
    let end = end_of(ops, sk, established, direction);
    if flags & CONN_SERVICE_ADDR != 0 {
        let Some(r) = service_addr::resolution(cookie) else {
            // SAFETY: `c` as above.
            unsafe { service_addr::defer(c, &end) };
            return;
        };
        // SAFETY: `c` as above.
        key = unsafe { service_addr::apply(c, &r) };
    }
    let Some(slot) = Slot::of(&key) else { return };
    // RTT once per connection at its close, by the side that observes it.
    let rtt_sample = observes_rtt(direction, key.src_cell);
    // SAFETY: `c` as above.
    unsafe {
        if flags & CONN_SERVICE_ADDR != 0 {
            service_addr::count_open(c, &slot);
            service_addr::forget(cookie);
        }
        account(&slot, &raw mut (*c).claimed, &(*c).base, &end, established, rtt_sample);
    }
}

/// A connection's figures at its close. The context has most counters, the socket itself
/// the rest; the socket is locked, so they belong together.
#[inline(always)]
fn end_of(
    ops: &Ops<'_>,
    sk: *mut core::ffi::c_void,
    established: bool,
    direction: Direction,
) -> Final {
    let sock = Sock::of(sk.cast_const());
    let err = sock.as_ref().map_or(0, |s| s.err());
    if established {
        let sent_once = sock.as_ref().and_then(|s| s.sent_once());
        let fin_received = sock.as_ref().and_then(|s| s.fin_received());
        let last = match (sent_once, fin_received) {
            (Some(sent_once), Some(fin)) => Some((
                Progress {
                    acked: ops.bytes_acked(),
                    sent_once,
                    received: ops.bytes_received(),
                    retrans: u64::from(ops.total_retrans()),
                },
                fin,
            )),
            _ => None,
        };
        // A RST ended it (the kernel says EPIPE once our side had seen the FIN).
        let failure =
            if err == ECONNRESET || err == EPIPE { Failure::RESET } else { Failure::NONE };
        Final { last, failure, srtt_us: ops.srtt_us() }
    } else if direction == Direction::EGRESS {
        let failure = match err {
            ECONNREFUSED => Failure::REFUSED,
            ETIMEDOUT => Failure::TIMEOUT,
            // The SYN was retransmitted and the caller gave up first.
            0 if ops.total_retrans() > 0 => Failure::TIMEOUT,
            _ => Failure::OTHER,
        };
        Final { last: None, failure, srtt_us: 0 }
    } else {
        Final { last: None, failure: Failure::NONE, srtt_us: 0 }
    }
}

/// A connection not tracked because `--conn-capacity` connections are. Logged on the
/// 1st, 2nd, 4th, 8th... on this CPU, so overload cannot flood the log; the exact count
/// is `cellwatch_events_lost_total{source="conn_table_full"}`.
#[inline(always)]
fn table_full(ops: &Ops<'_>) {
    let before = count_before(CTR_CONN_TABLE_FULL);
    if before == 0 || before.is_power_of_two() {
        warn!(
            ops.ctx(),
            "connection table full: {} connections not tracked on this CPU",
            before + 1
        );
    }
}

/// Counts one event of `index` and returns this CPU's count before it.
#[inline(always)]
fn count_before(index: u32) -> u64 {
    let before = crate::maps::COUNTERS.get(index).copied().unwrap_or(0);
    count(index);
    before
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    unsafe { bpf_ktime_get_ns() }
}
