//! `cellwatch top`'s arithmetic, with no terminal and no network: two scrapes of
//! `/metrics` become per-pair rows (rates, counter resets, quantiles from whatever
//! histogram buckets the agent exports), sorted and filtered; `/violations` becomes the
//! newest violation per cell pair. The demo's violation panel uses the same pieces.
//!
//! Each connection counts once: a pair's figures come from the client's side
//! (`direction="egress"`), plus the server's side (`direction="ingress"`) when the client
//! is in no cell (`src_cell="external"`), which no cellwatch sees as egress. Families
//! without a direction (connect latency) are the client's already. A series that is
//! missing counts as zero, so families that appear late (a pair's first failure) or
//! histograms that are not exported while empty need no special case.
//!
//! Quantiles are interpolated linearly within a bucket, as Prometheus'
//! `histogram_quantile` does; a quantile in the `+Inf` bucket is the largest finite bound.

use std::{
    cmp::Ordering,
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    str::FromStr,
};

use serde::Deserialize;

use crate::promtext::Sample;

/// The cell name of a peer in no cell.
pub const EXTERNAL: &str = "external";

/// A cell pair: (client cell, server cell).
pub type Pair = (String, String);

/// A histogram's cumulative bucket counts by upper bound (seconds), ascending, `+Inf`
/// last when the agent exported it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hist(pub Vec<(f64, f64)>);

impl Hist {
    /// Adds `count` to the bucket `le` (a series of the same pair from the other side).
    fn add(&mut self, le: f64, count: f64) {
        match self.0.binary_search_by(|(b, _)| b.total_cmp(&le)) {
            Ok(i) => self.0[i].1 += count,
            Err(i) => self.0.insert(i, (le, count)),
        }
    }

    /// Observations in all (the `+Inf` bucket, or the largest one there is).
    pub fn count(&self) -> f64 {
        self.0.last().map_or(0.0, |(_, n)| *n)
    }

    /// What was observed since `old`. A reset (a bucket that went down, or another set
    /// of buckets: the agent restarted, perhaps with other buckets) means everything in
    /// `self` is new.
    pub fn since(&self, old: &Hist) -> Hist {
        let same_bounds = self.0.len() == old.0.len()
            && self.0.iter().zip(&old.0).all(|((a, _), (b, _))| a.total_cmp(b).is_eq());
        if !same_bounds || self.0.iter().zip(&old.0).any(|((_, n), (_, o))| n < o) {
            return self.clone();
        }
        Hist(self.0.iter().zip(&old.0).map(|((le, n), (_, o))| (*le, n - o)).collect())
    }

    /// The `q` quantile (0..=1) in seconds, as Prometheus' `histogram_quantile`: linear
    /// within the bucket the rank falls in, from 0 for the first bucket; the largest
    /// finite bound when it falls in `+Inf`. `None` with no observation or no `+Inf`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let b = &self.0;
        let total = self.count();
        if b.len() < 2 || total <= 0.0 || b.last().is_none_or(|(le, _)| *le != f64::INFINITY) {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let i = b.iter().position(|(_, n)| *n >= rank)?;
        if i == b.len() - 1 {
            return Some(b[i - 1].0);
        }
        let (end, count) = b[i];
        if i == 0 {
            return Some(if end <= 0.0 || count <= 0.0 { end } else { end * rank / count });
        }
        let (start, below) = b[i - 1];
        let inside = count - below;
        if inside <= 0.0 {
            return Some(end);
        }
        Some(start + (end - start) * (rank - below) / inside)
    }
}

/// A pair's counters, gauge and histograms in one scrape, client side.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    pub opened: f64,
    pub violations: f64,
    /// Payload bytes both ways.
    pub bytes: f64,
    pub active: f64,
    pub connect: Hist,
    pub rtt: Hist,
}

/// One scrape's figures by pair.
pub type Scrape = BTreeMap<Pair, Totals>;

/// Whether the sample is the client's side of its connections (see the module doc).
fn client_side(s: &Sample) -> bool {
    match s.label("direction") {
        "" | "egress" => true,
        "ingress" => s.label("src_cell") == EXTERNAL,
        _ => false,
    }
}

