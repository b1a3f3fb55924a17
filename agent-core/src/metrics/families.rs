//! Kernel snapshot -> metric families, one per metric of the contract.
use std::collections::BTreeMap;

use agent_common::{
    CELL_EXTERNAL, CTR_CONN_TABLE_FULL, CTR_ENFORCE_UNRESOLVED, CTR_EVENTS_RATE_LIMITED,
    CTR_EVENTS_RINGBUF_FULL, CTR_EVENTS_SENT, CTR_STATS_TABLE_FULL, DIR_EGRESS, FAIL_LABELS,
    HIST_BUCKETS, PairStats, VERDICT_VIOLATION, direction_label, verdict_label,
};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};

use super::Snapshot;
use crate::ids::CellIds;

/// Upper bounds (seconds) of the finite histogram buckets: kernel bucket `i` holds
/// values below 2^i µs; the last kernel bucket is `+Inf`.
pub fn bucket_bounds() -> impl Iterator<Item = f64> {
    (0..HIST_BUCKETS - 1).map(|i| (1u64 << i) as f64 * 1e-6)
}

/// Label values in a fixed order, the BTreeMap key that groups samples.
type Lv = Vec<String>;

struct Fam<T> {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    samples: BTreeMap<Lv, T>,
}

impl<T: Default> Fam<T> {
    fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Self { name, help, labels, samples: BTreeMap::new() }
    }

    fn at(&mut self, lv: Lv) -> &mut T {
        self.samples.entry(lv).or_default()
    }
}

fn labels(names: &[&str], values: &[String]) -> Vec<LabelPair> {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| {
            let mut l = LabelPair::default();
            l.set_name((*n).to_owned());
            l.set_value(v.clone());
            l
        })
        .collect()
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn scalar(fam: Fam<u64>, kind: MetricType) -> MetricFamily {
    let metrics = fam
        .samples
        .iter()
        .map(|(lv, v)| {
            let mut m = Metric::from_label(labels(fam.labels, lv));
            if kind == MetricType::COUNTER {
                let mut c = Counter::default();
                c.set_value(*v as f64);
                m.set_counter(c);
            } else {
                let mut g = Gauge::default();
                g.set_value(*v as f64);
                m.set_gauge(g);
            }
            m
        })
        .collect();
    family(fam.name, fam.help, kind, metrics)
}

#[derive(Default)]
struct Hist {
    buckets: [u64; HIST_BUCKETS],
    sum_seconds: f64,
}

fn histogram(fam: Fam<Hist>) -> MetricFamily {
    let metrics = fam
        .samples
        .iter()
        .map(|(lv, h)| {
            let mut cumulative = 0u64;
            let buckets = bucket_bounds()
                .zip(h.buckets.iter())
                .map(|(le, n)| {
                    cumulative += n;
                    let mut b = Bucket::default();
                    b.set_upper_bound(le);
                    b.set_cumulative_count(cumulative);
                    b
                })
                .collect();
            let mut hist = Histogram::default();
            hist.set_bucket(buckets);
            hist.set_sample_count(h.buckets.iter().sum());
            hist.set_sample_sum(h.sum_seconds);
            let mut m = Metric::from_label(labels(fam.labels, lv));
            m.set_histogram(hist);
            m
        })
        .collect();
    family(fam.name, fam.help, MetricType::HISTOGRAM, metrics)
}

fn add_hist(h: &mut Hist, buckets: &[u64; HIST_BUCKETS], sum_seconds: f64) {
    for (a, b) in h.buckets.iter_mut().zip(buckets) {
        *a += b;
    }
    h.sum_seconds += sum_seconds;
}

