//! The per-service families: connections, bytes, failures and connect latency per
//! (client cell, service), and the catalog of cells and services the config names, so
//! dashboards and rules can tell a global cell and the cell a service lies in.
use agent_common::{Direction, Failure, NO_SERVICE};

use super::{
    Detail, families as f,
    snapshot::{Snapshot, Tally, runs},
    text::{
        Bounds, Def, Family, Hist, HistNames, Kind, Out, VERDICTS, Valued, histogram, latency_of,
        quoted, slot, verdict_labels,
    },
};
use crate::ids::CellIds;

const CELL_INFO: Def = Def {
    name: f::CELL_INFO,
    kind: Kind::Gauge,
    help: "Each configured cell, and whether it is a global cell (of shared services); \
           always 1",
};
const SERVICE_INFO: Def = Def {
    name: f::SERVICE_INFO,
    kind: Kind::Gauge,
    help: "Each configured service and the cell it lies in; always 1",
};
const OPENED: Def = Def {
    name: f::SERVICE_CONNECTIONS_OPENED_TOTAL,
    kind: Kind::Counter,
    help: "TCP connections to a configured service that reached ESTABLISHED, per client cell",
};
const ACTIVE: Def = Def {
    name: f::SERVICE_CONNECTIONS_ACTIVE,
    kind: Kind::Gauge,
    help: "Established TCP connections to a configured service now open, per client cell",
};
const FAILED: Def = Def {
    name: f::SERVICE_CONNECTIONS_FAILED_TOTAL,
    kind: Kind::Counter,
    help: "Connections to a configured service that failed, by reason, per client cell \
           (client side; from the first failure on)",
};
const SENT: Def = Def {
    name: f::SERVICE_BYTES_SENT_TOTAL,
    kind: Kind::Counter,
    help: "Payload bytes this node's sockets sent on connections to a configured service",
};
const RECEIVED: Def = Def {
    name: f::SERVICE_BYTES_RECEIVED_TOTAL,
    kind: Kind::Counter,
    help: "Payload bytes this node's sockets received on connections to a configured service",
};
const LATENCY: Def = Def {
    name: f::SERVICE_CONNECT_LATENCY_SECONDS,
    kind: Kind::Histogram,
    help: "Client connect latency to a configured service, SYN sent to established",
};

/// What one (client cell, service, direction) holds, over verdicts.
#[derive(Default)]
struct Row {
    tally: Tally,
    failed: [u64; Failure::REASONS],
}

/// (client cell id, service id, direction)
type Key = (u32, u16, Direction);

/// The rows and their labels: `src_cell="a",service="s"`, and the same with
/// `,direction="…"`.
type Labelled<'a> = (&'a (Key, Row), &'a (String, String));

/// The service keys' indices in (client, service, direction, verdict) order, and the rows
/// by (client, service, direction).
fn group(snap: &Snapshot) -> (Vec<usize>, Vec<(Key, Row)>) {
    let mut order: Vec<usize> =
        (0..snap.pairs.len()).filter(|&i| snap.pairs[i].0.service != NO_SERVICE).collect();
    let key = |i: usize| {
        let k = &snap.pairs[i].0;
        (k.src_cell, k.service, k.direction(), k.verdict())
    };
    order.sort_by_key(|&i| key(i));
    let rows = runs(
        snap,
        &order,
        |k| (k.src_cell, k.service, k.direction()),
        |r: &mut Row| &mut r.tally,
        |r, _, s| {
            for (a, b) in r.failed.iter_mut().zip(s.failed) {
                *a += b;
            }
        },
    );
    (order, rows)
}

/// The catalog, then every service family, appended to `out`.
pub(super) fn render(
    snap: &Snapshot,
    ids: &CellIds,
    bounds: &Bounds<'_>,
    detail: Detail,
    out: &mut Out<'_>,
) {
    catalog(snap, ids, out);
    let (order, rows) = group(snap);
    let labels: Vec<(String, String)> = rows
        .iter()
        .map(|((src, svc, dir), _)| {
            let service = ids.service_name(*svc).unwrap_or("unknown");
            let base = format!("src_cell={},service={}", quoted(ids.name(*src)), quoted(service));
            let with_dir = format!("{base},direction=\"{}\"", dir.label());
            (base, with_dir)
        })
        .collect();
    let rows: Vec<Labelled<'_>> = rows.iter().zip(&labels).collect();
    connections(&rows, out);
    bytes(&rows, out);
    if detail.service_histograms() {
        latency(snap, &order, &rows, bounds, out);
    }
}

/// Opened (by verdict), active and failed (by reason).
fn connections(rows: &[Labelled<'_>], out: &mut Out<'_>) {
    let verdicts = verdict_labels();
    let mut f = Family::new(out, &OPENED);
    for ((_, r), (_, pd)) in rows {
        for v in VERDICTS {
            if r.tally.has[slot(v)] {
                f.sample(pd, &verdicts[slot(v)], r.tally.opened[slot(v)]);
            }
        }
    }
    let mut f = Family::new(out, &ACTIVE);
    for ((_, r), (_, pd)) in rows {
        f.sample(pd, "", r.tally.active());
    }
    let mut f = Family::new(out, &FAILED);
    for (((_, _, dir), r), (p, _)) in rows {
        if *dir == Direction::EGRESS && r.failed.iter().any(|n| *n > 0) {
            for (reason, n) in Failure::LABELS.iter().zip(r.failed) {
                f.sample(p, &format!("reason=\"{reason}\""), n);
            }
        }
    }
}

/// Bytes both ways.
fn bytes(rows: &[Labelled<'_>], out: &mut Out<'_>) {
    let both: [Valued<Row>; 2] = [(&SENT, |r| r.tally.sent), (&RECEIVED, |r| r.tally.received)];
    for (def, value) in both {
        let mut f = Family::new(out, def);
        for ((_, r), (_, pd)) in rows {
            f.sample(pd, "", value(r));
        }
    }
}

/// Connect latency, client side.
fn latency(
    snap: &Snapshot,
    order: &[usize],
    rows: &[Labelled<'_>],
    bounds: &Bounds<'_>,
    out: &mut Out<'_>,
) {
    let names = HistNames::of(LATENCY.name);
    let mut f = Family::new(out, &LATENCY);
    for (((_, _, dir), r), (p, _)) in rows {
        if *dir != Direction::EGRESS {
            continue;
        }
        let mut h = Hist::default();
        for i in &order[r.tally.span.0..r.tally.span.1] {
            let (buckets, sum) = latency_of(&snap.pairs[*i].1);
            h.add(buckets, sum);
        }
        if h.count() > 0 {
            histogram(f.line(), &names, p, &h, bounds);
        }
    }
}

/// `cellwatch_cell_info` and `cellwatch_service_info`: one series per configured cell
/// and service, always 1.
fn catalog(snap: &Snapshot, ids: &CellIds, out: &mut Out<'_>) {
    let mut f = Family::new(out, &CELL_INFO);
    for (id, global) in &snap.catalog.cells {
        f.sample(&format!("cell={},global=\"{global}\"", quoted(ids.name(*id))), "", 1);
    }
    let mut f = Family::new(out, &SERVICE_INFO);
    for (_, service, cell) in &snap.catalog.services {
        f.sample(&format!("service={},cell={}", quoted(service), quoted(ids.name(*cell))), "", 1);
    }
}
