//! The cgroup `connect4`/`connect6` hooks. They run in the connecting process on every
//! TCP `connect()`, before `sock_ops` sees the same socket's SYN, and do two things:
//! - make the socket's storage with who connects (pid, comm, cgroup) and the server's
//!   cell, for `sock_ops` to complete;
//! - in enforce mode, refuse a cross-cell connect: the caller gets EPERM. The decision is
//!   the same verdict that audit mode reports (`cells.rs`), so one truth holds for both.
//!   A connect into a cell drained with `drain: refuse` is refused too (`drain.rs`).
//!
//! Fail open: with no enforce setting, no cell flags, or a source that cannot be resolved,
//! the connect goes on. The last case is counted (`CTR_ENFORCE_UNRESOLVED`).
//!
//! Why not `fentry/tcp_connect` for the owner: kernels in lockdown (integrity) with a
//! BPF LSM, such as this project's CI machines, refuse those tracing programs; cgroup
//! hooks are not tracing programs.
#![expect(unsafe_code, reason = "the statistics slot is updated in place; raw helpers")]

use agent_common::{
    AF_INET, AF_INET6, CELL_IGNORED, CONN_USER_BOUND, CTR_ENFORCE_UNRESOLVED, Direction, EventKind,
    PairKey, Verdict,
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, generated::bpf_get_current_cgroup_id,
    },
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};

use crate::{
    cells::View,
    conn,
    ctx::Connect,
    drain,
    events::{self, Flow},
    netns,
    stats::{Slot, add, count},
};

/// `connect()` goes on.
const ALLOW: i32 = 1;
/// `connect()` fails with EPERM.
const DENY: i32 = 0;
const SOCK_STREAM: u32 = 1;

#[cgroup_sock_addr(connect4)]
fn cellwatch_connect4(ctx: SockAddrContext) -> i32 {
    try_connect(&Connect::new(&ctx), false)
}

#[cgroup_sock_addr(connect6)]
fn cellwatch_connect6(ctx: SockAddrContext) -> i32 {
    try_connect(&Connect::new(&ctx), true)
}

/// Who connects, as the kernel knows the current task.
struct Owner {
    pid: u32,
    cgroup_id: u64,
    comm: [u8; 16],
}

#[inline(always)]
fn owner() -> Owner {
    Owner {
        // The thread-group id (the process id users know) is the upper half.
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        // SAFETY: no preconditions.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
}

#[inline(always)]
fn try_connect(c: &Connect<'_>, v6: bool) -> i32 {
    if c.sock_type() != SOCK_STREAM {
        return ALLOW;
    }
    let view = View::current();
    let dst = c.dst_addr(v6);
    let (dst_cell, service) = view.server_of(&dst, v6, c.dst_port());
    // Loopback and the like: not watched, nothing to record.
    if dst_cell == CELL_IGNORED {
        return ALLOW;
    }
    let who = owner();
    if view.enforcing()
        && (!view.is_global(dst_cell) || view.refuses_drained(dst_cell))
        && refuse(c, &view, &dst, dst_cell, v6, &who)
    {
        return DENY;
    }
    let bound = if c.bound_src(v6).is_some() { CONN_USER_BOUND } else { 0 };
    let Some(c) = c.sk().and_then(|sk| conn::get_or_make(sk, None)) else { return ALLOW };
    // SAFETY: `c` points to this socket's storage, new or left by an earlier connection
    // of the same socket (connect after a disconnect): it starts over, flags first, so a
    // sweep skips it until `sock_ops` has made it a tracked connection again.
    unsafe {
        core::ptr::write_volatile(&raw mut (*c).flags, bound);
        (*c).closed = 0;
        (*c).cgroup_id = who.cgroup_id;
        (*c).pid = who.pid;
        (*c).comm = who.comm;
        (*c).dst_cell = dst_cell;
        (*c).service = service;
        (*c).generation = view.generation();
    }
    ALLOW
}

/// Enforce mode: whether this connect crosses a boundary it may not (then counted, and
/// reported as denied), or goes into a cell drained with `drain: refuse` (counted as
/// such, `drain.rs`). Connects whose source is not known yet are let through, counted.
#[inline(always)]
fn refuse(
    c: &Connect<'_>,
    view: &View,
    dst: &[u8; 16],
    dst_cell: u32,
    v6: bool,
    who: &Owner,
) -> bool {
    let (src, src_v6) = match c.bound_src(v6) {
        Some(a) => (a, v6),
        None => match netns::source_for(c.netns_cookie(), dst, v6) {
            Some(known) => known,
            None => {
                count(CTR_ENFORCE_UNRESOLVED);
                return false;
            }
        },
    };
    let src_cell = view.cell_of(&src, src_v6);
    let port = c.dst_port();
    // Not tracked (an ignored range): never refused.
    let Some(verdict) = view.verdict(src_cell, dst_cell, port) else { return false };
    let violation = verdict == Verdict::VIOLATION;
    let drained = drain::refuses(view, src_cell, dst_cell);
    if !drained && !(violation && view.enforced(src_cell)) {
        return false;
    }
    // One refusal, counted once whichever rule refused it: a violation (an attempted
    // leak is still one), a denied, and a drain's denied when the drain refused it.
    let key = PairKey::new(src_cell, dst_cell, Direction::EGRESS, verdict);
    let Some(slot) = Slot::of(&key) else { return true };
    let s = slot.stats();
    // SAFETY: `s` is this CPU's value of a live pair entry.
    unsafe {
        if violation {
            add(&raw mut (*s).violations, 1);
        }
        add(&raw mut (*s).denied, 1);
        if drained {
            add(&raw mut (*s).drain_denied, 1);
        }
    }
    if !violation {
        return true;
    }
    let flow = Flow {
        family: if v6 { AF_INET6 } else { AF_INET },
        src_addr: src,
        src_port: 0,
        dst_addr: *dst,
        dst_port: port,
        src_cell,
        dst_cell,
        direction: Direction::EGRESS,
        cookie: c.cookie(),
        pid: who.pid,
        cgroup_id: who.cgroup_id,
        comm: who.comm,
    };
    events::send(&flow, &slot, EventKind::DENIED);
    true
}
