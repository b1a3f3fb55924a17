//! The per-(cell pair, direction) families: connections opened, closed, active, failed,
//! denied and in violation, bytes and retransmits, connect latency and RTT.
use agent_common::{Direction, Failure, Verdict, observes_rtt};

use agent_common::PairKey;

use super::{
    Detail, families as f,
    snapshot::{Snapshot, Tally, runs},
    text::{
        Bounds, Def, Family, Hist, HistNames, HistOf, Kind, Out, VERDICTS, Valued, histogram,
        latency_of, quoted, rtt_of, slot, verdict_labels,
    },
};
use crate::ids::CellIds;

const OPENED: Def = Def {
    name: f::CONNECTIONS_OPENED_TOTAL,
    kind: Kind::Counter,
    help: "TCP connections that reached ESTABLISHED",
};
const CLOSED: Def = Def {
    name: f::CONNECTIONS_CLOSED_TOTAL,
    kind: Kind::Counter,
    help: "Established TCP connections that closed",
};
const ACTIVE: Def = Def {
    name: f::CONNECTIONS_ACTIVE,
    kind: Kind::Gauge,
    help: "Established TCP connections now open",
};
const FAILED: Def = Def {
    name: f::CONNECTIONS_FAILED_TOTAL,
    kind: Kind::Counter,
    help: "Connections that failed, by reason (refused, reset, timeout, other); a pair has \
           these series from its first failure on",
};
const VIOLATIONS: Def = Def {
    name: f::BOUNDARY_VIOLATIONS_TOTAL,
    kind: Kind::Counter,
    help: "Connections (and UDP flows) that crossed a cell boundary against policy",
};
const DENIED: Def = Def {
    name: f::CONNECTIONS_DENIED_TOTAL,
    kind: Kind::Counter,
    help: "Connects refused by enforce mode",
};
const SENT: Def = Def {
    name: f::BYTES_SENT_TOTAL,
    kind: Kind::Counter,
    help: "Payload bytes this node's sockets sent (each once, acknowledged or not), open connections \
           included (at most one --live-interval behind)",
};
const RECEIVED: Def = Def {
    name: f::BYTES_RECEIVED_TOTAL,
    kind: Kind::Counter,
    help: "Payload bytes this node's sockets received, open connections included (at most one \
           --live-interval behind)",
};
const RETRANSMITS: Def = Def {
    name: f::RETRANSMITS_TOTAL,
    kind: Kind::Counter,
    help: "TCP segments retransmitted, open connections included",
};
const LATENCY: Def = Def {
    name: f::CONNECT_LATENCY_SECONDS,
    kind: Kind::Histogram,
    help: "Client connect latency, SYN sent to established",
};
const RTT: Def = Def {
    name: f::RTT_SECONDS,
    kind: Kind::Histogram,
    help: "Smoothed RTT of each connection: one sample per open connection per \
           --live-interval and one at its close, on the client's side (and on the server's \
           when the client is in no cell)",
};

/// What one (src, dst, direction) holds, summed over verdicts where a family has none.
/// Histograms stay in the snapshot (`tally.span` points at the entries): copied, 20,000
/// pairs' would double a large scrape's memory.
#[derive(Default)]
struct Dir {
    tally: Tally,
    violations: u64,
    retrans: u64,
    // Client side only (egress).
    failed: [u64; Failure::REASONS],
    denied: u64,
}

impl Dir {
    fn violating(&self) -> bool {
        self.has(Verdict::VIOLATION)
    }

    fn has(&self, verdict: Verdict) -> bool {
        self.tally.has[slot(verdict)]
    }

    /// One histogram of the pair, summed over its keys.
    fn hist(&self, snap: &Snapshot, order: &[usize], which: HistOf) -> Hist {
        let mut h = Hist::default();
        for i in &order[self.tally.span.0..self.tally.span.1] {
            let (buckets, sum) = which(&snap.pairs[*i].1);
            h.add(buckets, sum);
        }
        h
    }
}

/// (src cell id, dst cell id, direction); the dst is [`ANY_CELL`] when the families are
/// per cell ([`Detail::Cells`]).
type PairDir = (u32, u32, Direction);

/// The destination of a row summed over destination cells.
const ANY_CELL: u32 = u32::MAX;

/// A row and its labels: `src_cell="a",dst_cell="b"`, and the same with
/// `,direction="…"`.
type Row<'a> = (&'a PairDir, &'a Dir, &'a (String, String));

/// The snapshot's indices in key order (keys sort by source, destination, direction,
/// verdict and service, so a (pair, direction)'s keys are neighbours; the kernel's
/// snapshot comes sorted, any other is sorted here), and the rows by (pair, direction).
fn group(snap: &Snapshot, per_pair: bool) -> (Vec<usize>, Vec<(PairDir, Dir)>) {
    let mut order: Vec<usize> = (0..snap.pairs.len()).collect();
    let dst = |k: &PairKey| if per_pair { k.dst_cell } else { ANY_CELL };
    if !per_pair {
        // A source's keys to every destination become neighbours.
        order.sort_by_key(|&i| {
            let k = &snap.pairs[i].0;
            (k.src_cell, k.direction(), *k)
        });
    } else if !snap.pairs.is_sorted_by_key(|(k, _)| *k) {
        order.sort_by_key(|&i| snap.pairs[i].0);
    }
    let out = runs(
        snap,
        &order,
        |k| (k.src_cell, dst(k), k.direction()),
        |d: &mut Dir| &mut d.tally,
        |d, k, s| {
            d.retrans += s.retransmits;
            if k.verdict() == Verdict::VIOLATION {
                d.violations += s.violations;
            }
            if k.direction() == Direction::EGRESS {
                for (a, b) in d.failed.iter_mut().zip(s.failed) {
                    *a += b;
                }
                d.denied += s.denied;
            }
        },
    );
    (order, out)
}

