//! The UDP and DNS families: flows opened (by verdict), datagrams and bytes each way and
//! sends refused, per (cell pair, direction) with the TCP families' label names; flows
//! per (client cell, UDP service); DNS answers by response code and their latency per
//! (client cell, service). UDP violations are in `cellwatch_boundary_violations_total`
//! (the kernel counts them in the pair table), so they have no family here.
use std::collections::BTreeMap;

use agent_common::{Direction, HIST_BUCKETS, NO_SERVICE, UdpStats, rcode_label};

use super::{
    Detail, families as f,
    snapshot::Snapshot,
    text::{
        Bounds, Def, Family, Hist, HistNames, Kind, Out, VERDICTS, Valued, histogram, quoted, slot,
    },
};
use crate::ids::CellIds;

const OPENED: Def = Def {
    name: f::UDP_FLOWS_OPENED_TOTAL,
    kind: Kind::Counter,
    help: "UDP flows (5-tuples) that began: a first datagram, or one after --udp-idle of \
           silence; the client is the end that sent first",
};
const DGRAMS_SENT: Def = Def {
    name: f::UDP_DATAGRAMS_SENT_TOTAL,
    kind: Kind::Counter,
    help: "UDP datagrams this node's sockets sent",
};
const DGRAMS_RECEIVED: Def = Def {
    name: f::UDP_DATAGRAMS_RECEIVED_TOTAL,
    kind: Kind::Counter,
    help: "UDP datagrams this node's sockets received",
};
const BYTES_SENT: Def = Def {
    name: f::UDP_BYTES_SENT_TOTAL,
    kind: Kind::Counter,
    help: "UDP payload bytes this node's sockets sent",
};
const BYTES_RECEIVED: Def = Def {
    name: f::UDP_BYTES_RECEIVED_TOTAL,
    kind: Kind::Counter,
    help: "UDP payload bytes this node's sockets received",
};
const DENIED: Def = Def {
    name: f::UDP_DENIED_TOTAL,
    kind: Kind::Counter,
    help: "UDP sends refused by enforce mode (the sender got EPERM)",
};
const SERVICE_OPENED: Def = Def {
    name: f::UDP_SERVICE_FLOWS_OPENED_TOTAL,
    kind: Kind::Counter,
    help: "UDP flows to a configured UDP service that began, per client cell",
};
const DNS_QUERIES: Def = Def {
    name: f::DNS_QUERIES_TOTAL,
    kind: Kind::Counter,
    help: "DNS queries to a configured service on port 53 that were answered, by the \
           answer's response code, per client cell (counted on the client's node)",
};
const DNS_LATENCY: Def = Def {
    name: f::DNS_LATENCY_SECONDS,
    kind: Kind::Histogram,
    help: "DNS query-to-answer latency, per client cell and service (client side)",
};

/// What one (src, dst or service, direction) adds up to over its keys.
#[derive(Default)]
struct Sums {
    opened: [u64; 2],
    has: [bool; 2],
    stats: UdpStats,
}

/// Every UDP and DNS family, appended to `out`.
pub(super) fn render(
    snap: &Snapshot,
    ids: &CellIds,
    bounds: &Bounds<'_>,
    detail: Detail,
    out: &mut Out<'_>,
) {
    pairs(snap, ids, detail, out);
    services(snap, ids, out);
    dns(snap, ids, bounds, detail, out);
}

/// The destination of a row summed over destination cells (`--metrics-detail cells`).
const ANY_CELL: u32 = u32::MAX;

