//! Per-CPU aggregation per cell pair. Every update is an atomic add: a program running
//! in process context can be interrupted by one in softirq on the same CPU, and a plain
//! read-modify-write would then lose a count.
#![expect(
    unsafe_code,
    reason = "map values are updated in place through the pointers the map helpers return"
)]
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use agent_common::{CTR_STATS_TABLE_FULL, PairKey, PairStats, hist_bucket};
use aya_ebpf::bindings::BPF_NOEXIST;

use crate::maps::{COUNTERS, PAIR_STATS};

/// The statistics slot of `key` on this CPU, created on first use; `None` (and an error
/// counted) only when the pair table is full.
#[inline(always)]
pub(crate) fn slot(key: &PairKey) -> Option<*mut PairStats> {
    if let Some(p) = PAIR_STATS.get_ptr_mut(key) {
        return Some(p);
    }
    // Another CPU may win the race to create it; NOEXIST then fails and the lookup finds it.
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by value, the 480-byte zero would be copied onto the 512-byte BPF stack; \
                  borrowed, it is read from .rodata"
    )]
    let _ = PAIR_STATS.insert(key, &PairStats::ZERO, u64::from(BPF_NOEXIST));
    let p = PAIR_STATS.get_ptr_mut(key);
    if p.is_none() {
        let _ = count(CTR_STATS_TABLE_FULL);
    }
    p
}

#[inline(always)]
pub(crate) fn add(field: *mut u64, v: u64) {
    // SAFETY: `field` points into a map value that stays valid for this program run, and
    // u64 fields of map values are 8-byte aligned. This lowers to BPF's `lock xadd`.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(field, v) };
}

/// Counts one observation of `v_us` microseconds into a log2 histogram.
#[inline(always)]
pub(crate) fn observe(hist: *mut [u64; agent_common::HIST_BUCKETS], v_us: u64) {
    let i = hist_bucket(v_us);
    // SAFETY: `i` < HIST_BUCKETS by construction of hist_bucket; `hist` points into a map value.
    let cell = unsafe { (hist as *mut u64).add(i) };
    add(cell, 1);
}

/// Counts one event of `index`; returns this CPU's count before it.
#[inline(always)]
pub(crate) fn count(index: u32) -> u64 {
    match COUNTERS.get_ptr_mut(index) {
        Some(p) => {
            // SAFETY: `p` points to this CPU's slot of a per-CPU array entry.
            let before = unsafe { core::ptr::read_volatile(p) };
            add(p, 1);
            before
        }
        None => 0,
    }
}
