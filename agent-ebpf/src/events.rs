//! Violation events to the agent through the ring buffer: rate-limited per cell pair and
//! direction on each CPU (the window lives in the pair's own per-CPU slot, so a dropped
//! event costs no lookup), and every outcome counted (sent, rate-limited, ring full), so
//! the counters stay exact whatever the buffer does.
#![expect(unsafe_code, reason = "the rate window is updated in place in the pair's slot")]

use agent_common::{
    CTR_EVENTS_RATE_LIMITED, CTR_EVENTS_RINGBUF_FULL, CTR_EVENTS_SENT, CTR_RESOLVE_RINGBUF_FULL,
    Conn, Direction, EventKind, SETTING_EVENT_RATE, ViolationEvent,
};
use aya_ebpf::helpers::bpf_ktime_get_ns;

use crate::{
    maps::{EVENTS, SETTINGS},
    stats::{Slot, count},
};

const WINDOW_NS: u64 = 1_000_000_000;

/// What an event says of a connection: both ends, client first, their cells, and the
/// process that connected.
pub(crate) struct Flow {
    pub(crate) family: u16,
    pub(crate) src_addr: [u8; 16],
    pub(crate) src_port: u16,
    pub(crate) dst_addr: [u8; 16],
    pub(crate) dst_port: u16,
    pub(crate) src_cell: u32,
    pub(crate) dst_cell: u32,
    pub(crate) direction: Direction,
    pub(crate) cookie: u64,
    pub(crate) pid: u32,
    pub(crate) cgroup_id: u64,
    pub(crate) comm: [u8; 16],
}

impl Flow {
    #[inline(always)]
    fn of(conn: &Conn) -> Self {
        let egress = conn.direction() == Direction::EGRESS;
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
            direction: conn.direction(),
            cookie: conn.cookie,
            pid: conn.pid,
            cgroup_id: conn.cgroup_id,
            comm: conn.comm,
        }
    }
}

/// Sends the event of a violating connection, unless its pair is over its rate.
#[inline(always)]
pub(crate) fn violation(conn: &Conn, slot: &Slot) {
    send(&Flow::of(conn), slot, EventKind::VIOLATION);
}

/// Sends an event of `kind`, unless its pair is over its rate.
#[inline(always)]
pub(crate) fn send(flow: &Flow, slot: &Slot, kind: EventKind) {
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if !within_rate(slot, now) {
        count(CTR_EVENTS_RATE_LIMITED);
        return;
    }
    if emit(flow, kind, now) {
        count(CTR_EVENTS_SENT);
    } else {
        count(CTR_EVENTS_RINGBUF_FULL);
    }
}

/// Asks the agent to find the backend of a connection to a service address (no rate
/// limit: every such connection needs its answer). A full ring buffer drops the request;
/// the sweep, or the agent's scan of `DEFERRED`, asks again.
#[inline(always)]
pub(crate) fn resolve_request(conn: &Conn) {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if !emit(&Flow::of(conn), EventKind::RESOLVE, now) {
        count(CTR_RESOLVE_RINGBUF_FULL);
    }
}

/// Writes one record; false when the ring buffer is full.
#[inline(always)]
fn emit(flow: &Flow, kind: EventKind, now: u64) -> bool {
    let Some(mut entry) = EVENTS.reserve::<ViolationEvent>(0) else {
        return false;
    };
    entry.write(ViolationEvent {
        ts_ns: now,
        cookie: flow.cookie,
        cgroup_id: flow.cgroup_id,
        pid: flow.pid,
        src_cell: flow.src_cell,
        dst_cell: flow.dst_cell,
        family: flow.family,
        src_port: flow.src_port,
        dst_port: flow.dst_port,
        direction: flow.direction.0,
        kind: kind.0,
        _pad: 0,
        src_addr: flow.src_addr,
        dst_addr: flow.dst_addr,
        comm: flow.comm,
    });
    entry.submit(0);
    true
}

/// A fixed one-second window per pair and direction on this CPU. A program interrupted
/// on the same CPU can let one more through; what is refused is always counted.
#[inline(always)]
fn within_rate(slot: &Slot, now: u64) -> bool {
    let limit = u64::from(SETTINGS.get(SETTING_EVENT_RATE).copied().unwrap_or(0));
    let s = slot.stats();
    // SAFETY: `s` is this CPU's value of a live pair entry.
    unsafe {
        if now.wrapping_sub((*s).ev_window_ns) >= WINDOW_NS {
            (*s).ev_window_ns = now;
            (*s).ev_count = 1;
            return limit > 0;
        }
        if (*s).ev_count < limit {
            (*s).ev_count += 1;
            return true;
        }
    }
    false
}
