//! What the programs send the agent: the ring buffer's events and the iterators' records.

use crate::{Claimed, Conn, Direction};

/// What a [`ViolationEvent`] says ([`ViolationEvent::kind`]).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventKind(pub u8);

impl EventKind {
    /// A connection judged `violation`.
    pub const VIOLATION: Self = Self(1);
    /// A connect refused by enforce mode.
    pub const DENIED: Self = Self(2);
    /// Not a violation but a request: find the backend of this connection to a service
    /// address (`src` is the client, `dst` the service address).
    pub const RESOLVE: Self = Self(3);
}

/// One violation, sent through the ring buffer. `src` is always the client.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViolationEvent {
    /// `bpf_ktime_get_ns` when it was seen.
    pub ts_ns: u64,
    pub cookie: u64,
    /// cgroup of the connecting process (egress), 0 when unknown.
    pub cgroup_id: u64,
    /// Process id (egress), 0 when unknown.
    pub pid: u32,
    pub src_cell: u32,
    pub dst_cell: u32,
    pub family: u16,
    pub src_port: u16,
    pub dst_port: u16,
    /// A [`Direction`] (see [`ViolationEvent::direction`]).
    pub direction: u8,
    /// An [`EventKind`] (see [`ViolationEvent::kind`]).
    pub kind: u8,
    pub _pad: u32,
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub comm: [u8; 16],
}

impl ViolationEvent {
    pub const fn direction(&self) -> Direction {
        Direction(self.direction)
    }

    pub const fn kind(&self) -> EventKind {
        EventKind(self.kind)
    }
}

/// One connection as the sweep reports it to `/connections`: its [`Conn`] as stored,
/// followed by this tail, its figures now (what its pair's counters hold of it, so the
/// two always agree).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepTail {
    /// What the connection has added to its pair's counters, after this sweep.
    pub claimed: Claimed,
    /// The smoothed RTT this sweep observed (0 when the socket stayed busy).
    pub srtt_us: u32,
    pub _pad: u32,
}

/// What a listing's first sweep says of each open connection that passes its filter:
/// enough to order them, in 16 bytes (the fewer bytes, the fewer times the iterator
/// restarts its walk).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Brief {
    pub cookie: u64,
    pub start_ns: u64,
}

/// Bytes of one sweep record: a [`Conn`], then a [`SweepTail`].
pub const SWEEP_RECORD_BYTES: usize =
    core::mem::size_of::<Conn>() + core::mem::size_of::<SweepTail>();

/// What seeding did with one planned socket: the seeding iterator's record, one per
/// socket of `SEED_PLAN` it reached.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeedOutcome {
    pub cookie: u64,
    /// [`SeedOutcome::SEEDED`], [`SeedOutcome::ALREADY_TRACKED`] or
    /// [`SeedOutcome::NO_ROOM`].
    pub what: u64,
}

impl SeedOutcome {
    /// Seeded: its storage made, counted opened.
    pub const SEEDED: u64 = 1;
    /// Already tracked: it opened after the programs were attached.
    pub const ALREADY_TRACKED: u64 = 2;
    /// Not tracked: no room.
    pub const NO_ROOM: u64 = 3;
    /// Bytes of one record.
    pub const BYTES: usize = core::mem::size_of::<Self>();

    /// One record as the iterator wrote it (`None` unless `rec` is [`SeedOutcome::BYTES`]
    /// long).
    pub fn decode(rec: &[u8]) -> Option<Self> {
        let word =
            |at: usize| rec.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes);
        if rec.len() != Self::BYTES {
            return None;
        }
        Some(Self {
            cookie: word(core::mem::offset_of!(Self, cookie))?,
            what: word(core::mem::offset_of!(Self, what))?,
        })
    }
}

const _: () = assert!(core::mem::size_of::<ViolationEvent>() == 96);
const _: () = assert!(core::mem::size_of::<SweepTail>() == 32);
const _: () = assert!(core::mem::size_of::<Brief>() == 16);
const _: () = assert!(core::mem::size_of::<SeedOutcome>() == 16);

#[cfg(test)]
mod tests;
