//! `tcp:tcp_receive_reset`: marks the connection so its close is counted as refused
//! (RST in answer to a SYN) or reset (RST after established). The tracepoint carries the
//! socket cookie, the key `sock_ops` uses; its offset is read by the agent from tracefs.
#![expect(unsafe_code, reason = "a connection entry is updated in place through its map pointer")]
use agent_common::{CONN_RST_SEEN, SETTING_RST_COOKIE_OFFSET};
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{ctx::record_cookie, maps::CONNS};

#[tracepoint]
fn cellwatch_rst(ctx: TracePointContext) -> u32 {
    try_rst(&ctx);
    0
}

#[inline(always)]
fn try_rst(ctx: &TracePointContext) {
    let Some(cookie) = record_cookie(ctx, SETTING_RST_COOKIE_OFFSET) else { return };
    if let Some(conn) = CONNS.get_ptr_mut(cookie) {
        // SAFETY: `conn` points to a live entry of CONNS.
        unsafe { (*conn).flags |= CONN_RST_SEEN };
    }
}
