//! What the programs count: each cell pair's statistics, their log2 histograms, and the
//! kernel side's own bookkeeping counters and profile.

use crate::Failure;

// Indices into the per-CPU `COUNTERS` array: bookkeeping of the kernel side.
/// A connection not tracked because `--conn-capacity` connections were tracked.
pub const CTR_CONN_TABLE_FULL: u32 = 0;
/// A pair-statistics update dropped because the pair table was full.
pub const CTR_STATS_TABLE_FULL: u32 = 1;
// Connections that began / ended being tracked (live = difference, summed over CPUs).
/// A connection that began being tracked (counted against `--conn-capacity`).
pub const CTR_CONN_TRACKED: u32 = 2;
/// A tracked connection that ended being tracked (its place freed).
pub const CTR_CONN_FORGOTTEN: u32 = 3;
// Violation events: sent + rate_limited + ringbuf_full = violations seen.
/// A violation event sent through the ring buffer.
pub const CTR_EVENTS_SENT: u32 = 4;
/// A violation event dropped by the per-pair rate limit.
pub const CTR_EVENTS_RATE_LIMITED: u32 = 5;
/// A violation event dropped because the ring buffer was full.
pub const CTR_EVENTS_RINGBUF_FULL: u32 = 6;
/// A connect that enforce mode could not judge, and so let through: an unbound socket in
/// a network namespace whose source address is not known yet, or not unique.
pub const CTR_ENFORCE_UNRESOLVED: u32 = 7;
/// A live connection a sweep visited (any sweep).
pub const CTR_SWEEP_VISITED: u32 = 8;
/// A live connection a sweep found busy three times in a row and left for the next
/// sweep.
pub const CTR_SWEEP_BUSY: u32 = 9;
/// A connection to a service address whose backend request was dropped (ring buffer
/// full; the sweep or the agent's scan of `DEFERRED` asks again).
pub const CTR_RESOLVE_RINGBUF_FULL: u32 = 10;
/// A connection to a service address that closed before its backend was known but found
/// `DEFERRED` full (not counted: lost).
pub const CTR_DEFERRED_FULL: u32 = 11;
/// A UDP datagram whose flow found the flow table full: not counted in a pair (which end
/// is the client is unknown without its flow), but here.
pub const CTR_UDP_FLOW_TABLE_FULL: u32 = 12;
/// A UDP datagram not counted because the UDP statistics table was full.
pub const CTR_UDP_STATS_FULL: u32 = 13;
/// A DNS answer not counted: no query of it was waiting (sent before the agent, or
/// pushed out of a full `DNS_PENDING`), or the DNS statistics table was full.
pub const CTR_DNS_UNMATCHED: u32 = 14;
/// Length of the `COUNTERS` array.
pub const COUNTERS_LEN: u32 = 15;

// Slots of the `PROFILE` map (kept only when the agent runs with `--profile-kernel`).
/// Length of the `PROFILE` map: one slot per `sock_ops` op (`BPF_SOCK_OPS_*`, below 16),
/// and [`PROFILE_STATE_CLOSE`].
pub const PROFILE_SLOTS: u32 = 17;
/// The slot of the state change to CLOSE, apart from the other state changes.
pub const PROFILE_STATE_CLOSE: u32 = 16;

/// Runs and nanoseconds of one profiled `sock_ops` op on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCost {
    pub runs: u64,
    pub ns: u64,
}

/// Number of log2 histogram buckets. Bucket `i` counts values `v` (in microseconds) with
/// `v < 2^i` that did not fit bucket `i - 1`, i.e. `le = 2^i µs`; the last bucket is
/// everything above `2^(HIST_BUCKETS-2)` µs (Prometheus' `+Inf`).
pub const HIST_BUCKETS: usize = 28;

/// Histogram bucket of a value in microseconds: the smallest `i` with `v < 2^i`, i.e.
/// `le = 2^i` µs, clamped to the last (+Inf) bucket. Shared by kernel and tests so the
/// bucket maths exist once.
#[inline(always)]
pub const fn hist_bucket(v_us: u64) -> usize {
    // v < 2^i  <=>  i > log2(v)  <=>  i = 64 - leading_zeros(v) for v > 0; v = 0 -> bucket 0.
    let i = (64 - v_us.leading_zeros()) as usize;
    if i >= HIST_BUCKETS { HIST_BUCKETS - 1 } else { i }
}

/// Counters and histograms of one cell pair, one copy per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairStats {
    /// Connections that reached ESTABLISHED.
    pub opened: u64,
    /// Established connections that reached CLOSE.
    pub closed: u64,
    /// Connections judged `violation` when first seen (connect for egress,
    /// established for ingress), whether or not they then succeeded.
    pub violations: u64,
    /// Connects refused by enforce mode.
    pub denied: u64,
    /// Client connects that never reached ESTABLISHED, by reason ([`Failure`]).
    pub failed: [u64; Failure::REASONS],
    /// Payload bytes this node's socket sent, each byte once (a retransmission is not
    /// counted again), whether the peer acknowledged them or not (SYN and FIN carry
    /// none; see [`Progress::payload_sent`](crate::Progress::payload_sent)).
    pub bytes_sent: u64,
    /// Payload bytes this node's socket received.
    pub bytes_received: u64,
    pub retransmits: u64,
    /// Sum of connect latencies in nanoseconds (egress only).
    pub latency_sum_ns: u64,
    /// Connect latency histogram (log2 µs buckets).
    pub latency_hist: [u64; HIST_BUCKETS],
    /// Sum of smoothed RTTs in microseconds.
    pub rtt_sum_us: u64,
    /// Smoothed RTT histogram (log2 µs buckets): one sample per live connection per
    /// sweep, and one at its close.
    pub rtt_hist: [u64; HIST_BUCKETS],
    /// The violation-event rate limit of this pair on this CPU: the start of the current
    /// one-second window and the events sent in it. Bookkeeping, not a statistic.
    pub ev_window_ns: u64,
    pub ev_count: u64,
    /// Of `opened`, the connections opened while the server's cell was drained.
    pub drain_opened: u64,
    /// Of `denied`, the connects refused because the server's cell is drained with
    /// `drain: refuse`.
    pub drain_denied: u64,
}

impl PairStats {
    pub const ZERO: Self = Self {
        opened: 0,
        closed: 0,
        violations: 0,
        denied: 0,
        failed: [0; Failure::REASONS],
        bytes_sent: 0,
        bytes_received: 0,
        retransmits: 0,
        latency_sum_ns: 0,
        latency_hist: [0; HIST_BUCKETS],
        rtt_sum_us: 0,
        rtt_hist: [0; HIST_BUCKETS],
        ev_window_ns: 0,
        ev_count: 0,
        drain_opened: 0,
        drain_denied: 0,
    };
}

const _: () =
    assert!(core::mem::size_of::<PairStats>() == (13 + Failure::REASONS + 2 * HIST_BUCKETS) * 8);
const _: () = assert!(core::mem::size_of::<OpCost>() == 16);

#[cfg(test)]
mod tests;
