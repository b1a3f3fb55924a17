//! Per-CPU aggregation per cell pair, and the claims that move a connection's figures
//! into it. Every update is an atomic operation: a program running in process context
//! can be interrupted by one in softirq on the same CPU, and a plain read-modify-write
//! would then lose a count.
#![expect(unsafe_code, reason = "map values are updated in place through their pointers")]

use core::intrinsics::{AtomicOrdering, atomic_xadd, atomic_xchg};

use agent_common::{
    CTR_STATS_TABLE_FULL, Claimed, HIST_BUCKETS, PairKey, PairStats, Progress, hist_bucket,
};
use aya_ebpf::bindings::BPF_NOEXIST;

use crate::maps::{COUNTERS, PAIR_OVERFLOW, PAIR_STATS};

/// This CPU's statistics of one pair, created on first use (or, when that allocation
/// fails, the pair's shared overflow entry).
pub(crate) struct Slot(*mut PairStats);

impl Slot {
    /// `None` (and an error counted) only when both pair tables are full.
    #[inline(always)]
    pub(crate) fn of(key: &PairKey) -> Option<Self> {
        if let Some(p) = PAIR_STATS.get_ptr_mut(key) {
            return Some(Self(p));
        }
        // Another CPU may win the race to create it; NOEXIST then fails and the lookup
        // finds it.
        #[expect(
            clippy::needless_borrows_for_generic_args,
            reason = "by value, the zero would be copied onto the 512-byte BPF stack; \
                      borrowed, it is read from .rodata"
        )]
        let _ = PAIR_STATS.insert(key, &PairStats::ZERO, u64::from(BPF_NOEXIST));
        if let Some(p) = PAIR_STATS.get_ptr_mut(key) {
            return Some(Self(p));
        }
        Self::overflow(key)
    }

    /// The pair's entry in the shared overflow table.
    #[inline(never)]
    fn overflow(key: &PairKey) -> Option<Self> {
        if let Some(p) = PAIR_OVERFLOW.get_ptr_mut(key) {
            return Some(Self(p));
        }
        #[expect(
            clippy::needless_borrows_for_generic_args,
            reason = "by value, the zero would be copied onto the 512-byte BPF stack"
        )]
        let _ = PAIR_OVERFLOW.insert(key, &PairStats::ZERO, u64::from(BPF_NOEXIST));
        match PAIR_OVERFLOW.get_ptr_mut(key) {
            Some(p) => Some(Self(p)),
            None => {
                count(CTR_STATS_TABLE_FULL);
                None
            }
        }
    }

    #[inline(always)]
    pub(crate) fn stats(&self) -> *mut PairStats {
        self.0
    }

    /// Adds the figures a connection moved since its last claim: the part of `now`
    /// (measured from `base`) that `claimed` does not hold yet.
    ///
    /// # Safety
    /// `claimed` must point into a live map value or socket storage of this connection.
    #[inline(always)]
    pub(crate) unsafe fn claim(
        &self,
        claimed: *mut Claimed,
        base: &Progress,
        now: &Progress,
        fin_received: bool,
    ) {
        let s = self.0;
        // SAFETY: `claimed` per the contract, `s` is this CPU's value of a live pair
        // entry; their fields are 8-aligned.
        unsafe {
            let sent = take(&raw mut (*claimed).sent, now.payload_sent(base));
            add(&raw mut (*s).bytes_sent, sent);
            let recv = take(&raw mut (*claimed).received, now.payload_received(base, fin_received));
            add(&raw mut (*s).bytes_received, recv);
            let retrans =
                take(&raw mut (*claimed).retrans, now.retrans.saturating_sub(base.retrans));
            add(&raw mut (*s).retransmits, retrans);
        }
    }

    /// One smoothed-RTT sample.
    #[inline(always)]
    pub(crate) fn rtt(&self, srtt_us: u32) {
        let s = self.0;
        // SAFETY: as in `claim`.
        unsafe {
            add(&raw mut (*s).rtt_sum_us, u64::from(srtt_us));
            observe(&raw mut (*s).rtt_hist, u64::from(srtt_us));
        }
    }

    /// One connection opened, with its connect latency.
    #[inline(always)]
    pub(crate) fn opened(&self, latency_ns: u64) {
        let s = self.0;
        // SAFETY: as in `claim`.
        unsafe {
            add(&raw mut (*s).opened, 1);
            add(&raw mut (*s).latency_sum_ns, latency_ns);
            observe(&raw mut (*s).latency_hist, latency_ns / 1000);
        }
    }
}

/// Moves a claim forward to `total`, atomically, and returns how much of it is new: 0
/// when as much was claimed already (by the close, or an earlier sweep).
///
/// # Safety
/// `field` must point to an 8-aligned u64 of a live map value or socket storage.
#[inline(always)]
unsafe fn take(field: *mut u64, total: u64) -> u64 {
    // SAFETY: per the function's contract; this lowers to BPF's atomic exchange.
    let before = unsafe { atomic_xchg::<u64, { AtomicOrdering::Relaxed }>(field, total) };
    total.saturating_sub(before)
}

/// Adds `v` to a counter, atomically.
///
/// # Safety
/// `field` must point to an 8-aligned u64 of a map value that stays valid for this
/// program run (as every u64 field of a map value is).
#[inline(always)]
pub(crate) unsafe fn add(field: *mut u64, v: u64) {
    // SAFETY: per the function's contract; this lowers to BPF's `lock xadd`.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(field, v) };
}

/// Counts one observation of `v_us` microseconds into a log2 histogram.
///
/// # Safety
/// `hist` must point to a histogram of a map value, as for [`add`].
#[inline(always)]
pub(crate) unsafe fn observe(hist: *mut [u64; HIST_BUCKETS], v_us: u64) {
    let i = hist_bucket(v_us);
    // SAFETY: `i` < HIST_BUCKETS by construction of hist_bucket, so the bucket is within
    // the histogram `hist` points to (per the contract).
    unsafe { add((hist as *mut u64).add(i), 1) };
}

/// Counts one event of `index`.
#[inline(always)]
pub(crate) fn count(index: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: `p` is this CPU's value of a live array entry.
        unsafe { add(p, 1) };
    }
}
