//! Violation events to the agent through the ring buffer: rate-limited per cell pair and
//! direction, and every outcome counted (sent, rate-limited, ring full), so the counters
//! stay exact whatever the buffer does.
#![expect(
    unsafe_code,
    reason = "a rate-limit entry is updated in place, and an owner read, through map pointers"
)]
use agent_common::{
    CTR_EVENTS_RATE_LIMITED, CTR_EVENTS_RINGBUF_FULL, CTR_EVENTS_SENT, ConnState, DIR_EGRESS,
    EVENT_VIOLATION, PairKey, RateState, SETTING_EVENT_RATE, ViolationEvent,
};
use aya_ebpf::helpers::bpf_ktime_get_ns;

use crate::{
    maps::{EVENT_RATE, EVENTS, OWNERS, SETTINGS},
    stats::count,
};

const WINDOW_NS: u64 = 1_000_000_000;

/// What an event says of a connection: both ends, client first, and their cells.
pub(crate) struct Flow {
    pub(crate) family: u16,
    pub(crate) src_addr: [u8; 16],
    pub(crate) src_port: u16,
    pub(crate) dst_addr: [u8; 16],
    pub(crate) dst_port: u16,
    pub(crate) src_cell: u32,
    pub(crate) dst_cell: u32,
    pub(crate) direction: u8,
}

impl Flow {
    #[inline(always)]
    fn of(conn: &ConnState) -> Self {
        let egress = conn.direction == DIR_EGRESS;
        let (src_addr, src_port, dst_addr, dst_port) = if egress {
            (conn.local_addr, conn.local_port, conn.remote_addr, conn.remote_port)
        } else {
            (conn.remote_addr, conn.remote_port, conn.local_addr, conn.local_port)
        };
        Self {
            family: conn.family,
            src_addr,
            src_port,
            dst_addr,
            dst_port,
            src_cell: conn.src_cell,
            dst_cell: conn.dst_cell,
            direction: conn.direction,
        }
    }
}

/// Sends the event of a violating connection, unless its pair is over its rate.
///
/// A function of its own (a BPF-to-BPF call): inlined, its `Flow` would sit in the
/// `sock_ops` program's frame beside the rest, past the 512 bytes older kernels (6.1)
/// allow for a frame and its callees together.
#[inline(never)]
pub(crate) fn violation(conn: &ConnState, key: &PairKey, cookie: u64) {
    send(&Flow::of(conn), key, cookie, EVENT_VIOLATION);
}

/// Sends an event of `kind` (`EVENT_*`), unless its pair is over its rate.
#[inline(always)]
pub(crate) fn send(flow: &Flow, key: &PairKey, cookie: u64, kind: u8) {
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if !within_rate(key, now) {
        let _ = count(CTR_EVENTS_RATE_LIMITED);
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<ViolationEvent>(0) else {
        let _ = count(CTR_EVENTS_RINGBUF_FULL);
        return;
    };
    // SAFETY: the value is copied out at once.
    let owner = unsafe { OWNERS.get(cookie) }.copied();
    entry.write(ViolationEvent {
        ts_ns: now,
        cookie,
        cgroup_id: owner.map_or(0, |o| o.cgroup_id),
        pid: owner.map_or(0, |o| o.pid),
        src_cell: flow.src_cell,
        dst_cell: flow.dst_cell,
        family: flow.family,
        src_port: flow.src_port,
        dst_port: flow.dst_port,
        direction: flow.direction,
        kind,
        _pad: 0,
        src_addr: flow.src_addr,
        dst_addr: flow.dst_addr,
        comm: owner.map_or([0; 16], |o| o.comm),
    });
    entry.submit(0);
    let _ = count(CTR_EVENTS_SENT);
}

/// A fixed one-second window per key. Races between CPUs can let a few more through;
/// what is refused is always counted.
#[inline(always)]
fn within_rate(key: &PairKey, now: u64) -> bool {
    let limit = SETTINGS.get(SETTING_EVENT_RATE).copied().unwrap_or(0);
    if let Some(r) = EVENT_RATE.get_ptr_mut(key) {
        // SAFETY: `r` points to a live entry of EVENT_RATE.
        unsafe {
            if now.wrapping_sub((*r).window_start_ns) >= WINDOW_NS {
                (*r).window_start_ns = now;
                (*r).count = 1;
                return limit > 0;
            }
            if (*r).count < limit {
                (*r).count += 1;
                return true;
            }
            return false;
        }
    }
    let _ = EVENT_RATE.insert(key, RateState { window_start_ns: now, count: 1, _pad: 0 }, 0);
    limit > 0
}
