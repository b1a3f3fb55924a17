//! `tcp:tcp_destroy_sock`: the end of a connection `sock_ops` was never asked to follow,
//! one the agent found already open when it started (seeded). Counted closed, then
//! forgotten; any other entry still in the table at destroy is forgotten too, so the
//! table cannot leak.
#![expect(
    unsafe_code,
    reason = "a connection entry is read and its statistics updated through map pointers"
)]
use agent_common::{CONN_ESTABLISHED, CTR_CONN_FORGOTTEN, SETTING_DESTROY_COOKIE_OFFSET};
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{
    ctx::record_cookie,
    maps::{CONNS, OWNERS},
    stats::{add, count, slot},
};

#[tracepoint]
fn cellwatch_destroy(ctx: TracePointContext) -> u32 {
    try_destroy(&ctx);
    0
}

#[inline(always)]
fn try_destroy(ctx: &TracePointContext) {
    let Some(cookie) = record_cookie(ctx, SETTING_DESTROY_COOKIE_OFFSET) else { return };
    let Some(conn) = CONNS.get_ptr(cookie) else { return };
    // SAFETY: `conn` points to a live entry; it is copied out before the entry is removed.
    let conn = unsafe { *conn };
    if CONNS.remove(cookie).is_err() {
        return;
    }
    let _ = count(CTR_CONN_FORGOTTEN);
    let _ = OWNERS.remove(cookie);
    if conn.flags & CONN_ESTABLISHED != 0
        && let Some(s) = slot(&conn.pair_key())
    {
        // SAFETY: `s` points to this CPU's value of a live map entry.
        add(unsafe { &raw mut (*s).closed }, 1);
    }
}
