//! Drained cells: every connection opened into one is counted apart, and under
//! `drain: refuse` (enforce mode) new connects into it from other cells are refused.
#![expect(unsafe_code, reason = "pair entries are updated in place through their pointers")]

use crate::{
    cells::View,
    stats::{Slot, add},
};

/// One connection of `slot`'s pair opened into `dst`: counted again as a drain's when
/// `dst` is drained now (the pair's `opened` counted it already).
#[inline(always)]
pub(crate) fn opened(view: &View, slot: &Slot, dst: u32) {
    if view.is_drained(dst) {
        // SAFETY: the slot's pointer is this CPU's value of a live pair entry.
        unsafe { add(&raw mut (*slot.stats()).drain_opened, 1) };
    }
}

/// Whether `drain: refuse` refuses a connect from `src` into `dst`: a drained cell's own
/// connects are its work finishing, not new traffic into it. The caller counts it.
#[inline(always)]
pub(crate) fn refuses(view: &View, src: u32, dst: u32) -> bool {
    src != dst && view.refuses_drained(dst)
}