/// Every kernel-derived family of the contract.
pub fn families(snap: &Snapshot, ids: &CellIds) -> Vec<MetricFamily> {
    const PAIR_DIR_VERDICT: &[&str] = &["src_cell", "dst_cell", "direction", "verdict"];
    const PAIR_DIR: &[&str] = &["src_cell", "dst_cell", "direction"];
    const PAIR: &[&str] = &["src_cell", "dst_cell"];
    let mut opened = Fam::<u64>::new(
        "cellwatch_connections_opened_total",
        "TCP connections that reached ESTABLISHED",
        PAIR_DIR_VERDICT,
    );
    let mut closed = Fam::<u64>::new(
        "cellwatch_connections_closed_total",
        "Established TCP connections that closed",
        PAIR_DIR_VERDICT,
    );
    let mut active = Fam::<u64>::new(
        "cellwatch_connections_active",
        "Established TCP connections now open",
        PAIR_DIR,
    );
    let mut failed = Fam::<u64>::new(
        "cellwatch_connections_failed_total",
        "Connections that failed, by reason (refused, reset, timeout, other)",
        &["src_cell", "dst_cell", "reason"],
    );
    let mut violations = Fam::<u64>::new(
        "cellwatch_boundary_violations_total",
        "Connections that crossed a cell boundary against policy",
        PAIR_DIR,
    );
    let mut denied = Fam::<u64>::new(
        "cellwatch_connections_denied_total",
        "Connects refused by enforce mode",
        PAIR,
    );
    let mut sent = Fam::<u64>::new(
        "cellwatch_bytes_sent_total",
        "Bytes this node's sockets sent (and the peer acknowledged)",
        PAIR_DIR,
    );
    let mut received = Fam::<u64>::new(
        "cellwatch_bytes_received_total",
        "Bytes this node's sockets received",
        PAIR_DIR,
    );
    let mut retrans =
        Fam::<u64>::new("cellwatch_retransmits_total", "TCP segments retransmitted", PAIR_DIR);
    let mut latency = Fam::<Hist>::new(
        "cellwatch_connect_latency_seconds",
        "Client connect latency, SYN sent to established",
        PAIR,
    );
    let mut rtt = Fam::<Hist>::new(
        "cellwatch_rtt_seconds",
        "Smoothed RTT of each connection, taken at close, on the client's side (and on the \
         server's when the client is in no cell)",
        PAIR_DIR,
    );

    for (k, s) in &snap.pairs {
        let (src, dst) = (ids.name(k.src_cell).to_owned(), ids.name(k.dst_cell).to_owned());
        let dir = direction_label(k.direction).to_owned();
        let pdv = vec![src.clone(), dst.clone(), dir.clone(), verdict_label(k.verdict).to_owned()];
        let pd = vec![src.clone(), dst.clone(), dir];
        let p = vec![src, dst];
        *opened.at(pdv.clone()) += s.opened;
        *closed.at(pdv) += s.closed;
        *active.at(pd.clone()) += s.opened.saturating_sub(s.closed);
        *sent.at(pd.clone()) += s.bytes_sent;
        *received.at(pd.clone()) += s.bytes_received;
        *retrans.at(pd.clone()) += s.retransmits;
        // RTT once per connection: from the client's socket, and from the server's only
        // when the client is in no cell (no cellwatch sees it as egress). A second,
        // ingress copy would cost 30 samples per pair and say the same thing.
        if k.direction == DIR_EGRESS || k.src_cell == CELL_EXTERNAL {
            add_hist(rtt.at(pd.clone()), &s.rtt_hist, s.rtt_sum_us as f64 * 1e-6);
        }
        if k.verdict == VERDICT_VIOLATION {
            *violations.at(pd) += s.violations;
        }
        if k.direction == DIR_EGRESS {
            add_connect_side(s, &p, &mut failed, &mut latency, &mut denied);
        }
    }

    let mut lost = Fam::<u64>::new(
        "cellwatch_events_lost_total",
        "Kernel events cellwatch had to drop, by source",
        &["source"],
    );
    *lost.at(vec!["conn_table_full".into()]) = snap.counters[CTR_CONN_TABLE_FULL as usize];
    *lost.at(vec!["pair_table_full".into()]) = snap.counters[CTR_STATS_TABLE_FULL as usize];
    *lost.at(vec!["violation_rate_limit".into()]) = snap.counters[CTR_EVENTS_RATE_LIMITED as usize];
    *lost.at(vec!["violation_ringbuf_full".into()]) =
        snap.counters[CTR_EVENTS_RINGBUF_FULL as usize];
    *lost.at(vec!["violation_undecodable".into()]) = snap.undecodable_events;
    let mut delivered = Fam::<u64>::new(
        "cellwatch_events_total",
        "Kernel events delivered to the agent, by source",
        &["source"],
    );
    *delivered.at(vec!["violation".into()]) = snap.counters[CTR_EVENTS_SENT as usize];
    let mut unresolved = Fam::<u64>::new(
        "cellwatch_enforce_unresolved_total",
        "Connects enforce mode let through unjudged: an unbound socket in a network namespace \
         whose source address is not yet known, or not unique",
        &[],
    );
    *unresolved.at(vec![]) = snap.counters[CTR_ENFORCE_UNRESOLVED as usize];
    let mut entries =
        Fam::<u64>::new("cellwatch_map_entries", "Entries in each kernel map", &["map"]);
    let mut capacity =
        Fam::<u64>::new("cellwatch_map_capacity", "Capacity of each kernel map", &["map"]);
    for f in &snap.fill {
        *entries.at(vec![f.map.into()]) = f.entries;
        *capacity.at(vec![f.map.into()]) = f.capacity;
    }

    use MetricType::{COUNTER, GAUGE};
    vec![
        scalar(opened, COUNTER),
        scalar(closed, COUNTER),
        scalar(active, GAUGE),
        scalar(failed, COUNTER),
        scalar(violations, COUNTER),
        scalar(denied, COUNTER),
        scalar(sent, COUNTER),
        scalar(received, COUNTER),
        scalar(retrans, COUNTER),
        histogram(latency),
        histogram(rtt),
        scalar(lost, COUNTER),
        scalar(delivered, COUNTER),
        scalar(unresolved, COUNTER),
        scalar(entries, GAUGE),
        scalar(capacity, GAUGE),
    ]
}

/// Client-side families: failures by reason, connect latency, enforce-mode denials.
fn add_connect_side(
    s: &PairStats,
    p: &Lv,
    failed: &mut Fam<u64>,
    latency: &mut Fam<Hist>,
    denied: &mut Fam<u64>,
) {
    for (reason, n) in FAIL_LABELS.iter().zip(s.failed) {
        let mut lv = p.clone();
        lv.push((*reason).to_owned());
        *failed.at(lv) += n;
    }
    add_hist(latency.at(p.clone()), &s.latency_hist, s.latency_sum_ns as f64 * 1e-9);
    *denied.at(p.clone()) += s.denied;
}

#[cfg(test)]
mod tests;
