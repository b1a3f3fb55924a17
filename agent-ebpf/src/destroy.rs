//! `tcp:tcp_destroy_sock`: the end of a connection older than the agent (seeded), which
//! `sock_ops` was never asked to follow. Found in `SEEDED` by cookie: the rest of what it
//! moved is claimed from the dead socket's counters, it is counted closed, then
//! forgotten. The agent attaches this tracepoint only while such connections exist.
#![expect(unsafe_code, reason = "the seeded entry is updated in place through its pointer")]
use agent_common::{SETTING_DESTROY_COOKIE_OFFSET, SETTING_DESTROY_SKADDR_OFFSET, observes_rtt};
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{
    conn,
    ctx::{record_cookie, record_u64},
    kread::Sock,
    maps::SEEDED,
    stats::{Slot, add},
};

#[tracepoint]
fn cellwatch_destroy(ctx: TracePointContext) -> u32 {
    try_destroy(&ctx);
    0
}

#[inline(always)]
fn try_destroy(ctx: &TracePointContext) {
    let Some(cookie) = record_cookie(ctx, SETTING_DESTROY_COOKIE_OFFSET) else { return };
    let Some(seeded) = SEEDED.get_ptr_mut(cookie) else { return };
    let skaddr = record_u64(ctx, SETTING_DESTROY_SKADDR_OFFSET).unwrap_or(0);
    let reading = Sock::at(skaddr).and_then(|s| s.read());
    // SAFETY: `seeded` points to a live entry of SEEDED, removed only below.
    let key = unsafe { (*seeded).key };
    if let Some(slot) = Slot::of(&key) {
        if let Some(r) = reading {
            // SAFETY: as above.
            unsafe {
                slot.claim(
                    &raw mut (*seeded).claimed,
                    &(*seeded).base,
                    &r.progress,
                    r.fin_received,
                );
            }
            if observes_rtt(key.direction(), key.src_cell) {
                slot.rtt(r.srtt_us);
            }
        }
        // SAFETY: the slot's pointer is this CPU's value of a live pair entry.
        unsafe { add(&raw mut (*slot.stats()).closed, 1) };
    }
    if SEEDED.remove(cookie).is_ok() {
        conn::release();
    }
}
