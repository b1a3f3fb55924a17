//! The capability ladder: each optional kernel feature forced off with `--without` is
//! reported as missing while everything else stays as the kernel grants it; an unknown
//! name is one sentence and exit 2; and with no live-sweep mechanism at all the agent
//! still starts and counts every connection exactly when it closes, while
//! `/connections` says in one sentence why it cannot list. (The live, connection
//! listing, Service and restart areas run once more with the fallbacks forced:
//! `cellwatch_tests::WITHOUT_ENV`.)
use std::{
    io::{Read, Write},
    net::{IpAddr, TcpListener},
    thread,
    time::Duration,
};

use cellwatch_tests::{
    Agent, AgentOpts, Metrics, cellwatch, connect_from, ranges::LADDER, scrape_until,
};

/// Every `feature` label of `cellwatch_kernel_feature`.
const FEATURES: [&str; 7] = [
    "sk_storage_iter",
    "tcp_iter",
    "map_elem_iter",
    "prog_test_run",
    "destroy_sock_cookie",
    "conntrack_lookup",
    "udp",
];

fn reported(m: &Metrics) -> Vec<(String, f64)> {
    m.by_label("cellwatch_kernel_feature", "feature")
}

#[test]
fn an_unknown_feature_is_one_sentence_naming_the_valid_ones_and_exit_2() {
    let (status, _, stderr) = cellwatch(&[], &["run", "--without", "sk_storage_iter,fentry"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one sentence: {stderr}");
    assert!(lines[0].starts_with("cellwatch: unknown feature `fentry` for --without"), "{stderr}");
    for f in FEATURES {
        assert!(lines[0].contains(f), "{f} is not named: {stderr}");
    }
}

#[test]
fn each_feature_forced_off_is_reported_missing_and_the_rest_as_the_kernel_has_them() {
    let granted = {
        // An empty `--without` forces nothing, and keeps a forced run of the tests
        // (`WITHOUT_ENV`) from forcing this agent.
        let agent = Agent::start(AgentOpts { args: &["--without", ""], ..AgentOpts::default() });
        reported(&agent.metrics())
    };
    let labels: Vec<&str> = granted.iter().map(|(f, _)| f.as_str()).collect();
    let mut want = FEATURES.to_vec();
    want.sort_unstable();
    assert_eq!(labels, want, "every feature has its row");
    eprintln!("this kernel grants: {granted:?}");
    for f in FEATURES {
        let agent = Agent::start(AgentOpts { args: &["--without", f], ..AgentOpts::default() });
        let rows = reported(&agent.metrics());
        for (label, v) in &rows {
            let expect = if label == f {
                0.0
            } else {
                granted.iter().find(|(g, _)| g == label).map_or(-1.0, |(_, v)| *v)
            };
            assert_eq!(*v, expect, "--without {f}: {label}");
        }
        assert!(
            agent.stderr().contains(&format!("{f} is off (--without)")),
            "the log says what is done without {f}: {}",
            agent.stderr()
        );
    }
}

/// Without either live-sweep iterator (and either settling mechanism) the agent runs on
/// the core alone: an open connection counts nothing of its bytes while open (the loss
/// the ladder names), everything exactly at its close, and `/connections` answers 503
/// with the reason.
#[test]
fn on_the_core_alone_counts_are_exact_at_close_and_connections_says_why() {
    const N: usize = 200_001;
    const M: usize = 3_003;
    let config = format!(
        "cells:\n  - {{ name: cell-a, cidrs: [\"{}\"] }}\n  - {{ name: cell-b, cidrs: [\"{}\"] }}\n",
        LADDER.cidr(0),
        LADDER.cidr(1)
    );
    let agent = Agent::start(AgentOpts {
        config: Some(&config),
        args: &[
            "--live-interval",
            "200ms",
            "--without",
            "sk_storage_iter,tcp_iter",
            "--without",
            "map_elem_iter,prog_test_run",
        ],
        ..AgentOpts::default()
    });
    let m = agent.metrics();
    for f in ["sk_storage_iter", "tcp_iter", "map_elem_iter", "prog_test_run"] {
        assert_eq!(m.get("cellwatch_kernel_feature", &[("feature", f)]), 0.0, "{f}");
    }
    let (a, b): (IpAddr, IpAddr) = (LADDER.ip(0, 0, 1), LADDER.ip(1, 0, 1));
    let l = TcpListener::bind((b, 0)).unwrap();
    let mut c = connect_from(a, l.local_addr().unwrap()).unwrap();
    let (mut s, _) = l.accept().unwrap();
    for stream in [&c, &s] {
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    thread::scope(|t| {
        t.spawn(|| {
            let mut buf = vec![0u8; N];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&vec![b'm'; M]).unwrap();
        });
        c.write_all(&vec![b'n'; N]).unwrap();
    });
    let mut back = vec![0u8; M];
    c.read_exact(&mut back).unwrap();
    let pair = |dir| [("src_cell", "cell-a"), ("dst_cell", "cell-b"), ("direction", dir)];
    let pv = |dir| {
        [
            ("src_cell", "cell-a"),
            ("dst_cell", "cell-b"),
            ("direction", dir),
            ("verdict", "violation"),
        ]
    };
    scrape_until(&agent, |m| m.get("cellwatch_connections_active", &pair("ingress")) == 1.0);
    // Several intervals pass: no sweep runs, so nothing of the bytes is counted yet.
    thread::sleep(Duration::from_millis(800));
    let open = agent.metrics();
    for dir in ["egress", "ingress"] {
        assert_eq!(open.get("cellwatch_connections_active", &pair(dir)), 1.0, "{dir}");
        assert_eq!(open.get("cellwatch_connections_opened_total", &pv(dir)), 1.0, "{dir}");
        assert_eq!(open.get("cellwatch_bytes_sent_total", &pair(dir)), 0.0, "{dir}");
    }
    let (code, body) = agent.get("/connections").unwrap();
    assert_eq!(code, 503, "{body}");
    assert_eq!(body.trim().lines().count(), 1, "{body}");
    assert!(body.contains("neither of the live sweep's iterators"), "{body}");
    let (code, _) = agent.get("/readyz").unwrap();
    assert_eq!(code, 200);
    drop((c, s));
    let m = scrape_until(&agent, |m| {
        ["egress", "ingress"]
            .iter()
            .all(|d| m.get("cellwatch_connections_closed_total", &pv(d)) == 1.0)
    });
    for dir in ["egress", "ingress"] {
        assert_eq!(m.get("cellwatch_connections_opened_total", &pv(dir)), 1.0, "{dir}");
        assert_eq!(m.get("cellwatch_connections_active", &pair(dir)), 0.0, "{dir}");
    }
    assert_eq!(m.get("cellwatch_bytes_sent_total", &pair("egress")), N as f64);
    assert_eq!(m.get("cellwatch_bytes_received_total", &pair("egress")), M as f64);
    assert_eq!(m.get("cellwatch_bytes_sent_total", &pair("ingress")), M as f64);
    assert_eq!(m.get("cellwatch_bytes_received_total", &pair("ingress")), N as f64);
}
