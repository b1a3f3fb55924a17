//! Unit tests of `scrape`, and the scrapes the other modules' tests build.

use super::*;
use agent_core::promtext::parse;

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

pub(crate) fn scrape(opened: u64, viol: u64, bytes: u64, rtt: [u64; 4]) -> Scrape {
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
