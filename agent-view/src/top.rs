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
mod tests {
    use super::*;
    use crate::{format::fmt_bytes, scrape::tests::scrape};

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
}