/// Reads the pairs out of a parsed `/metrics`.
pub fn read(samples: &[Sample]) -> Scrape {
    let mut pairs = Scrape::new();
    for s in samples.iter().filter(|s| client_side(s)) {
        let key = (s.label("src_cell").to_owned(), s.label("dst_cell").to_owned());
        if key.0.is_empty() || key.1.is_empty() {
            continue;
        }
        let le = || match s.label("le") {
            "+Inf" => Some(f64::INFINITY),
            v => v.parse::<f64>().ok(),
        };
        match s.name.as_str() {
            "cellwatch_connections_opened_total" => pairs.entry(key).or_default().opened += s.value,
            "cellwatch_boundary_violations_total" => {
                pairs.entry(key).or_default().violations += s.value;
            }
            "cellwatch_bytes_sent_total" | "cellwatch_bytes_received_total" => {
                pairs.entry(key).or_default().bytes += s.value;
            }
            "cellwatch_connections_active" => pairs.entry(key).or_default().active += s.value,
            "cellwatch_connect_latency_seconds_bucket" => {
                if let Some(le) = le() {
                    pairs.entry(key).or_default().connect.add(le, s.value);
                }
            }
            "cellwatch_rtt_seconds_bucket" => {
                if let Some(le) = le() {
                    pairs.entry(key).or_default().rtt.add(le, s.value);
                }
            }
            _ => {}
        }
    }
    pairs
}

/// How much a counter grew from `old` to `new`; a counter that went down was reset
/// (the agent restarted), so all of `new` is growth.
pub fn increase(old: f64, new: f64) -> f64 {
    if new < old { new } else { new - old }
}

/// p50 and p99 of a histogram, and whether they are of the last interval (`recent`) or,
/// because the interval saw no observation, of everything since the agent started.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Quantiles {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub recent: bool,
}

impl Quantiles {
    fn of(now: &Hist, old: Option<&Hist>) -> Self {
        let window = old.map(|o| now.since(o));
        match window {
            Some(w) if w.count() > 0.0 => {
                Self { p50: w.quantile(0.5), p99: w.quantile(0.99), recent: true }
            }
            _ => Self { p50: now.quantile(0.5), p99: now.quantile(0.99), recent: false },
        }
    }
}

/// One line of the view. Rates are per second over the interval between the two
/// scrapes; `None` before there are two.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub src: String,
    pub dst: String,
    pub opened: f64,
    pub opened_rate: Option<f64>,
    pub active: f64,
    pub violations: f64,
    pub violation_rate: Option<f64>,
    pub byte_rate: Option<f64>,
    pub connect: Quantiles,
    pub rtt: Quantiles,
}

/// The rows of scrape `now`, with rates against `old` taken `seconds` earlier. A pair
/// missing from `old` starts from zero.
pub fn rows(old: Option<&Scrape>, now: &Scrape, seconds: f64) -> Vec<Row> {
    let empty = Totals::default();
    now.iter()
        .map(|((src, dst), t)| {
            let o = old.map(|o| o.get(&(src.clone(), dst.clone())).unwrap_or(&empty));
            let rate = |f: fn(&Totals) -> f64| {
                o.filter(|_| seconds > 0.0).map(|o| increase(f(o), f(t)) / seconds)
            };
            Row {
                src: src.clone(),
                dst: dst.clone(),
                opened: t.opened,
                opened_rate: rate(|t| t.opened),
                active: t.active,
                violations: t.violations,
                violation_rate: rate(|t| t.violations),
                byte_rate: rate(|t| t.bytes),
                connect: Quantiles::of(&t.connect, o.map(|o| &o.connect)),
                rtt: Quantiles::of(&t.rtt, o.map(|o| &o.rtt)),
            }
        })
        .collect()
}

/// The orders the rows can be shown in, each highest first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortKey {
    /// Opened per second, then opened in all.
    #[default]
    Opened,
    /// Violations per second, then violations in all.
    Violations,
    /// Bytes per second, then opened in all.
    Bytes,
    /// RTT p99, then p50.
    Rtt,
}

impl SortKey {
    pub const ALL: [SortKey; 4] = [Self::Opened, Self::Violations, Self::Bytes, Self::Rtt];

    /// The next order (the `s` key).
    pub fn next(self) -> Self {
        let i = Self::ALL.iter().position(|k| *k == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::Violations => "violations",
            Self::Bytes => "bytes",
            Self::Rtt => "rtt",
        }
    }
}

