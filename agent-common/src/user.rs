//! `aya::Pod` for every type that crosses into a map, on the userspace side only.
#![expect(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]
use crate::*;

/// Marks each type as plain old data for aya's map accessors.
macro_rules! pod {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: #[repr(C)], Copy, made only of integers and integer arrays, with
        // every padding byte an explicit field (see the size asserts).
        unsafe impl aya::Pod for $t {}
    )*};
}

pod!(
    PairKey,
    PairStats,
    Conn,
    Resolution,
    Deferred,
    Progress,
    Claimed,
    Seeded,
    SweepTail,
    Brief,
    ServiceKeyV4,
    ServiceKeyV6,
    CellInfo,
    PolicyKey,
    ViolationEvent,
    NetnsKey,
    NetnsAddr,
    CellName,
    FieldOffsets,
    OpCost,
    FlowKey,
    UdpFlow,
    UdpStats,
    DnsPendingKey,
    DnsPending,
    DnsKey,
    DnsStats,
);