fn pairs(snap: &Snapshot, ids: &CellIds, detail: Detail, out: &mut Out<'_>) {
    let mut rows: BTreeMap<(u32, u32, u8), Sums> = BTreeMap::new();
    for (k, s) in &snap.udp {
        let dst = if detail.per_pair() { k.dst_cell } else { ANY_CELL };
        add(rows.entry((k.src_cell, dst, k.direction)).or_default(), k.verdict(), s);
    }
    let labelled: Vec<(String, String, bool, &Sums)> = rows
        .iter()
        .map(|((src, dst, dir), s)| {
            let pair = if *dst == ANY_CELL {
                format!("src_cell={}", quoted(ids.name(*src)))
            } else {
                format!("src_cell={},dst_cell={}", quoted(ids.name(*src)), quoted(ids.name(*dst)))
            };
            let with_dir = format!("{pair},direction=\"{}\"", Direction(*dir).label());
            (pair, with_dir, Direction(*dir) == Direction::EGRESS, s)
        })
        .collect();
    let mut f = Family::new(out, &OPENED);
    for (_, pd, _, s) in &labelled {
        verdicts(&mut f, pd, s);
    }
    let scalars: [Valued<UdpStats>; 4] = [
        (&DGRAMS_SENT, |s| s.datagrams_sent),
        (&DGRAMS_RECEIVED, |s| s.datagrams_received),
        (&BYTES_SENT, |s| s.bytes_sent),
        (&BYTES_RECEIVED, |s| s.bytes_received),
    ];
    for (def, value) in scalars {
        let mut f = Family::new(out, def);
        for (_, pd, _, s) in &labelled {
            f.sample(pd, "", value(&s.stats));
        }
    }
    // From the first refusal on, client side only (as the TCP family).
    let mut denied: BTreeMap<&str, u64> = BTreeMap::new();
    for (p, _, egress, s) in &labelled {
        if *egress && s.stats.denied > 0 {
            *denied.entry(p.as_str()).or_default() += s.stats.denied;
        }
    }
    let mut f = Family::new(out, &DENIED);
    for (p, n) in denied {
        f.sample(p, "", n);
    }
}

fn add(row: &mut Sums, verdict: agent_common::Verdict, s: &UdpStats) {
    let v = slot(verdict);
    row.has[v] = true;
    row.opened[v] += s.opened;
    row.stats.merge(s);
}

/// One series per verdict a row's flows got.
fn verdicts(f: &mut Family<'_, '_>, labels: &str, s: &Sums) {
    for v in VERDICTS {
        if s.has[slot(v)] {
            f.sample(labels, &format!("verdict=\"{}\"", v.label()), s.opened[slot(v)]);
        }
    }
}

fn services(snap: &Snapshot, ids: &CellIds, out: &mut Out<'_>) {
    let mut rows: BTreeMap<(u32, u16, u8), Sums> = BTreeMap::new();
    for (k, s) in snap.udp.iter().filter(|(k, _)| k.service != NO_SERVICE) {
        add(rows.entry((k.src_cell, k.service, k.direction)).or_default(), k.verdict(), s);
    }
    let mut f = Family::new(out, &SERVICE_OPENED);
    for ((src, svc, dir), s) in &rows {
        let service = ids.service_name(*svc).unwrap_or("unknown");
        let labels = format!(
            "src_cell={},service={},direction=\"{}\"",
            quoted(ids.name(*src)),
            quoted(service),
            Direction(*dir).label()
        );
        verdicts(&mut f, &labels, s);
    }
}

fn dns(snap: &Snapshot, ids: &CellIds, bounds: &Bounds<'_>, detail: Detail, out: &mut Out<'_>) {
    let base = |src: u32, svc: u16| {
        let service = ids.service_name(svc).unwrap_or("unknown");
        format!("src_cell={},service={}", quoted(ids.name(src)), quoted(service))
    };
    // Response codes above 5 share the label `other`.
    let mut answers: BTreeMap<(u32, u16, &str), u64> = BTreeMap::new();
    let mut latency: BTreeMap<(u32, u16), Hist> = BTreeMap::new();
    for (k, s) in &snap.dns {
        *answers.entry((k.src_cell, k.service, rcode_label(k.rcode))).or_default() += s.answers;
        let buckets: &[u64; HIST_BUCKETS] = &s.latency_hist;
        latency
            .entry((k.src_cell, k.service))
            .or_default()
            .add(buckets, s.latency_sum_ns as f64 * 1e-9);
    }
    let mut f = Family::new(out, &DNS_QUERIES);
    for ((src, svc, rcode), n) in &answers {
        f.sample(&base(*src, *svc), &format!("rcode=\"{rcode}\""), *n);
    }
    if !detail.service_histograms() {
        return;
    }
    let names = HistNames::of(DNS_LATENCY.name);
    let mut f = Family::new(out, &DNS_LATENCY);
    for ((src, svc), h) in &latency {
        if h.count() > 0 {
            histogram(f.line(), &names, &base(*src, *svc), h, bounds);
        }
    }
}