impl FromStr for SortKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("`{s}` is not a sort order (opened, violations, bytes or rtt)"))
    }
}

/// Descending order of optional figures, a missing one last.
fn desc(a: Option<f64>, b: Option<f64>) -> Ordering {
    let key = |v: Option<f64>| v.unwrap_or(f64::NEG_INFINITY);
    key(b).total_cmp(&key(a))
}

/// Sorts highest first by `key`; ties by pair name, so the order is stable.
pub fn sort(rows: &mut [Row], key: SortKey) {
    rows.sort_by(|a, b| {
        let first = match key {
            SortKey::Opened => {
                desc(a.opened_rate, b.opened_rate).then(desc(Some(a.opened), Some(b.opened)))
            }
            SortKey::Violations => desc(a.violation_rate, b.violation_rate)
                .then(desc(Some(a.violations), Some(b.violations))),
            SortKey::Bytes => {
                desc(a.byte_rate, b.byte_rate).then(desc(Some(a.opened), Some(b.opened)))
            }
            SortKey::Rtt => desc(a.rtt.p99, b.rtt.p99).then(desc(a.rtt.p50, b.rtt.p50)),
        };
        first.then_with(|| (&a.src, &a.dst).cmp(&(&b.src, &b.dst)))
    });
}

/// Whether `cell` is at either end of the pair; every pair matches no filter.
pub fn matches(src: &str, dst: &str, cell: Option<&str>) -> bool {
    cell.is_none_or(|c| src == c || dst == c)
}

/// The rows to show: filtered by `cell`, sorted by `key`.
pub fn view(mut rows: Vec<Row>, key: SortKey, cell: Option<&str>) -> Vec<Row> {
    rows.retain(|r| matches(&r.src, &r.dst, cell));
    sort(&mut rows, key);
    rows
}

/// `12.5` (per second), with `k` above ten thousand; `-` without a rate yet.
pub fn fmt_rate(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(v) if v >= 10_000.0 => format!("{:.1}k", v / 1e3),
        Some(v) => format!("{v:.1}"),
    }
}

/// Bytes in binary units: `512 B`, `1.5 KiB`, `3.2 MiB`, `1.1 GiB`.
pub fn fmt_bytes(v: Option<f64>) -> String {
    let Some(v) = v else { return "-".to_owned() };
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if v < 1024.0 {
        return format!("{v:.0} B");
    }
    let mut scaled = v / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if scaled < 1024.0 {
            break;
        }
        scaled /= 1024.0;
        unit = u;
    }
    format!("{scaled:.1} {unit}")
}

/// Seconds as `64µs`, `1.25ms`, `12.5ms`, `250ms`, `1.05s`.
pub fn fmt_duration(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.0}µs", s * 1e6)
    } else if s < 1e-2 {
        format!("{:.2}ms", s * 1e3)
    } else if s < 0.1 {
        format!("{:.1}ms", s * 1e3)
    } else if s < 1.0 {
        format!("{:.0}ms", s * 1e3)
    } else {
        format!("{s:.2}s")
    }
}

/// `p50/p99`; in parentheses when they are since the agent started rather than of the
/// last interval; `-` with no observation at all.
pub fn fmt_quantiles(q: Quantiles) -> String {
    let (Some(p50), Some(p99)) = (q.p50, q.p99) else { return "-".to_owned() };
    let s = format!("{}/{}", fmt_duration(p50), fmt_duration(p99));
    if q.recent { s } else { format!("({s})") }
}

/// The column headings, in the order of [`Row::cells`].
pub const COLUMNS: [&str; 10] = [
    "SRC CELL",
    "DST CELL",
    "OPENED",
    "OPENED/S",
    "ACTIVE",
    "VIOLATIONS",
    "VIOL/S",
    "BYTES/S",
    "CONNECT p50/p99",
    "RTT p50/p99",
];

/// Which columns are numbers (right-aligned).
pub const NUMERIC: [bool; 10] = [false, false, true, true, true, true, true, true, true, true];

impl Row {
    /// The row as the view shows it, one string per column of [`COLUMNS`].
    pub fn cells(&self) -> [String; 10] {
        [
            self.src.clone(),
            self.dst.clone(),
            format!("{}", self.opened),
            fmt_rate(self.opened_rate),
            format!("{}", self.active),
            format!("{}", self.violations),
            fmt_rate(self.violation_rate),
            fmt_bytes(self.byte_rate),
            fmt_quantiles(self.connect),
            fmt_quantiles(self.rtt),
        ]
    }
}

