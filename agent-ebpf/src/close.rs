//! What a connection's end adds to its pair: the last claim of its bytes and
//! retransmits, one RTT sample, and closed or failed. The close (`sockops.rs`), the
//! settling of a connection that closed before its backend was known (`settle.rs`) and
//! the destroy of a connection older than the agent (`destroy.rs`) add the same.
#![expect(unsafe_code, reason = "pair entries and claims are updated in place")]

use agent_common::{Claimed, Failure, Progress};

use crate::stats::{Slot, add};

/// The figures of a connection at its end.
pub(crate) struct Final {
    /// The socket's counters and whether the peer's FIN had come (`None`: unreadable).
    pub(crate) last: Option<(Progress, bool)>,
    /// The failure its end counts, or [`Failure::NONE`].
    pub(crate) failure: Failure,
    pub(crate) srtt_us: u32,
}

/// Adds the end of a connection to `slot`: when it was `established`, the rest of what
/// it moved (claimed into `claimed`), an RTT sample if `rtt_sample`, and one closed; its
/// failure, if any.
///
/// # Safety
/// `claimed` must point into a live map value or socket storage of this connection.
#[inline(always)]
pub(crate) unsafe fn account(
    slot: &Slot,
    claimed: *mut Claimed,
    base: &Progress,
    end: &Final,
    established: bool,
    rtt_sample: bool,
) {
    let s = slot.stats();
    if established {
        if let Some((now, fin)) = &end.last {
            // SAFETY: `claimed` per the contract.
            unsafe { slot.claim(claimed, base, now, *fin) };
        }
        if rtt_sample {
            slot.rtt(end.srtt_us);
        }
        // SAFETY: `s` is this CPU's value of a live pair entry.
        unsafe { add(&raw mut (*s).closed, 1) };
    }
    if let Some(f) = end.failure.index() {
        // SAFETY: as above; `f` is in bounds.
        unsafe { add(&raw mut (*s).failed[f], 1) };
    }
}
