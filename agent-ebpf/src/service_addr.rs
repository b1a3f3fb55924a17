//! Connections to a Kubernetes Service address (`service_cidrs`). Netfilter
//! rewrites packets, not sockets: the client's socket only ever holds the service
//! address. So such a connection counts nothing until the agent has found its backend
//! in conntrack and written the backend's cell, service and verdict into `RESOLVED`;
//! then the first of the sweep, the close or the settling (`settle.rs`) to see it counts
//! the open and the violation, once, and every later claim goes to the backend's pair.
#![expect(unsafe_code, reason = "a connection's storage is written in place through its pointer")]

use core::intrinsics::{AtomicOrdering, atomic_cxchg};

use agent_common::{CONN_ESTABLISHED, CTR_DEFERRED_FULL, Conn, PairKey, Resolution, Verdict};
use aya_ebpf::bindings::BPF_NOEXIST;

use crate::{
    close::Final,
    events,
    maps::{DEFER_SCRATCH, DEFERRED, RESOLVED},
    stats::{Slot, add, count},
};

/// Where the connection `cookie` went, once the agent has written it.
#[inline(always)]
pub(crate) fn resolution(cookie: u64) -> Option<Resolution> {
    // SAFETY: the value is copied out at once.
    unsafe { RESOLVED.get(cookie) }.copied()
}

/// The agent's resolution is used up: the connection has ended and counted.
#[inline(always)]
pub(crate) fn forget(cookie: u64) {
    let _ = RESOLVED.remove(cookie);
}

/// Writes the backend's cell, service and verdict into the connection (so a listing
/// shows them) and returns the key it counts under.
///
/// # Safety
/// `c` must point to a live connection (socket storage or a `DEFERRED` value).
#[inline(always)]
pub(crate) unsafe fn apply(c: *mut Conn, r: &Resolution) -> PairKey {
    // SAFETY: per the contract; every writer writes the same values.
    unsafe {
        (*c).dst_cell = r.dst_cell;
        (*c).service = r.service;
        (*c).verdict = r.verdict;
        (*c).pair_key()
    }
}

/// Counts the open of `c` into `slot`, unless that was done already: its violation (an
/// attempt counts, as for any connection) and, if it got established, its open and
/// connect latency.
///
/// # Safety
/// As for [`apply`], with `slot` the pair `apply` returned.
#[inline(always)]
pub(crate) unsafe fn count_open(c: *mut Conn, slot: &Slot) {
    // SAFETY: per the contract; `counted` is an 8-aligned word of the value.
    let (_, won) = unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
            &raw mut (*c).counted,
            0,
            1,
        )
    };
    if !won {
        return;
    }
    let s = slot.stats();
    // SAFETY: `c` as above; `s` is this CPU's value of a live pair entry.
    unsafe {
        if (*c).verdict() == Verdict::VIOLATION {
            add(&raw mut (*s).violations, 1);
            events::violation(&*c, slot);
        }
        if (*c).flags & CONN_ESTABLISHED != 0 {
            slot.opened((*c).established_ns.saturating_sub((*c).start_ns));
            crate::drain::opened(&crate::cells::View::current(), slot, (*c).dst_cell);
        }
    }
}

/// Keeps a connection that ended before its backend was known, with its last figures,
/// for the settling to count once the agent has found the backend; asks for it.
///
/// # Safety
/// `c` must point to the connection's socket storage.
#[inline(always)]
pub(crate) unsafe fn defer(c: *mut Conn, end: &Final) {
    let Some(d) = DEFER_SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: `d` is this CPU's scratch value; `c` per the contract.
    let cookie = unsafe {
        (*d).conn = *c;
        (*d).last = end.last.map_or((*c).base, |(p, _)| p);
        (*d).fin = u32::from(end.last.is_some_and(|(_, fin)| fin));
        (*d).failure = end.failure.0;
        (*d).srtt_us = end.srtt_us;
        (*d).settled = 0;
        (*c).cookie
    };
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by value, the entry would be copied onto the 512-byte BPF stack"
    )]
    // SAFETY: as above.
    let inserted = DEFERRED.insert(cookie, unsafe { &*d }, u64::from(BPF_NOEXIST));
    if inserted.is_err() {
        count(CTR_DEFERRED_FULL);
        return;
    }
    // SAFETY: as above.
    events::resolve_request(unsafe { &*c });
}