/// The view's first line: where, in what order, which pairs, and over what interval
/// (`None` before the second scrape).
pub fn heading(
    url: &str,
    key: SortKey,
    cell: Option<&str>,
    shown: usize,
    pairs: usize,
    seconds: Option<f64>,
) -> String {
    let over = seconds.map_or_else(|| "first scrape".to_owned(), |s| format!("over {s:.1} s"));
    format!(
        "cellwatch top  {url}  sort: {}  cell: {}  pairs: {shown} of {pairs}  {over}",
        key.name(),
        cell.unwrap_or("all"),
    )
}

/// The footnote that says what the columns mean.
pub const FOOTNOTE: &str =
    "rates and p50/p99 over the last interval; (p50/p99) since the agent started when it saw none";

/// The rows as plain text with aligned columns (`--once`).
pub fn plain_table(rows: &[Row]) -> String {
    let cells: Vec<[String; 10]> = rows.iter().map(Row::cells).collect();
    let width = |i: usize| {
        cells.iter().map(|c| c[i].chars().count()).chain([COLUMNS[i].len()]).max().unwrap_or(0)
    };
    let widths: Vec<usize> = (0..COLUMNS.len()).map(width).collect();
    let line = |row: &[String]| {
        let mut out = String::new();
        for (i, c) in row.iter().enumerate() {
            let pad = widths[i].saturating_sub(c.chars().count());
            out.push_str(if i == 0 { "" } else { "  " });
            if NUMERIC[i] {
                out.push_str(&" ".repeat(pad));
                out.push_str(c);
            } else {
                out.push_str(c);
                out.push_str(&" ".repeat(pad));
            }
        }
        out.trim_end().to_owned()
    };
    let header: Vec<String> = COLUMNS.iter().map(|c| (*c).to_owned()).collect();
    let mut out = line(&header);
    out.push('\n');
    if rows.is_empty() {
        out.push_str("(no pair to show)\n");
    }
    for c in &cells {
        out.push_str(&line(c));
        out.push('\n');
    }
    out
}

/// One end of a violation, as `/violations` serves it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct End {
    pub cell: String,
    pub addr: IpAddr,
    pub port: u16,
}

/// A violation as `/violations` serves it (the fields the view shows).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Violation {
    /// Seconds since the Unix epoch.
    pub time: f64,
    /// The client.
    pub src: End,
    /// The server.
    pub dst: End,
    pub direction: String,
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub comm: Option<String>,
    #[serde(default)]
    pub denied: bool,
}

/// `/violations` that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("/violations is not the list of violations cellwatch serves: {0}")]
pub struct BadViolations(#[from] serde_json::Error);

/// Parses the body of `GET /violations`.
pub fn parse_violations(json: &str) -> Result<Vec<Violation>, BadViolations> {
    Ok(serde_json::from_str(json)?)
}

/// The newest violation of each cell pair (at most `n` pairs, newest first) among
/// `events` (newest first, as served), keeping only pairs with `cell` at an end. Both
/// sockets of a connection on this node report it; a pair's line prefers the client's
/// (egress) event, which names the process that connected.
pub fn latest_per_pair<'a>(
    events: &'a [Violation],
    cell: Option<&str>,
    n: usize,
) -> Vec<&'a Violation> {
    let mut out: Vec<&Violation> = Vec::new();
    for v in events.iter().filter(|v| matches(&v.src.cell, &v.dst.cell, cell)) {
        let same = |w: &&Violation| w.src.cell == v.src.cell && w.dst.cell == v.dst.cell;
        match out.iter().position(same) {
            Some(i) if out[i].direction != "egress" && v.direction == "egress" => out[i] = v,
            Some(_) => {}
            None => out.push(v),
        }
    }
    out.truncate(n);
    out
}

/// `3s`, `4m`, `2h`, `5d`.
fn fmt_age(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 60.0 {
        format!("{s:.0}s")
    } else if s < 3600.0 {
        format!("{:.0}m", s / 60.0)
    } else if s < 86_400.0 {
        format!("{:.0}h", s / 3600.0)
    } else {
        format!("{:.0}d", s / 86_400.0)
    }
}

