//! `cellwatch top`'s arithmetic, with no terminal and no network: two scrapes of
//! `/metrics` ([`crate::scrape`]) become per-pair rows (rates, counter resets, quantiles
//! from whatever histogram buckets the agent exports), sorted and filtered, with the
//! view's column headings, title line and footnote. The newest violation per pair is
//! [`crate::violations`]'.

use std::{cmp::Ordering, str::FromStr};

use crate::{
    format::{Table, fmt_bytes, fmt_duration, fmt_rate},
    scrape::{Hist, Scrape, Totals, increase},
};

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
    let mut lines = Table::new("", &COLUMNS, &NUMERIC).lines(&cells).into_iter();
    let mut out = lines.next().unwrap_or_default();
    out.push('\n');
    if rows.is_empty() {
        out.push_str("(no pair to show)\n");
    }
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
