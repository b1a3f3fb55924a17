//! The settling of `DEFERRED`, the connections to a service address that closed before
//! the agent had found their backend. The agent settles after it writes resolutions;
//! each entry whose resolution is there counts as its close would have (open, violation,
//! bytes, RTT, closed or failed) under the backend's pair, and is marked settled for the
//! agent to remove. Two ways in, whichever the kernel loads (probed in this order):
//! [`cellwatch_settle`], an iterator over every element of `DEFERRED`, and
//! [`cellwatch_settle_one`], a raw-tracepoint program the agent runs once per cookie
//! with `BPF_PROG_TEST_RUN` (never attached to a tracepoint).
#![expect(unsafe_code, reason = "the iterator hands the key as a raw pointer")]

use agent_common::{CONN_ESTABLISHED, observes_rtt};

use crate::{
    close::{Final, account},
    ctx::{MapElemIterCtx, map_elem},
    maps::DEFERRED,
    service_addr,
    stats::Slot,
};

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/bpf_map_elem")]
fn cellwatch_settle(ctx: *mut MapElemIterCtx) -> i32 {
    if let Some((key, _)) = map_elem(ctx) {
        // SAFETY: the key of a `DEFERRED` element is its socket cookie, 8 readable bytes.
        let cookie = unsafe { core::ptr::read_unaligned(key.cast::<u64>()) };
        try_settle(cookie);
    }
    0
}

/// The cookie to settle is the first of the run's arguments (`ctx_in` of
/// `BPF_PROG_TEST_RUN`, one u64).
#[unsafe(no_mangle)]
#[unsafe(link_section = "raw_tp")]
fn cellwatch_settle_one(ctx: *const u64) -> i32 {
    // SAFETY: a raw tracepoint's context is its array of u64 arguments; the agent passes
    // one, and the kernel refuses a run whose context is shorter than what is read.
    let cookie = unsafe { core::ptr::read(ctx) };
    try_settle(cookie);
    0
}

#[inline(always)]
fn try_settle(cookie: u64) {
    // The element again, as a map value the atomic claims can work on.
    let Some(d) = DEFERRED.get_ptr_mut(cookie) else { return };
    // SAFETY: `d` points to a live element; only this iterator and the agent (after it)
    // write it.
    unsafe {
        if (*d).settled != 0 {
            return;
        }
    }
    let Some(r) = service_addr::resolution(cookie) else { return };
    // SAFETY: as above.
    unsafe {
        let c = &raw mut (*d).conn;
        let key = service_addr::apply(c, &r);
        let Some(slot) = Slot::of(&key) else { return };
        service_addr::count_open(c, &slot);
        let end = Final {
            last: Some(((*d).last, (*d).fin != 0)),
            failure: (*d).failure(),
            srtt_us: (*d).srtt_us,
        };
        let established = (*c).flags & CONN_ESTABLISHED != 0;
        let rtt_sample = observes_rtt((*c).direction(), key.src_cell);
        account(&slot, &raw mut (*c).claimed, &(*c).base, &end, established, rtt_sample);
        (*d).settled = 1;
    }
    service_addr::forget(cookie);
}
