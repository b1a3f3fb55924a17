//! The kernel side's own bookkeeping families: events lost and delivered, log lines held
//! back, connects enforce mode let through unjudged, the live sweep, the profiled ops
//! and each kernel map's fill.
use std::fmt::Write as _;

use agent_common::{
    CTR_CONN_TABLE_FULL, CTR_DNS_UNMATCHED, CTR_ENFORCE_UNRESOLVED, CTR_EVENTS_RATE_LIMITED,
    CTR_EVENTS_RINGBUF_FULL, CTR_EVENTS_SENT, CTR_STATS_TABLE_FULL, CTR_SWEEP_BUSY,
    CTR_SWEEP_VISITED, CTR_UDP_FLOW_TABLE_FULL, CTR_UDP_STATS_FULL,
};

use super::{
    families as f,
    snapshot::{MapFill, Snapshot},
    text::{Def, Family, Kind, Out, Valued},
};

const EVENTS_LOST: Def = Def {
    name: f::EVENTS_LOST_TOTAL,
    kind: Kind::Counter,
    help: "Kernel events cellwatch had to drop, by source",
};
const LOG_SUPPRESSED: Def = Def {
    name: f::VIOLATION_LOG_SUPPRESSED_TOTAL,
    kind: Kind::Counter,
    help: "Violation log lines held back by the agent's node-wide log rate (20 a second, \
           bursts of 100); the events are served at /violations all the same",
};
const EVENTS: Def = Def {
    name: f::EVENTS_TOTAL,
    kind: Kind::Counter,
    help: "Kernel events delivered to the agent, by source",
};
const ENFORCE_UNRESOLVED: Def = Def {
    name: f::ENFORCE_UNRESOLVED_TOTAL,
    kind: Kind::Counter,
    help: "Connects enforce mode let through unjudged: an unbound socket in a network \
           namespace whose source address is not yet known, or not unique",
};
const LIVE_SWEEP: Def = Def {
    name: f::LIVE_SWEEP_CONNECTIONS_TOTAL,
    kind: Kind::Counter,
    help: "Open connections the live sweep visited: read (their figures counted), or busy \
           (in use at every try, left to the next sweep)",
};
const OP_RUNS: Def = Def {
    name: f::KERNEL_OP_RUNS_TOTAL,
    kind: Kind::Counter,
    help: "Runs of the sock_ops program by op, with --profile-kernel",
};
const OP_SECONDS: Def = Def {
    name: f::KERNEL_OP_SECONDS_TOTAL,
    kind: Kind::Counter,
    help: "Time in the sock_ops program by op, with --profile-kernel",
};
const MAP_ENTRIES: Def =
    Def { name: f::MAP_ENTRIES, kind: Kind::Gauge, help: "Entries in each kernel map" };
const MAP_CAPACITY: Def =
    Def { name: f::MAP_CAPACITY, kind: Kind::Gauge, help: "Capacity of each kernel map" };

/// Every bookkeeping family, appended to `out`.
pub(super) fn render(snap: &Snapshot, out: &mut Out<'_>) {
    events(snap, out);
    kernel(snap, out);
}

/// Events lost and delivered, violation log lines held back.
fn events(snap: &Snapshot, out: &mut Out<'_>) {
    let c = |i: u32| snap.counters[usize::try_from(i).unwrap_or(0)];
    let mut f = Family::new(out, &EVENTS_LOST);
    let name = EVENTS_LOST.name;
    for (source, n) in [
        ("conn_table_full", c(CTR_CONN_TABLE_FULL)),
        ("pair_table_full", c(CTR_STATS_TABLE_FULL)),
        ("udp_flow_table_full", c(CTR_UDP_FLOW_TABLE_FULL)),
        ("udp_pair_table_full", c(CTR_UDP_STATS_FULL)),
        ("dns_answer_unmatched", c(CTR_DNS_UNMATCHED)),
        ("violation_rate_limit", c(CTR_EVENTS_RATE_LIMITED)),
        ("violation_ringbuf_full", c(CTR_EVENTS_RINGBUF_FULL)),
        ("violation_undecodable", snap.undecodable_events),
    ] {
        let _ = writeln!(f.line(), "{name}{{source=\"{source}\"}} {n}");
    }
    let mut f = Family::new(out, &LOG_SUPPRESSED);
    let _ = writeln!(f.line(), "{} {}", LOG_SUPPRESSED.name, snap.log_suppressed);
    let mut f = Family::new(out, &EVENTS);
    let _ = writeln!(f.line(), "{}{{source=\"violation\"}} {}", EVENTS.name, c(CTR_EVENTS_SENT));
}

/// Enforce mode's unjudged connects, the live sweep, the profiled ops and the maps' fill.
fn kernel(snap: &Snapshot, out: &mut Out<'_>) {
    let c = |i: u32| snap.counters[usize::try_from(i).unwrap_or(0)];
    let mut f = Family::new(out, &ENFORCE_UNRESOLVED);
    let _ = writeln!(f.line(), "{} {}", ENFORCE_UNRESOLVED.name, c(CTR_ENFORCE_UNRESOLVED));
    let mut f = Family::new(out, &LIVE_SWEEP);
    let name = LIVE_SWEEP.name;
    let (visited, busy) = (c(CTR_SWEEP_VISITED), c(CTR_SWEEP_BUSY));
    let _ = writeln!(f.line(), "{name}{{result=\"read\"}} {}", visited.saturating_sub(busy));
    let _ = writeln!(f.line(), "{name}{{result=\"busy\"}} {busy}");
    let mut f = Family::new(out, &OP_RUNS);
    for o in &snap.ops {
        let _ = writeln!(f.line(), "{}{{op=\"{}\"}} {}", OP_RUNS.name, op_name(o.op), o.runs);
    }
    let mut f = Family::new(out, &OP_SECONDS);
    for o in &snap.ops {
        let seconds = o.ns as f64 * 1e-9;
        let _ = writeln!(f.line(), "{}{{op=\"{}\"}} {seconds}", OP_SECONDS.name, op_name(o.op));
    }
    let fill: [Valued<MapFill>; 2] =
        [(&MAP_ENTRIES, |m| m.entries), (&MAP_CAPACITY, |m| m.capacity)];
    for (def, value) in fill {
        let mut f = Family::new(out, def);
        for m in &snap.fill {
            let _ = writeln!(f.line(), "{}{{map=\"{}\"}} {}", def.name, m.map, value(m));
        }
    }
}

/// The `op` label of a profile slot: the `BPF_SOCK_OPS_*` name, lower case.
fn op_name(op: u32) -> &'static str {
    const NAMES: [&str; 16] = [
        "void",
        "timeout_init",
        "rwnd_init",
        "tcp_connect",
        "active_established",
        "passive_established",
        "needs_ecn",
        "base_rtt",
        "rto",
        "retrans",
        "state",
        "tcp_listen",
        "rtt",
        "parse_hdr_opt",
        "hdr_opt_len",
        "write_hdr_opt",
    ];
    if op == agent_common::PROFILE_STATE_CLOSE {
        return "state_close";
    }
    usize::try_from(op).ok().and_then(|i| NAMES.get(i)).copied().unwrap_or("other")
}
