//! The series budget on real traffic: a real Prometheus (Debian's 2.42) with native
//! histograms ingests the agent's protobuf exposition beside one that scrapes the text,
//! their counts agree exactly and their p99s within one classic bucket, with the series
//! per pair counted in each; the shipped quantile panels and rules and `cellwatch report`
//! read either form alike; and each `--metrics-detail` level exports what it says.
use std::time::Duration;

use cellwatch_tests::{
    Agent, AgentOpts, Server, clients,
    prometheus::{PromOpts, Prometheus},
    ranges::{FLEET, HARNESS},
    scrape_until,
};

use crate::{
    prometheus::{PAIR_DASHBOARDS, dashboard_queries},
    report::report_ok,
};

/// Connections each pair makes.
const N: usize = 40;

/// cell-a and cell-b on the block's /16s `i` and `i + 1` (each test its own, as the
/// tests run side by side and every agent sees every connection).
fn config(i: u8) -> String {
    format!(
        "cells:\n  - {{ name: cell-a, cidrs: [{}] }}\n  - {{ name: cell-b, cidrs: [{}] }}\n\
         ignore_cidrs: [{}]\n",
        FLEET.cidr(i),
        FLEET.cidr(i + 1),
        HARNESS.cidr(0)
    )
}

/// N connections cell-a -> cell-a (allowed) and N cell-a -> cell-b (violations), each
/// 100 bytes up and 300 down.
fn traffic(i: u8) {
    let a = Server::start(FLEET.ip(i, 0, 1), N, 100, 300);
    let b = Server::start(FLEET.ip(i + 1, 0, 1), N, 100, 300);
    assert_eq!(clients(FLEET.ip(i, 0, 2), a.addr, N, 100, 300), N);
    assert_eq!(clients(FLEET.ip(i, 0, 3), b.addr, N, 100, 300), N);
    assert_eq!(a.join() + b.join(), 2 * N);
}

/// The single value of an instant query, or None.
fn value(prom: &Prometheus, q: &str) -> Option<f64> {
    let (ok, v) = prom.query(q);
    assert!(ok, "not accepted: {q}\n{}", prom.log());
    v.first().and_then(|s| s["value"][1].as_str()).and_then(|s| s.parse().ok())
}

/// The classic layout's bucket (index of the first default bound at or above `v`).
fn classic_bucket(v: f64) -> usize {
    const BOUNDS_US: [f64; 10] =
        [64.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 16384.0, 65536.0, 262_144.0, 1_048_576.0];
    BOUNDS_US.iter().position(|b| v <= b * 1e-6).unwrap_or(BOUNDS_US.len())
}

