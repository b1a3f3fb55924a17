//! `tcp:tcp_destroy_sock`: the end of a connection older than the agent (seeded), which
//! `sock_ops` was never asked to follow. Found in `SEEDED` by cookie: the rest of what it
//! moved is claimed from the dead socket's counters, it is counted closed, then
//! forgotten. The agent attaches this tracepoint only while such connections exist.
#![expect(unsafe_code, reason = "the seeded entry is updated in place through its pointer")]
use agent_common::{
    Failure, SETTING_DESTROY_COOKIE_OFFSET, SETTING_DESTROY_SKADDR_OFFSET, observes_rtt,
};
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{
    close::{Final, account},
    conn,
    ctx::{record_cookie, record_u64},
    kread::Sock,
    maps::SEEDED,
    stats::Slot,
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
        // A seeded connection is established (`seed.rs` flags it so) and its end counts
        // no failure; its RTT is sampled only when its socket could be read.
        let rtt_sample = reading.is_some() && observes_rtt(key.direction(), key.src_cell);
        let end = match reading {
            Some(r) => Final {
                last: Some((r.progress, r.fin_received)),
                failure: Failure::NONE,
                srtt_us: r.srtt_us,
            },
            None => Final { last: None, failure: Failure::NONE, srtt_us: 0 },
        };
        // SAFETY: as above.
        unsafe {
            account(&slot, &raw mut (*seeded).claimed, &(*seeded).base, &end, true, rtt_sample);
        }
    }
    if SEEDED.remove(cookie).is_ok() {
        conn::release();
    }
}
