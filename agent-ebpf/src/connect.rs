//! The cgroup `connect4`/`connect6` hooks. They run in the connecting process on every
//! TCP `connect()`, before `sock_ops` sees the same socket's SYN, and do two things:
//! - record who connects (pid, comm, cgroup) under the socket cookie;
//! - in enforce mode, refuse a cross-cell connect: the caller gets EPERM. The decision is
//!   the same verdict that audit mode reports (`cells.rs`), so one truth holds for both.
//!
//! Fail open: with no enforce setting, no cell flags, or a source that cannot be resolved,
//! the connect goes on. The last case is counted (`CTR_ENFORCE_UNRESOLVED`).
//!
//! Why not `fentry/tcp_connect` for the owner: kernels in lockdown (integrity) with a
//! BPF LSM, such as this project's CI machines, refuse tracing programs outright; cgroup
//! hooks are not tracing programs.
#![expect(
    unsafe_code,
    reason = "the statistics slot is updated through its map pointer, helpers called raw"
)]
use agent_common::{
    AF_INET, AF_INET6, CELL_IGNORED, CTR_ENFORCE_UNRESOLVED, DIR_EGRESS, EVENT_DENIED, Owner,
    PairKey, VERDICT_VIOLATION,
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
    ctx::Connect,
    events::{self, Flow},
    maps::OWNERS,
    netns,
    stats::{add, count, slot},
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

#[inline(always)]
fn try_connect(c: &Connect<'_>, v6: bool) -> i32 {
    if c.sock_type() != SOCK_STREAM {
        return ALLOW;
    }
    let cookie = c.cookie();
    record_owner(cookie);
    let view = View::current();
    if !view.enforcing() {
        return ALLOW;
    }
    let dst = c.dst_addr(v6);
    let dst_cell = view.cell_of(&dst, v6);
    // Nothing to judge, so no need to know the source: loopback and the like, or a
    // global server, which every cell may call.
    if dst_cell == CELL_IGNORED || view.is_global(dst_cell) {
        return ALLOW;
    }
    let (src, src_v6) = match c.bound_src(v6) {
        Some(a) => (a, v6),
        None => match netns::source_for(c.netns_cookie(), &dst, v6) {
            Some(known) => known,
            None => {
                let _ = count(CTR_ENFORCE_UNRESOLVED);
                return ALLOW;
            }
        },
    };
    let src_cell = view.cell_of(&src, src_v6);
    if !view.enforced(src_cell) {
        return ALLOW;
    }
    let port = c.dst_port();
    if view.verdict(src_cell, dst_cell, port) != Some(VERDICT_VIOLATION) {
        return ALLOW;
    }
    let key = PairKey::new(src_cell, dst_cell, DIR_EGRESS, VERDICT_VIOLATION);
    if let Some(s) = slot(&key) {
        // SAFETY: `s` points to this CPU's value of a live map entry.
        unsafe {
            add(&raw mut (*s).violations, 1);
            add(&raw mut (*s).denied, 1);
        }
    }
    let flow = Flow {
        family: if v6 { AF_INET6 } else { AF_INET },
        src_addr: src,
        src_port: 0,
        dst_addr: dst,
        dst_port: port,
        src_cell,
        dst_cell,
        direction: DIR_EGRESS,
    };
    events::send(&flow, &key, cookie, EVENT_DENIED);
    DENY
}

#[inline(always)]
fn record_owner(cookie: u64) {
    let owner = Owner {
        // SAFETY: no preconditions.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        _pad: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    let _ = OWNERS.insert(cookie, owner, 0);
}
