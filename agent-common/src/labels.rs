//! What a connection is, as the metrics label it: its direction, its verdict, how it
//! failed, and the cell id of a peer in no cell. Nothing here uses the rest of the crate
//! (`layout` uses these types).

/// Cell id of a peer that is in no cell (`external` in metrics).
pub const CELL_EXTERNAL: u32 = 0;

/// Which end of a connection this node holds ([`PairKey::direction`](crate::PairKey)).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Direction(pub u8);

impl Direction {
    /// This node holds the client socket (the side that called connect).
    pub const EGRESS: Self = Self(0);
    /// This node holds the server socket (the side that accepted).
    pub const INGRESS: Self = Self(1);

    /// The `direction` label.
    pub const fn label(self) -> &'static str {
        if self.0 == Self::EGRESS.0 { "egress" } else { "ingress" }
    }
}

/// Whether this node's side of a connection samples its RTT: the client's does, and the
/// server's when the client (`src_cell`) is in no cell, since no cellwatch sees that
/// connection as egress. So each connection's RTT is counted once.
#[inline(always)]
pub const fn observes_rtt(direction: Direction, src_cell: u32) -> bool {
    direction.0 == Direction::EGRESS.0 || src_cell == CELL_EXTERNAL
}

/// How a connection was judged when first seen ([`PairKey::verdict`](crate::PairKey)).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Verdict(pub u8);

impl Verdict {
    pub const ALLOWED: Self = Self(0);
    pub const VIOLATION: Self = Self(1);

    /// The `verdict` label.
    pub const fn label(self) -> &'static str {
        if self.0 == Self::VIOLATION.0 { "violation" } else { "allowed" }
    }
}

/// Why a connection failed: an index into [`PairStats::failed`](crate::PairStats), or
/// [`Failure::NONE`] ([`Deferred::failure`](crate::Deferred) keeps it raw).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Failure(pub u32);

impl Failure {
    pub const REFUSED: Self = Self(0);
    pub const RESET: Self = Self(1);
    pub const TIMEOUT: Self = Self(2);
    pub const OTHER: Self = Self(3);
    /// A connection that ended without one.
    pub const NONE: Self = Self(u32::MAX);
    /// Number of reasons: the length of [`PairStats::failed`](crate::PairStats).
    pub const REASONS: usize = 4;
    /// The `reason` label of each reason, by index.
    pub const LABELS: [&'static str; Self::REASONS] = ["refused", "reset", "timeout", "other"];

    /// Its index into [`PairStats::failed`](crate::PairStats); `None` for
    /// [`Failure::NONE`] (or anything else out of range).
    #[inline(always)]
    pub const fn index(self) -> Option<usize> {
        let i = self.0 as usize;
        if i < Self::REASONS { Some(i) } else { None }
    }
}

/// [`PairStats::failed`](crate::PairStats) indexed by reason (userspace and tests; panics
/// on [`Failure::NONE`], as an index out of range does).
impl core::ops::Index<Failure> for [u64; Failure::REASONS] {
    type Output = u64;

    fn index(&self, f: Failure) -> &u64 {
        &self[f.0 as usize]
    }
}

impl core::ops::IndexMut<Failure> for [u64; Failure::REASONS] {
    fn index_mut(&mut self, f: Failure) -> &mut u64 {
        &mut self[f.0 as usize]
    }
}

// The `sk_err` values that name a failure (`errno`).
pub const ECONNREFUSED: u32 = 111;
pub const ECONNRESET: u32 = 104;
pub const EPIPE: u32 = 32;
pub const ETIMEDOUT: u32 = 110;

const _: () = assert!(core::mem::size_of::<Direction>() == 1);
const _: () = assert!(core::mem::size_of::<Verdict>() == 1);
const _: () = assert!(core::mem::size_of::<Failure>() == 4);

#[cfg(test)]
mod tests;