/// One violation as a line: age, pair, process, addresses, and whether enforce mode
/// refused it. `now` is seconds since the Unix epoch.
pub fn violation_line(v: &Violation, now: f64) -> String {
    let process = match (&v.comm, v.pid) {
        (Some(c), Some(p)) => format!("{c}[{p}]"),
        (None, Some(p)) => format!("pid {p}"),
        (Some(c), None) => c.clone(),
        (None, None) => "-".to_owned(),
    };
    let mut line = format!(
        "{:>4} ago  {} -> {}  {}  {} -> {}",
        fmt_age(now - v.time),
        v.src.cell,
        v.dst.cell,
        process,
        SocketAddr::new(v.src.addr, v.src.port),
        SocketAddr::new(v.dst.addr, v.dst.port),
    );
    if v.denied {
        let _ = write!(line, "  (refused: enforce mode)");
    }
    printable(&line)
}

/// `s` with every control character escaped (`\u{1b}`...): a process can name itself
/// anything, escape sequences that would erase or rewrite the operator's screen included.
pub fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .flat_map(|c| {
            let esc: Vec<char> =
                if c.is_control() { c.escape_default().collect() } else { vec![c] };
            esc
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promtext::parse;

    const BOUNDS: [&str; 4] = ["0.000064", "0.000128", "0.000256", "+Inf"];

    fn hist(name: &str, labels: &str, counts: [u64; 4]) -> String {
        let mut cum = 0;
        let mut out = String::new();
        for (le, n) in BOUNDS.iter().zip(counts) {
            cum += n;
            out.push_str(&format!("{name}_bucket{{{labels},le=\"{le}\"}} {cum}\n"));
        }
        out
    }

    fn scrape(opened: u64, viol: u64, bytes: u64, rtt: [u64; 4]) -> Scrape {
        let a = r#"src_cell="a",dst_cell="b""#;
        let mut text = format!(
            "cellwatch_connections_opened_total{{{a},direction=\"egress\",verdict=\"violation\"}} {opened}\n\
             cellwatch_connections_opened_total{{{a},direction=\"ingress\",verdict=\"violation\"}} {opened}\n\
             cellwatch_boundary_violations_total{{{a},direction=\"egress\"}} {viol}\n\
             cellwatch_bytes_sent_total{{{a},direction=\"egress\"}} {bytes}\n\
             cellwatch_bytes_received_total{{{a},direction=\"egress\"}} {bytes}\n\
             cellwatch_bytes_received_total{{{a},direction=\"ingress\"}} {bytes}\n\
             cellwatch_connections_active{{{a},direction=\"egress\"}} 1\n"
        );
        text += &hist("cellwatch_rtt_seconds", &format!("{a},direction=\"egress\""), rtt);
        text += &hist("cellwatch_connect_latency_seconds", a, rtt);
        read(&parse(&text))
    }

    fn pair(a: &str, b: &str) -> Pair {
        (a.to_owned(), b.to_owned())
    }

    #[test]
    fn the_client_side_counts_each_connection_once() {
        let text = "\
cellwatch_connections_opened_total{src_cell=\"a\",dst_cell=\"b\",direction=\"egress\",verdict=\"allowed\"} 3
cellwatch_connections_opened_total{src_cell=\"a\",dst_cell=\"b\",direction=\"egress\",verdict=\"violation\"} 2
cellwatch_connections_opened_total{src_cell=\"a\",dst_cell=\"b\",direction=\"ingress\",verdict=\"allowed\"} 5
cellwatch_connections_opened_total{src_cell=\"external\",dst_cell=\"b\",direction=\"ingress\",verdict=\"allowed\"} 7
cellwatch_connections_opened_total{src_cell=\"external\",dst_cell=\"b\",direction=\"egress\",verdict=\"allowed\"} 1
cellwatch_connections_failed_total{src_cell=\"a\",dst_cell=\"c\",reason=\"refused\"} 4
cellwatch_boundary_violations_total{src_cell=\"a\",dst_cell=\"c\",direction=\"egress\"} 4
cellwatch_live_sweep_connections_total{result=\"kept\"} 9
";
        let s = read(&parse(text));
        assert_eq!(s[&pair("a", "b")].opened, 5.0);
        assert_eq!(s[&pair("external", "b")].opened, 8.0);
        assert_eq!((s[&pair("a", "c")].opened, s[&pair("a", "c")].violations), (0.0, 4.0));
        assert_eq!(s.len(), 3, "{s:?}");
    }

    #[test]
    fn rates_between_two_scrapes_and_resets() {
        let old = scrape(10, 4, 100, [1, 0, 0, 0]);
        let now = scrape(30, 8, 300, [1, 2, 0, 0]);
        let r = &rows(Some(&old), &now, 2.0)[0];
        assert_eq!((r.opened, r.opened_rate, r.violation_rate), (30.0, Some(10.0), Some(2.0)));
        // Bytes both ways, egress only: 2 x 200 over 2 s.
        assert_eq!(r.byte_rate, Some(200.0));
        assert_eq!(r.active, 1.0);
        // The agent restarted: every counter is lower, so all of it is new.
        let restarted = scrape(3, 1, 10, [0, 1, 0, 0]);
        let r = &rows(Some(&now), &restarted, 1.0)[0];
        assert_eq!(
            (r.opened_rate, r.violation_rate, r.byte_rate),
            (Some(3.0), Some(1.0), Some(20.0))
        );
        assert!(r.rtt.recent);
        assert_eq!(increase(5.0, 5.0), 0.0);
        assert_eq!(increase(5.0, 2.0), 2.0);
        // No earlier scrape: no rates yet, quantiles since start.
        let r = &rows(None, &now, 0.0)[0];
        assert_eq!((r.opened_rate, r.rtt.recent), (None, false));
    }

    #[test]
    fn a_pair_missing_from_the_first_scrape_starts_from_zero() {
        let now = scrape(6, 0, 0, [0; 4]);
        let r = &rows(Some(&Scrape::new()), &now, 3.0)[0];
        assert_eq!(r.opened_rate, Some(2.0));
        // No observation at all: no quantiles.
        assert_eq!((r.rtt.p50, r.rtt.p99), (None, None));
        assert_eq!(fmt_quantiles(r.rtt), "-");
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket_as_prometheus_does() {
        let h = Hist(vec![(1.0, 10.0), (2.0, 20.0), (4.0, 40.0), (f64::INFINITY, 40.0)]);
        // Rank 20 is the top of the second bucket; rank 30 halfway into the third.
        assert_eq!(h.quantile(0.5), Some(2.0));
        assert_eq!(h.quantile(0.75), Some(3.0));
        // In the first bucket, from zero.
        assert_eq!(h.quantile(0.125), Some(0.5));
        // In +Inf: the largest finite bound.
        let inf = Hist(vec![(1.0, 1.0), (f64::INFINITY, 10.0)]);
        assert_eq!(inf.quantile(0.99), Some(1.0));
        // Nothing observed, or no +Inf bucket: no answer.
        assert_eq!(Hist(vec![(1.0, 0.0), (f64::INFINITY, 0.0)]).quantile(0.5), None);
        assert_eq!(Hist(vec![(1.0, 3.0), (2.0, 3.0)]).quantile(0.5), None);
        assert_eq!(Hist::default().quantile(0.5), None);
    }

    #[test]
    fn quantiles_use_whatever_buckets_the_histogram_has() {
        // Eleven of the kernel's powers of two of microseconds, 64 µs to about 1 s, as the
        // next agent exports by default; 100 observations in (256 µs, 1024 µs].
        let series = r#"cellwatch_rtt_seconds_bucket{src_cell="a",dst_cell="b",direction="egress""#;
        let mut text = String::new();
        for (i, exp) in [6, 8, 10, 11, 12, 13, 14, 15, 16, 18, 20].into_iter().enumerate() {
            let le = f64::from(1u32 << exp) * 1e-6;
            let cum = if i >= 2 { 100 } else { 0 };
            text += &format!("{series},le=\"{le}\"}} {cum}\n");
        }
        text += &format!("{series},le=\"+Inf\"}} 100\n");
        let s = read(&parse(&text));
        let h = &s[&pair("a", "b")].rtt;
        assert_eq!(h.0.len(), 12);
        // p50 halfway into the bucket, p99 near its top.
        let p50 = h.quantile(0.5).unwrap();
        assert!((p50 - 640e-6).abs() < 1e-9, "{p50}");
        let p99 = h.quantile(0.99).unwrap();
        assert!((p99 - (256e-6 + 768e-6 * 0.99)).abs() < 1e-9, "{p99}");
    }

    #[test]
    fn histogram_windows_and_resets() {
        let old = Hist(vec![(1.0, 2.0), (f64::INFINITY, 3.0)]);
        let now = Hist(vec![(1.0, 5.0), (f64::INFINITY, 9.0)]);
        assert_eq!(now.since(&old), Hist(vec![(1.0, 3.0), (f64::INFINITY, 6.0)]));
        // A bucket went down: reset.
        let low = Hist(vec![(1.0, 1.0), (f64::INFINITY, 9.0)]);
        assert_eq!(low.since(&old), low);
        // Other buckets (a restart with another bucket set): reset.
        let other = Hist(vec![(2.0, 1.0), (f64::INFINITY, 1.0)]);
        assert_eq!(other.since(&old), other);
        // Empty before (not exported while empty): all new.
        assert_eq!(now.since(&Hist::default()), now);
        // The window's quantiles, or since start when the window saw nothing.
        let q = Quantiles::of(&now, Some(&now));
        assert!(!q.recent && q.p50.is_some());
        assert!(Quantiles::of(&now, Some(&old)).recent);
    }

    fn row(
        src: &str,
        dst: &str,
        opened: f64,
        rate: Option<f64>,
        viol: f64,
        rtt: Option<f64>,
    ) -> Row {
        Row {
            src: src.into(),
            dst: dst.into(),
            opened,
            opened_rate: rate,
            active: 0.0,
            violations: viol,
            violation_rate: Some(0.0),
            byte_rate: rate.map(|r| r * 10.0),
            connect: Quantiles::default(),
            rtt: Quantiles { p50: rtt, p99: rtt, recent: true },
        }
    }

    #[test]
    fn sorting_and_filtering() {
        let rows = vec![
            row("a", "a", 30.0, Some(1.0), 0.0, Some(0.001)),
            row("a", "b", 10.0, Some(5.0), 10.0, None),
            row("b", "a", 0.0, Some(0.0), 5.0, Some(0.002)),
        ];
        let order = |k: SortKey, cell: Option<&str>| -> Vec<String> {
            view(rows.clone(), k, cell).iter().map(|r| format!("{}>{}", r.src, r.dst)).collect()
        };
        assert_eq!(order(SortKey::Opened, None), ["a>b", "a>a", "b>a"]);
        assert_eq!(order(SortKey::Violations, None), ["a>b", "b>a", "a>a"]);
        assert_eq!(order(SortKey::Bytes, None), ["a>b", "a>a", "b>a"]);
        assert_eq!(order(SortKey::Rtt, None), ["b>a", "a>a", "a>b"]);
        assert_eq!(order(SortKey::Opened, Some("b")), ["a>b", "b>a"]);
        assert!(order(SortKey::Opened, Some("nope")).is_empty());
        // Without rates, totals decide.
        let mut no_rates = rows.clone();
        no_rates.iter_mut().for_each(|r| r.opened_rate = None);
        sort(&mut no_rates, SortKey::Opened);
        assert_eq!(no_rates[0].opened, 30.0);
        // `s` cycles through every order and back.
        let mut k = SortKey::Opened;
        let mut seen = vec![];
        for _ in 0..4 {
            seen.push(k.name());
            k = k.next();
        }
        assert_eq!((seen, k), (vec!["opened", "violations", "bytes", "rtt"], SortKey::Opened));
        assert_eq!("rtt".parse::<SortKey>(), Ok(SortKey::Rtt));
        assert!("size".parse::<SortKey>().is_err());
    }

    #[test]
    fn cells_and_the_plain_table() {
        assert_eq!(fmt_rate(Some(2.25)), "2.2");
        assert_eq!(fmt_rate(Some(12_345.0)), "12.3k");
        assert_eq!(fmt_rate(None), "-");
        assert_eq!(fmt_bytes(Some(512.0)), "512 B");
        assert_eq!(fmt_bytes(Some(1536.0)), "1.5 KiB");
        assert_eq!(fmt_bytes(Some(3.0 * 1024.0 * 1024.0)), "3.0 MiB");
        assert_eq!(fmt_duration(64e-6), "64µs");
        assert_eq!(fmt_duration(1.25e-3), "1.25ms");
        assert_eq!(fmt_duration(0.25), "250ms");
        assert_eq!(fmt_duration(1.5), "1.50s");
        let q = Quantiles { p50: Some(64e-6), p99: Some(1e-3), recent: false };
        assert_eq!(fmt_quantiles(q), "(64µs/1.00ms)");
        assert_eq!(fmt_quantiles(Quantiles { recent: true, ..q }), "64µs/1.00ms");
        let t = plain_table(&[row("cell-1", "cell-22", 3.0, Some(1.5), 0.0, None)]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("SRC CELL  DST CELL  OPENED  OPENED/S"), "{t}");
        let words: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(words[..6], ["cell-1", "cell-22", "3", "1.5", "0", "0"], "{t}");
        // Right-aligned numbers end where their heading ends.
        let end = |l: &str, w: &str| l.find(w).unwrap() + w.len();
        assert_eq!(end(lines[0], "OPENED/S"), end(lines[1], "1.5"));
        assert!(plain_table(&[]).contains("(no pair to show)"));
        assert_eq!(
            heading("http://x:1", SortKey::Rtt, Some("c"), 1, 4, Some(2.04)),
            "cellwatch top  http://x:1  sort: rtt  cell: c  pairs: 1 of 4  over 2.0 s"
        );
        assert!(
            heading("u", SortKey::Opened, None, 0, 0, None)
                .ends_with("cell: all  pairs: 0 of 0  first scrape")
        );
    }

    fn violation(t: f64, src: &str, dst: &str, dir: &str, pid: Option<u32>) -> Violation {
        Violation {
            time: t,
            src: End { cell: src.into(), addr: "127.0.0.1".parse().unwrap(), port: 40_000 },
            dst: End { cell: dst.into(), addr: "::1".parse().unwrap(), port: 80 },
            direction: dir.into(),
            pid,
            comm: pid.map(|_| "curl".to_owned()),
            denied: false,
        }
    }

    #[test]
    fn newest_violation_per_pair_prefers_the_client_side() {
        let events = vec![
            violation(10.0, "c3", "c2", "ingress", None),
            violation(10.0, "c3", "c2", "egress", Some(7)),
            violation(9.0, "c1", "c3", "egress", Some(8)),
            violation(8.0, "c3", "c2", "egress", Some(9)),
            violation(7.0, "c1", "c3", "ingress", None),
        ];
        let l = latest_per_pair(&events, None, 5);
        assert_eq!(l.len(), 2);
        assert_eq!((l[0].src.cell.as_str(), l[0].pid), ("c3", Some(7)));
        assert_eq!((l[1].src.cell.as_str(), l[1].pid), ("c1", Some(8)));
        assert_eq!(latest_per_pair(&events, Some("c1"), 5).len(), 1);
        assert_eq!(latest_per_pair(&events, None, 1).len(), 1);
        let line = violation_line(l[0], 13.0);
        assert_eq!(line, "  3s ago  c3 -> c2  curl[7]  127.0.0.1:40000 -> [::1]:80");
        let denied = Violation { denied: true, ..violation(0.0, "a", "b", "egress", None) };
        assert!(violation_line(&denied, 7200.0).contains("2h ago  a -> b  -  "));
        assert!(violation_line(&denied, 0.0).ends_with("(refused: enforce mode)"));
        // A process that names itself with escape sequences erases nothing on screen.
        let rogue = Violation {
            comm: Some("\u{1b}[2J\u{1b}[Hok\r".to_owned()),
            ..violation(0.0, "a", "b", "egress", Some(7))
        };
        let shown = violation_line(&rogue, 0.0);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(shown.contains("\\u{1b}[2J\\u{1b}[Hok\\r[7]"), "{shown}");
    }

    #[test]
    fn violations_parse_from_the_endpoint_body() {
        let body = r#"[{"time":1.5,"src":{"cell":"a","addr":"127.0.0.1","port":1},
            "dst":{"cell":"b","addr":"127.0.0.2","port":2},"direction":"egress","pid":3,
            "comm":"x","cgroup_id":null,"cgroup":null,"container_id":null,"pod_uid":null,
            "cookie":9,"denied":false}]"#;
        let v = parse_violations(body).unwrap();
        assert_eq!((v[0].pid, v[0].dst.port, v[0].denied), (Some(3), 2, false));
        assert!(parse_violations("{}").is_err());
    }
}
