//! The cgroup `connect4`/`connect6` hooks: who is connecting. They run in the
//! connecting process on every `connect()`, before `sock_ops` sees the same socket's
//! SYN, and record pid, comm and cgroup under the socket cookie. They never refuse a
//! connect (enforce mode will decide here, from the same verdict).
//!
//! Why not `fentry/tcp_connect`: kernels in lockdown (integrity) with a BPF LSM, such as
//! this project's CI machines, refuse tracing programs outright; cgroup hooks are not
//! tracing programs.
use agent_common::Owner;
use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid,
        generated::{bpf_get_current_cgroup_id, bpf_get_socket_cookie},
    },
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};

use crate::maps::OWNERS;

/// `connect()` goes on.
const ALLOW: i32 = 1;

#[cgroup_sock_addr(connect4)]
fn cellwatch_connect4(ctx: SockAddrContext) -> i32 {
    record_owner(&ctx);
    ALLOW
}

#[cgroup_sock_addr(connect6)]
fn cellwatch_connect6(ctx: SockAddrContext) -> i32 {
    record_owner(&ctx);
    ALLOW
}

#[inline(always)]
fn record_owner(ctx: &SockAddrContext) {
    // SAFETY: sock_addr contexts are valid arguments of bpf_get_socket_cookie.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let owner = Owner {
        // SAFETY: no preconditions.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        _pad: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    let _ = OWNERS.insert(cookie, owner, 0);
}
