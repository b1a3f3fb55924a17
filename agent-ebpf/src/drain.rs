//! Drained cells: every connection opened into one is counted apart, and under
//! `drain: refuse` (enforce mode) new connects into it from other cells are refused.
#![expect(unsafe_code, reason = "pair entries are updated in place through their pointers")]

use agent_common::{Direction, PairKey, Verdict};

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

/// Whether `drain: refuse` refuses a connect from `src` into `dst` (a drained cell's own
/// connects are its work finishing, not new traffic into it; an untracked one, `None`,
/// goes on too). Counted when it does, under the verdict the connect would have had.
#[inline(always)]
pub(crate) fn refuses(view: &View, src: u32, dst: u32, verdict: Option<Verdict>) -> bool {
    let Some(verdict) = verdict else { return false };
    if src == dst || !view.refuses_drained(dst) {
        return false;
    }
    let key = PairKey::new(src, dst, Direction::EGRESS, verdict);
    if let Some(slot) = Slot::of(&key) {
        let s = slot.stats();
        // SAFETY: `s` is this CPU's value of a live pair entry.
        unsafe {
            add(&raw mut (*s).denied, 1);
            add(&raw mut (*s).drain_denied, 1);
        }
    }
    true
}
