//! A kernel snapshot as the text exposition of the contract's metrics, written straight
//! into a buffer handed on in chunks: no intermediate metric objects and no whole copy of
//! the text, so a scrape of 10,000 cell pairs costs one pass and little memory. Pure: the
//! same snapshot and names always render the same text.
use std::fmt::Write as _;

use agent_common::{
    CELL_EXTERNAL, CTR_CONN_TABLE_FULL, CTR_ENFORCE_UNRESOLVED, CTR_EVENTS_RATE_LIMITED,
    CTR_EVENTS_RINGBUF_FULL, CTR_EVENTS_SENT, CTR_STATS_TABLE_FULL, CTR_SWEEP_BUSY,
    CTR_SWEEP_VISITED, DIR_EGRESS, DIR_INGRESS, FAIL_LABELS, FAIL_REASONS, HIST_BUCKETS, PairStats,
    VERDICT_ALLOWED, VERDICT_VIOLATION, direction_label,
};

use super::{Buckets, Snapshot};
use crate::ids::CellIds;

/// What one (src, dst, direction) holds, summed over verdicts where a family has none.
/// Histograms stay in the snapshot (`keys` points at the entries): copied, 20,000 pairs'
/// would double a large scrape's memory.
#[derive(Default)]
struct Dir {
    opened: [u64; 2],
    closed: [u64; 2],
    violations: u64,
    sent: u64,
    received: u64,
    retrans: u64,
    // Client side only (egress).
    failed: [u64; FAIL_REASONS],
    denied: u64,
    /// Which verdicts (allowed, violation) have a key: each gets its series.
    has: [bool; 2],
    /// Its keys (by verdict and service): `order[span.0..span.1]`.
    span: (usize, usize),
}

impl Dir {
    fn violating(&self) -> bool {
        self.has[1]
    }

    fn has(&self, verdict: u8) -> bool {
        self.has[usize::from(verdict == VERDICT_VIOLATION)]
    }

    /// One histogram of the pair, summed over its keys.
    fn hist(&self, snap: &Snapshot, order: &[usize], which: HistOf) -> Hist {
        let mut h = Hist::default();
        for i in &order[self.span.0..self.span.1] {
            let (buckets, sum) = which(&snap.pairs[*i].1);
            h.add(buckets, sum);
        }
        h
    }
}

/// Which histogram of a pair's statistics, with its sum in seconds.
pub(super) type HistOf = fn(&PairStats) -> (&[u64; HIST_BUCKETS], f64);

pub(super) fn latency_of(s: &PairStats) -> (&[u64; HIST_BUCKETS], f64) {
    (&s.latency_hist, s.latency_sum_ns as f64 * 1e-9)
}

pub(super) fn rtt_of(s: &PairStats) -> (&[u64; HIST_BUCKETS], f64) {
    (&s.rtt_hist, s.rtt_sum_us as f64 * 1e-6)
}

pub(super) struct Hist {
    buckets: [u64; HIST_BUCKETS],
    sum_seconds: f64,
}

impl Default for Hist {
    fn default() -> Self {
        Self { buckets: [0; HIST_BUCKETS], sum_seconds: 0.0 }
    }
}

impl Hist {
    pub(super) fn add(&mut self, buckets: &[u64; HIST_BUCKETS], sum_seconds: f64) {
        for (a, b) in self.buckets.iter_mut().zip(buckets) {
            *a += b;
        }
        self.sum_seconds += sum_seconds;
    }

