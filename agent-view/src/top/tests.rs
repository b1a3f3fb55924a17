//! Unit tests of `top`.

use super::*;
use crate::scrape::tests::scrape;

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
    assert_eq!((r.opened_rate, r.violation_rate, r.byte_rate), (Some(3.0), Some(1.0), Some(20.0)));
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

fn row(src: &str, dst: &str, opened: f64, rate: Option<f64>, viol: f64, rtt: Option<f64>) -> Row {
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
    // The figures themselves are `format`'s, tested there.
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