/// Every pair family, appended to `out`.
pub(super) fn render(
    snap: &Snapshot,
    ids: &CellIds,
    bounds: &Bounds<'_>,
    detail: Detail,
    out: &mut Out<'_>,
) {
    let (order, groups) = group(snap, detail.per_pair());
    let labels: Vec<(String, String)> = groups
        .iter()
        .map(|((src, dst, dir), _)| {
            let pair = if *dst == ANY_CELL {
                format!("src_cell={}", quoted(ids.name(*src)))
            } else {
                format!("src_cell={},dst_cell={}", quoted(ids.name(*src)), quoted(ids.name(*dst)))
            };
            let with_dir = format!("{pair},direction=\"{}\"", dir.label());
            (pair, with_dir)
        })
        .collect();
    let rows: Vec<Row<'_>> = groups.iter().zip(&labels).map(|((k, d), l)| (k, d, l)).collect();
    connections(&rows, out);
    scalars(&rows, out);
    histograms(snap, &order, &rows, bounds, detail, out);
}

/// Opened and closed (by verdict), active, failed (by reason), violations and denied.
fn connections(rows: &[Row<'_>], out: &mut Out<'_>) {
    let verdicts = verdict_labels();
    for (def, closed) in [(&OPENED, false), (&CLOSED, true)] {
        let mut f = Family::new(out, def);
        for (_, d, (_, pd)) in rows {
            let counts = if closed { d.tally.closed } else { d.tally.opened };
            for v in VERDICTS {
                // A verdict no connection of the pair got has no series.
                if d.has(v) {
                    f.sample(pd, &verdicts[slot(v)], counts[slot(v)]);
                }
            }
        }
    }
    let mut f = Family::new(out, &ACTIVE);
    for (_, d, (_, pd)) in rows {
        f.sample(pd, "", d.tally.active());
    }
    let mut f = Family::new(out, &FAILED);
    for ((_, _, dir), d, (p, _)) in rows {
        if *dir == Direction::EGRESS && d.failed.iter().any(|n| *n > 0) {
            for (reason, n) in Failure::LABELS.iter().zip(d.failed) {
                f.sample(p, &format!("reason=\"{reason}\""), n);
            }
        }
    }
    let mut f = Family::new(out, &VIOLATIONS);
    for (_, d, (_, pd)) in rows {
        if d.violating() {
            f.sample(pd, "", d.violations);
        }
    }
    let mut f = Family::new(out, &DENIED);
    for ((_, _, dir), d, (p, _)) in rows {
        // From the first refusal on: audit mode refuses nothing, nor does enforce mode for
        // a source cell outside `enforce_cells`.
        if *dir == Direction::EGRESS && d.denied > 0 {
            f.sample(p, "", d.denied);
        }
    }
}

/// Bytes both ways and retransmits: one series per (pair, direction).
fn scalars(rows: &[Row<'_>], out: &mut Out<'_>) {
    let scalars: [Valued<Dir>; 3] = [
        (&SENT, |d| d.tally.sent),
        (&RECEIVED, |d| d.tally.received),
        (&RETRANSMITS, |d| d.retrans),
    ];
    for (def, value) in scalars {
        let mut f = Family::new(out, def);
        for (_, d, (_, pd)) in rows {
            f.sample(pd, "", value(d));
        }
    }
}

/// Connect latency (client side) and RTT (once per connection).
fn histograms(
    snap: &Snapshot,
    order: &[usize],
    rows: &[Row<'_>],
    bounds: &Bounds<'_>,
    detail: Detail,
    out: &mut Out<'_>,
) {
    let latency = HistNames::of(LATENCY.name);
    let mut f = Family::new(out, &LATENCY);
    for ((_, _, dir), d, (p, _)) in rows {
        if *dir != Direction::EGRESS || !detail.pair_histograms(d.violating()) {
            continue;
        }
        let h = d.hist(snap, order, latency_of);
        if h.count() > 0 {
            histogram(f.line(), &latency, p, &h, bounds);
        }
    }
    let rtt = HistNames::of(RTT.name);
    let mut f = Family::new(out, &RTT);
    for ((src, _, dir), d, (_, pd)) in rows {
        // RTT once per connection: from the client's socket, and from the server's only
        // when the client is in no cell (no cellwatch sees it as egress).
        if !observes_rtt(*dir, *src) || !detail.pair_histograms(d.violating()) {
            continue;
        }
        let h = d.hist(snap, order, rtt_of);
        if h.count() > 0 {
            histogram(f.line(), &rtt, pd, &h, bounds);
        }
    }
}