    pub(super) fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// (src cell id, dst cell id, direction)
type PairDir = (u32, u32, u8);

/// A per-(pair, direction) counter family: name, help, and its value.
type Scalar = (&'static str, &'static str, fn(&Dir) -> u64);

/// The snapshot's indices in key order (keys sort by source, destination, direction,
/// verdict and service, so a (pair, direction)'s keys are neighbours; the kernel's
/// snapshot comes sorted, any other is sorted here), and the rows by (pair, direction).
fn group(snap: &Snapshot) -> (Vec<usize>, Vec<(PairDir, Dir)>) {
    let mut order: Vec<usize> = (0..snap.pairs.len()).collect();
    if !snap.pairs.is_sorted_by_key(|(k, _)| *k) {
        order.sort_by_key(|&i| snap.pairs[i].0);
    }
    let mut out: Vec<(PairDir, Dir)> = Vec::new();
    for (at, &i) in order.iter().enumerate() {
        let (k, s) = &snap.pairs[i];
        let pd = (k.src_cell, k.dst_cell, k.direction);
        if out.last().is_none_or(|(last, _)| *last != pd) {
            out.push((pd, Dir { span: (at, at), ..Dir::default() }));
        }
        let Some((_, d)) = out.last_mut() else { continue };
        d.span.1 = at + 1;
        let v = usize::from(k.verdict == VERDICT_VIOLATION);
        d.has[v] = true;
        d.opened[v] += s.opened;
        d.closed[v] += s.closed;
        d.sent += s.bytes_sent;
        d.received += s.bytes_received;
        d.retrans += s.retransmits;
        if k.verdict == VERDICT_VIOLATION {
            d.violations += s.violations;
        }
        if k.direction == DIR_EGRESS {
            for (a, b) in d.failed.iter_mut().zip(s.failed) {
                *a += b;
            }
            d.denied += s.denied;
        }
    }
    (order, out)
}

/// One sample line: `name{labels[,extra]} value`, written piece by piece (a scrape of
/// 10,000 pairs is 400,000 of them).
pub(super) fn sample(out: &mut String, name: &str, labels: &str, extra: &str, value: u64) {
    out.push_str(name);
    out.push('{');
    out.push_str(labels);
    if !extra.is_empty() {
        out.push(',');
        out.push_str(extra);
    }
    out.push_str("} ");
    out.push_str(itoa::Buffer::new().format(value));
    out.push('\n');
}

/// Label values as they appear in the text, quoted and escaped.
pub(super) fn quoted(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// About how much text [`render_chunked`] hands on at a time.
const CHUNK: usize = 64 * 1024;

/// Where the text goes: a buffer, handed to `drain` (when there is one) whenever it
/// holds `CHUNK` bytes or more at the start of a line, so every chunk ends a line.
pub(super) struct Out<'d> {
    buf: String,
    drain: Option<&'d mut dyn FnMut(&str)>,
}

impl Out<'_> {
    /// The buffer, about to take one more line.
    fn line(&mut self) -> &mut String {
        if self.buf.len() >= CHUNK
            && let Some(drain) = self.drain.as_mut()
        {
            drain(&self.buf);
            self.buf.clear();
        }
        &mut self.buf
    }
}

/// One family: its `# HELP` and `# TYPE` lines go out before its first sample, and not
/// at all when it has none (no traffic yet).
pub(super) struct Family<'o, 'd> {
    out: &'o mut Out<'d>,
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    started: bool,
}

impl<'o, 'd> Family<'o, 'd> {
    pub(super) fn new(
        out: &'o mut Out<'d>,
        name: &'static str,
        kind: &'static str,
        help: &'static str,
    ) -> Self {
        Self { out, name, kind, help, started: false }
    }

    /// The buffer to write one sample line into, after the header if it is the first.
    pub(super) fn line(&mut self) -> &mut String {
        let out = self.out.line();
        if !self.started {
            self.started = true;
            let (name, kind, help) = (self.name, self.kind, self.help);
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        }
        out
    }
}

/// Every kernel-derived family of the contract, as text, appended to `out`.
pub fn render(snap: &Snapshot, ids: &CellIds, buckets: &Buckets, out: &mut String) {
    let mut o = Out { buf: std::mem::take(out), drain: None };
    render_into(snap, ids, buckets, &mut o);
    *out = o.buf;
}

/// As [`render`], the text handed to `drain` in chunks of about 64 KiB, each ending a
/// line: what a scrape holds at once is a chunk, not the whole text.
pub fn render_chunked(
    snap: &Snapshot,
    ids: &CellIds,
    buckets: &Buckets,
    drain: &mut dyn FnMut(&str),
) {
    let mut o = Out { buf: String::with_capacity(CHUNK + 4096), drain: Some(drain) };
    render_into(snap, ids, buckets, &mut o);
    if let Some(drain) = o.drain {
        drain(&o.buf);
    }
}

