//! The per-service families: connections, bytes, failures and connect latency per
//! (client cell, service), and the catalog of cells and services the config names, so
//! dashboards and rules can tell a global cell and the cell a service lies in.
use agent_common::{
    DIR_EGRESS, FAIL_LABELS, FAIL_REASONS, NO_SERVICE, VERDICT_VIOLATION, direction_label,
};

use super::{
    Snapshot,
    text::{Bounds, Family, Hist, HistNames, Out, histogram, latency_of, quoted, sample},
};
use crate::ids::CellIds;

/// What one (client cell, service, direction) holds, over verdicts.
#[derive(Default)]
struct Row {
    opened: [u64; 2],
    closed: [u64; 2],
    has: [bool; 2],
    sent: u64,
    received: u64,
    failed: [u64; FAIL_REASONS],
    /// Its keys: `order[span.0..span.1]`.
    span: (usize, usize),
}

/// (client cell id, service id, direction)
type Key = (u32, u16, u8);

pub(super) fn render(snap: &Snapshot, ids: &CellIds, bounds: &Bounds<'_>, out: &mut Out<'_>) {
    catalog(snap, ids, out);
    let mut order: Vec<usize> =
        (0..snap.pairs.len()).filter(|&i| snap.pairs[i].0.service != NO_SERVICE).collect();
    let key = |i: usize| {
        let k = &snap.pairs[i].0;
        (k.src_cell, k.service, k.direction, k.verdict)
    };
    order.sort_by_key(|&i| key(i));
    let mut rows: Vec<(Key, Row)> = Vec::new();
    for (at, &i) in order.iter().enumerate() {
        let (k, s) = &snap.pairs[i];
        let rk = (k.src_cell, k.service, k.direction);
        if rows.last().is_none_or(|(last, _)| *last != rk) {
            rows.push((rk, Row { span: (at, at), ..Row::default() }));
        }
        let Some((_, r)) = rows.last_mut() else { continue };
        r.span.1 = at + 1;
        let v = usize::from(k.verdict == VERDICT_VIOLATION);
        r.has[v] = true;
        r.opened[v] += s.opened;
        r.closed[v] += s.closed;
        r.sent += s.bytes_sent;
        r.received += s.bytes_received;
        for (a, b) in r.failed.iter_mut().zip(s.failed) {
            *a += b;
        }
    }
    let labels: Vec<(String, String)> = rows
        .iter()
        .map(|((src, svc, dir), _)| {
            let service = ids.service_name(*svc).unwrap_or("unknown");
            let base = format!("src_cell={},service={}", quoted(ids.name(*src)), quoted(service));
            let with_dir = format!("{base},direction=\"{}\"", direction_label(*dir));
            (base, with_dir)
        })
        .collect();

    let name = "cellwatch_service_connections_opened_total";
    let help = "TCP connections to a configured service that reached ESTABLISHED, per client cell";
    let mut f = Family::new(out, name, "counter", help);
    for ((_, r), (_, pd)) in rows.iter().zip(&labels) {
        for (v, verdict) in [(0, "verdict=\"allowed\""), (1, "verdict=\"violation\"")] {
            if r.has[v] {
                sample(f.line(), name, pd, verdict, r.opened[v]);
            }
        }
    }
    let name = "cellwatch_service_connections_active";
    let help = "Established TCP connections to a configured service now open, per client cell";
    let mut f = Family::new(out, name, "gauge", help);
    for ((_, r), (_, pd)) in rows.iter().zip(&labels) {
        let active = (r.opened[0] + r.opened[1]).saturating_sub(r.closed[0] + r.closed[1]);
        sample(f.line(), name, pd, "", active);
    }
    let name = "cellwatch_service_connections_failed_total";
    let help = "Connections to a configured service that failed, by reason, per client cell \
                (client side; from the first failure on)";
    let mut f = Family::new(out, name, "counter", help);
    for (((_, _, dir), r), (p, _)) in rows.iter().zip(&labels) {
        if *dir == DIR_EGRESS && r.failed.iter().any(|n| *n > 0) {
            for (reason, n) in FAIL_LABELS.iter().zip(r.failed) {
                sample(f.line(), name, p, &format!("reason=\"{reason}\""), n);
            }
        }
    }
    for (name, help, sent) in [
        (
            "cellwatch_service_bytes_sent_total",
            "Payload bytes this node's sockets sent on connections to a configured service",
            true,
        ),
        (
            "cellwatch_service_bytes_received_total",
            "Payload bytes this node's sockets received on connections to a configured service",
            false,
        ),
    ] {
        let mut f = Family::new(out, name, "counter", help);
        for ((_, r), (_, pd)) in rows.iter().zip(&labels) {
            sample(f.line(), name, pd, "", if sent { r.sent } else { r.received });
        }
    }
    let name = "cellwatch_service_connect_latency_seconds";
    let latency = HistNames::of(name);
    let help = "Client connect latency to a configured service, SYN sent to established";
    let mut f = Family::new(out, name, "histogram", help);
    for (((_, _, dir), r), (p, _)) in rows.iter().zip(&labels) {
        if *dir != DIR_EGRESS {
            continue;
        }
        let mut h = Hist::default();
        for i in &order[r.span.0..r.span.1] {
            let (buckets, sum) = latency_of(&snap.pairs[*i].1);
            h.add(buckets, sum);
        }
        if h.count() > 0 {
            histogram(f.line(), &latency, p, &h, bounds);
        }
    }
}

/// `cellwatch_cell_info` and `cellwatch_service_info`: one series per configured cell
/// and service, always 1.
fn catalog(snap: &Snapshot, ids: &CellIds, out: &mut Out<'_>) {
    let name = "cellwatch_cell_info";
    let help = "Each configured cell, and whether it is a global cell (of shared services); \
                always 1";
    let mut f = Family::new(out, name, "gauge", help);
    for (id, global) in &snap.catalog.cells {
        let labels = format!("cell={},global=\"{global}\"", quoted(ids.name(*id)));
        sample(f.line(), name, &labels, "", 1);
    }
    let name = "cellwatch_service_info";
    let help = "Each configured service and the cell it lies in; always 1";
    let mut f = Family::new(out, name, "gauge", help);
    for (_, service, cell) in &snap.catalog.services {
        let labels = format!("service={},cell={}", quoted(service), quoted(ids.name(*cell)));
        sample(f.line(), name, &labels, "", 1);
    }
}
