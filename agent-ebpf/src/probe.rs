//! The smallest program of two optional kinds, which the agent loads and runs only to
//! tell whether this kernel takes that kind where the real program is not needed (the
//! first rung of its ladder works): the kernel verifies these in no time, the real ones
//! in seconds on a slow machine.
#![expect(unsafe_code, reason = "programs are placed by their section and symbol name")]

use crate::ctx::TcpIterCtx;

/// `tcp_iter` when the socket-storage iterator serves the sweep.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
fn cellwatch_probe_tcp(_ctx: *mut TcpIterCtx) -> i32 {
    0
}

/// `prog_test_run` when the map-element iterator serves the settling.
#[unsafe(no_mangle)]
#[unsafe(link_section = "raw_tp")]
fn cellwatch_probe_raw_tp(_ctx: *const u64) -> i32 {
    0
}