fn render_into(snap: &Snapshot, ids: &CellIds, buckets: &Buckets, out: &mut Out<'_>) {
    let (order, groups) = group(snap);
    // `src_cell="a",dst_cell="b"` and the same with `,direction="…"`, once per key.
    let labels: Vec<(String, String)> = groups
        .iter()
        .map(|((src, dst, dir), _)| {
            let pair =
                format!("src_cell={},dst_cell={}", quoted(ids.name(*src)), quoted(ids.name(*dst)));
            let with_dir = format!("{pair},direction=\"{}\"", direction_label(*dir));
            (pair, with_dir)
        })
        .collect();
    let rows: Vec<(&PairDir, &Dir, &(String, String))> =
        groups.iter().zip(&labels).map(|((k, d), l)| (k, d, l)).collect();

    for (name, help, closed) in [
        ("cellwatch_connections_opened_total", "TCP connections that reached ESTABLISHED", false),
        ("cellwatch_connections_closed_total", "Established TCP connections that closed", true),
    ] {
        let mut f = Family::new(out, name, "counter", help);
        for (_, d, (_, pd)) in &rows {
            let counts = if closed { d.closed } else { d.opened };
            for v in [VERDICT_ALLOWED, VERDICT_VIOLATION] {
                // A verdict no connection of the pair got has no series.
                if d.has(v) {
                    let extra = if v == VERDICT_VIOLATION {
                        "verdict=\"violation\""
                    } else {
                        "verdict=\"allowed\""
                    };
                    sample(f.line(), name, pd, extra, counts[usize::from(v)]);
                }
            }
        }
    }
    let name = "cellwatch_connections_active";
    let mut f = Family::new(out, name, "gauge", "Established TCP connections now open");
    for (_, d, (_, pd)) in &rows {
        let active = (d.opened[0] + d.opened[1]).saturating_sub(d.closed[0] + d.closed[1]);
        sample(f.line(), name, pd, "", active);
    }
    let name = "cellwatch_connections_failed_total";
    let help = "Connections that failed, by reason (refused, reset, timeout, other); a pair has \
                these series from its first failure on";
    let mut f = Family::new(out, name, "counter", help);
    for ((_, _, dir), d, (p, _)) in &rows {
        if *dir == DIR_EGRESS && d.failed.iter().any(|n| *n > 0) {
            for (reason, n) in FAIL_LABELS.iter().zip(d.failed) {
                sample(f.line(), name, p, &format!("reason=\"{reason}\""), n);
            }
        }
    }
    let name = "cellwatch_boundary_violations_total";
    let help = "Connections that crossed a cell boundary against policy";
    let mut f = Family::new(out, name, "counter", help);
    for (_, d, (_, pd)) in &rows {
        if d.violating() {
            sample(f.line(), name, pd, "", d.violations);
        }
    }
    let name = "cellwatch_connections_denied_total";
    let mut f = Family::new(out, name, "counter", "Connects refused by enforce mode");
    for ((_, _, dir), d, (p, _)) in &rows {
        // From the first refusal on: audit mode refuses nothing, nor does enforce mode for
        // a source cell outside `enforce_cells`.
        if *dir == DIR_EGRESS && d.denied > 0 {
            sample(f.line(), name, p, "", d.denied);
        }
    }
    let scalars: [Scalar; 3] = [
        (
            "cellwatch_bytes_sent_total",
            "Payload bytes this node's sockets sent and the peer acknowledged, open connections \
             included (at most one --live-interval behind)",
            |d| d.sent,
        ),
        (
            "cellwatch_bytes_received_total",
            "Payload bytes this node's sockets received, open connections included (at most one \
             --live-interval behind)",
            |d| d.received,
        ),
        (
            "cellwatch_retransmits_total",
            "TCP segments retransmitted, open connections included",
            |d| d.retrans,
        ),
    ];
    for (name, help, value) in scalars {
        let mut f = Family::new(out, name, "counter", help);
        for (_, d, (_, pd)) in &rows {
            sample(f.line(), name, pd, "", value(d));
        }
    }
    // `le="…"` of each exported bound, once.
    let bounds = Bounds::of(buckets);
    let name = "cellwatch_connect_latency_seconds";
    let latency = HistNames::of(name);
    let help = "Client connect latency, SYN sent to established";
    let mut f = Family::new(out, name, "histogram", help);
    for ((_, _, dir), d, (p, _)) in &rows {
        if *dir != DIR_EGRESS {
            continue;
        }
        let h = d.hist(snap, &order, latency_of);
        if h.count() > 0 {
            histogram(f.line(), &latency, p, &h, &bounds);
        }
    }
    let name = "cellwatch_rtt_seconds";
    let rtt = HistNames::of(name);
    let help = "Smoothed RTT of each connection: one sample per open connection per \
                --live-interval and one at its close, on the client's side (and on the server's \
                when the client is in no cell)";
    let mut f = Family::new(out, name, "histogram", help);
    for ((src, _, dir), d, (_, pd)) in &rows {
        // RTT once per connection: from the client's socket, and from the server's only
        // when the client is in no cell (no cellwatch sees it as egress).
        let side = *dir == DIR_EGRESS || (*dir == DIR_INGRESS && *src == CELL_EXTERNAL);
        if !side {
            continue;
        }
        let h = d.hist(snap, &order, rtt_of);
        if h.count() > 0 {
            histogram(f.line(), &rtt, pd, &h, &bounds);
        }
    }
    super::services::render(snap, ids, &bounds, out);
    bookkeeping(snap, out);
}

/// The three names of a histogram's lines.
pub(super) struct HistNames {
    bucket: String,
    sum: String,
    count: String,
}

impl HistNames {
    pub(super) fn of(name: &str) -> Self {
        Self {
            bucket: format!("{name}_bucket"),
            sum: format!("{name}_sum"),
            count: format!("{name}_count"),
        }
    }
}