#[test]
fn native_histograms_reach_a_real_prometheus_and_agree_with_the_classic_ones() {
    let agent = Agent::start(AgentOpts { config: Some(&config(0)), ..Default::default() });
    let native = Prometheus::start(PromOpts {
        target: Some(agent.port),
        native_histograms: true,
        ..PromOpts::default()
    });
    let classic = Prometheus::start(PromOpts { target: Some(agent.port), ..PromOpts::default() });
    traffic(0);
    let pair = |dst: &str| format!("src_cell=\"cell-a\",dst_cell=\"{dst}\"");
    for dst in ["cell-a", "cell-b"] {
        let p = pair(dst);
        let count = format!("histogram_count(cellwatch_connect_latency_seconds{{{p}}})");
        native.wait_for("N connect latencies, natively", Duration::from_secs(30), || {
            value(&native, &count) == Some(N as f64)
        });
        let count = format!("cellwatch_connect_latency_seconds_count{{{p}}}");
        classic.wait_for("N connect latencies", Duration::from_secs(30), || {
            value(&classic, &count) == Some(N as f64)
        });
        let rtt = format!("histogram_count(cellwatch_rtt_seconds{{{p},direction=\"egress\"}})");
        native.wait_for("N RTT samples, natively", Duration::from_secs(30), || {
            value(&native, &rtt) == Some(N as f64)
        });
    }
    // Native for real: the histogram is one series with a `histogram` sample, and there
    // are no classic `_bucket` series in the native Prometheus.
    let (_, v) = native.query(&format!("cellwatch_connect_latency_seconds{{{}}}", pair("cell-a")));
    assert!(
        v.first().is_some_and(|s| s["histogram"].is_object() || s["histogram"].is_array()),
        "{v:?}"
    );
    let (_, buckets) = native.query("cellwatch_connect_latency_seconds_bucket");
    assert!(buckets.is_empty(), "classic buckets in the native Prometheus: {buckets:?}");

    for (family, labels) in [
        ("cellwatch_connect_latency_seconds", pair("cell-a")),
        ("cellwatch_connect_latency_seconds", pair("cell-b")),
        ("cellwatch_rtt_seconds", format!("{},direction=\"egress\"", pair("cell-a"))),
    ] {
        let sum_native = value(&native, &format!("histogram_sum({family}{{{labels}}})"));
        let sum_classic = value(&classic, &format!("{family}_sum{{{labels}}}"));
        assert!(sum_native.is_some() && sum_native == sum_classic, "{family}{{{labels}}} sums");
        let p99_native =
            value(&native, &format!("histogram_quantile(0.99, {family}{{{labels}}})")).unwrap();
        let p99_classic =
            value(&classic, &format!("histogram_quantile(0.99, {family}_bucket{{{labels}}})"))
                .unwrap();
        let (bn, bc) = (classic_bucket(p99_native), classic_bucket(p99_classic));
        println!("{family}{{{labels}}}: p99 native {p99_native:e} s, classic {p99_classic:e} s");
        assert!(
            bn.abs_diff(bc) <= 1,
            "{family}{{{labels}}}: p99 native {p99_native} (bucket {bn}) vs classic \
             {p99_classic} (bucket {bc})"
        );
    }

    // Series per pair, both ends on this node: every cellwatch series that names it.
    let series = |prom: &Prometheus, dst: &str| {
        value(prom, &format!("count({{__name__=~\"cellwatch_.+\",{}}})", pair(dst))).unwrap()
    };
    let counts = [
        (series(&classic, "cell-a"), series(&native, "cell-a")),
        (series(&classic, "cell-b"), series(&native, "cell-b")),
    ];
    println!(
        "series per pair (classic, native): allowed {:?}, violating {:?}",
        counts[0], counts[1]
    );
    assert_eq!(counts, [(38.0, 14.0), (40.0, 16.0)], "series per pair (classic, native)");

    // The shipped queries read either form: every dashboard panel and recording rule that
    // takes a quantile has data in both Prometheus, within one classic bucket of each other.
    // A second round after both stored the first, so rate() has an increase to work on.
    traffic(0);
    let quantiles: Vec<(String, String, String)> = PAIR_DASHBOARDS
        .iter()
        .flat_map(|name| dashboard_queries(name, "cell-a", ".*"))
        .filter(|(_, _, q)| q.contains("histogram_quantile"))
        .collect();
    assert_eq!(quantiles.len(), 4, "connect latency and RTT, p50 and p99: {quantiles:?}");
    let rules: Vec<String> = [
        "cellwatch:connect_latency_seconds:p50_5m",
        "cellwatch:connect_latency_seconds:p99_5m",
        "cellwatch:rtt_seconds:p99_5m",
    ]
    .iter()
    .map(|r| format!("{r}{{{}}}", pair("cell-b")))
    .collect();
    let rules = rules.iter().map(|r| ("rules".to_owned(), r.clone(), r.clone()));
    for (dash, title, q) in quantiles.into_iter().chain(rules) {
        let read = |prom: &Prometheus| {
            let mut v = None;
            prom.wait_for(&format!("{dash} / {title}"), Duration::from_secs(30), || {
                let (ok, result) = prom.query(&q);
                assert!(ok, "{dash} / {title}: rejected: {q}");
                v = result.first().and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok());
                v.is_some_and(f64::is_finite)
            });
            v.unwrap()
        };
        let (n, c) = (read(&native), read(&classic));
        let (bn, bc) = (classic_bucket(n), classic_bucket(c));
        assert!(bn.abs_diff(bc) <= 1, "{dash} / {title}: native {n}, classic {c}: {q}");
    }

    // The report reads the native histograms too (their buckets as classic ones) and says
    // the same of the same traffic.
    let report = |prom: &Prometheus| {
        let out = report_ok(&prom.url(), &["--format", "json"]);
        serde_json::from_str::<serde_json::Value>(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    assert_eq!(report(&native), report(&classic), "the report, native and classic");
}

/// What an agent at `detail` exports once the traffic is counted.
fn detail_agent(detail: &str) -> Agent {
    Agent::start(AgentOpts {
        config: Some(&config(2)),
        args: &["--metrics-detail", detail],
        ..Default::default()
    })
}

#[test]
fn each_detail_level_exports_what_it_says_on_real_traffic() {
    let pairs = detail_agent("pairs");
    let cells = detail_agent("cells");
    traffic(2);
    let opened = "cellwatch_connections_opened_total";
    let n = N as f64;
    let (aa, ab) = (
        [("src_cell", "cell-a"), ("dst_cell", "cell-a")],
        [("src_cell", "cell-a"), ("dst_cell", "cell-b")],
    );
    let with = |p: &[(&'static str, &'static str); 2], more: &[(&'static str, &'static str)]| {
        let mut l = p.to_vec();
        l.extend_from_slice(more);
        l
    };
    let egress_allowed = [("direction", "egress"), ("verdict", "allowed")];
    let egress_violation = [("direction", "egress"), ("verdict", "violation")];
    let m = scrape_until(&pairs, |m| {
        m.get(opened, &with(&aa, &egress_allowed)) == n
            && m.get(opened, &with(&ab, &egress_violation)) == n
            && m.get("cellwatch_connect_latency_seconds_count", &ab) == n
    });
    // `pairs`: the violating pair keeps its histograms, the allowed one only counters.
    assert_eq!(m.get("cellwatch_connect_latency_seconds_count", &aa), 0.0);
    assert_eq!(m.get("cellwatch_rtt_seconds_count", &with(&aa, &[("direction", "egress")])), 0.0);
    assert_eq!(m.get("cellwatch_rtt_seconds_count", &with(&ab, &[("direction", "egress")])), n);
    assert_eq!(
        m.get("cellwatch_bytes_sent_total", &with(&aa, &[("direction", "egress")])),
        100.0 * n
    );
    assert!(!m.0.keys().any(|k| k.starts_with("cellwatch_connect_latency_seconds_bucket")
        && k.contains("dst_cell=\"cell-a\"")));

    // `cells`: per source cell, no destination and no histogram; both pairs add up.
    let m = scrape_until(&cells, |m| {
        m.get(opened, &[("src_cell", "cell-a"), ("direction", "egress"), ("verdict", "allowed")])
            == n
            && m.get(
                opened,
                &[("src_cell", "cell-a"), ("direction", "egress"), ("verdict", "violation")],
            ) == n
    });
    let egress = [("src_cell", "cell-a"), ("direction", "egress")];
    assert_eq!(m.get("cellwatch_bytes_sent_total", &egress), 200.0 * n);
    assert_eq!(m.get("cellwatch_bytes_received_total", &egress), 600.0 * n);
    assert_eq!(m.get("cellwatch_boundary_violations_total", &egress), n);
    let (_, text) = cells.get("/metrics").expect("a scrape");
    let pair_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("cellwatch_") && l.contains("dst_cell="))
        .filter(|l| !l.starts_with("cellwatch_drain") && !l.starts_with("cellwatch_allow_rule"))
        .collect();
    assert!(pair_lines.is_empty(), "a destination at `cells`: {pair_lines:?}");
    assert!(!text.contains("_bucket{"), "a histogram at `cells`");
}

#[test]
fn an_unknown_detail_level_is_one_sentence_and_exit_2() {
    let out = std::process::Command::new(cellwatch_tests::agent_bin())
        .args(["run", "--metrics-detail", "most", "--listen", "127.0.0.1:1"])
        .output()
        .expect("the agent binary");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("full, pairs or cells"), "{err}");
}