/// The exported buckets and their `le` labels, formatted once.
pub(super) struct Bounds<'b> {
    buckets: &'b Buckets,
    le: Vec<String>,
}

impl<'b> Bounds<'b> {
    fn of(buckets: &'b Buckets) -> Self {
        Self { buckets, le: buckets.bounds().map(|b| format!("le=\"{b}\"")).collect() }
    }
}

pub(super) fn histogram(
    out: &mut String,
    names: &HistNames,
    labels: &str,
    h: &Hist,
    bounds: &Bounds<'_>,
) {
    for (le, n) in bounds.le.iter().zip(bounds.buckets.cumulative(&h.buckets)) {
        sample(out, &names.bucket, labels, le, n);
    }
    let count = h.count();
    sample(out, &names.bucket, labels, "le=\"+Inf\"", count);
    let _ = writeln!(out, "{}{{{labels}}} {}", names.sum, h.sum_seconds);
    sample(out, &names.count, labels, "", count);
}

/// The kernel side's own bookkeeping: losses, events, the sweep, map fill.
fn bookkeeping(snap: &Snapshot, out: &mut Out<'_>) {
    let c = |i: u32| snap.counters[usize::try_from(i).unwrap_or(0)];
    let name = "cellwatch_events_lost_total";
    let mut f = Family::new(out, name, "counter", "Kernel events cellwatch had to drop, by source");
    for (source, n) in [
        ("conn_table_full", c(CTR_CONN_TABLE_FULL)),
        ("pair_table_full", c(CTR_STATS_TABLE_FULL)),
        ("violation_rate_limit", c(CTR_EVENTS_RATE_LIMITED)),
        ("violation_ringbuf_full", c(CTR_EVENTS_RINGBUF_FULL)),
        ("violation_undecodable", snap.undecodable_events),
    ] {
        let _ = writeln!(f.line(), "{name}{{source=\"{source}\"}} {n}");
    }
    let name = "cellwatch_violation_log_suppressed_total";
    let help = "Violation log lines held back by the agent's node-wide log rate (20 a second, \
                bursts of 100); the events are served at /violations all the same";
    let mut f = Family::new(out, name, "counter", help);
    let _ = writeln!(f.line(), "{name} {}", snap.log_suppressed);
    let name = "cellwatch_events_total";
    let mut f =
        Family::new(out, name, "counter", "Kernel events delivered to the agent, by source");
    let _ = writeln!(f.line(), "{name}{{source=\"violation\"}} {}", c(CTR_EVENTS_SENT));
    let name = "cellwatch_enforce_unresolved_total";
    let help = "Connects enforce mode let through unjudged: an unbound socket in a network \
                namespace whose source address is not yet known, or not unique";
    let mut f = Family::new(out, name, "counter", help);
    let _ = writeln!(f.line(), "{name} {}", c(CTR_ENFORCE_UNRESOLVED));
    let name = "cellwatch_live_sweep_connections_total";
    let help = "Open connections the live sweep visited: read (their figures counted), or busy \
                (in use at every try, left to the next sweep)";
    let mut f = Family::new(out, name, "counter", help);
    let (visited, busy) = (c(CTR_SWEEP_VISITED), c(CTR_SWEEP_BUSY));
    let _ = writeln!(f.line(), "{name}{{result=\"read\"}} {}", visited.saturating_sub(busy));
    let _ = writeln!(f.line(), "{name}{{result=\"busy\"}} {busy}");
    let name = "cellwatch_kernel_op_runs_total";
    let help = "Runs of the sock_ops program by op, with --profile-kernel";
    let mut f = Family::new(out, name, "counter", help);
    for o in &snap.ops {
        let _ = writeln!(f.line(), "{name}{{op=\"{}\"}} {}", op_name(o.op), o.runs);
    }
    let name = "cellwatch_kernel_op_seconds_total";
    let help = "Time in the sock_ops program by op, with --profile-kernel";
    let mut f = Family::new(out, name, "counter", help);
    for o in &snap.ops {
        let _ = writeln!(f.line(), "{name}{{op=\"{}\"}} {}", op_name(o.op), o.ns as f64 * 1e-9);
    }
    let name = "cellwatch_map_entries";
    let mut f = Family::new(out, name, "gauge", "Entries in each kernel map");
    for m in &snap.fill {
        let _ = writeln!(f.line(), "{name}{{map=\"{}\"}} {}", m.map, m.entries);
    }
    let name = "cellwatch_map_capacity";
    let mut f = Family::new(out, name, "gauge", "Capacity of each kernel map");
    for m in &snap.fill {
        let _ = writeln!(f.line(), "{name}{{map=\"{}\"}} {}", m.map, m.capacity);
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
