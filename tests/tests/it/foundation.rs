//! The whole loop on real traffic: real programs loaded, real loopback TCP, counted
//! exactly, exported through /metrics.
use std::time::{Duration, Instant};

use cellwatch_tests::{Agent, AgentOpts, Server, clients, ranges::FOUNDATION, scrape_until};

/// Two cells on /16s `a` and `b` of the area's block, so tests running side by side stay
/// apart; loopback is watched (`ignore_cidrs: []`).
fn cells(a: u8, b: u8) -> String {
    format!(
        r#"
cells:
  - name: cell-a
    cidrs: ["{}"]
  - name: cell-b
    cidrs: ["{}"]
ignore_cidrs: []
"#,
        FOUNDATION.cidr(a),
        FOUNDATION.cidr(b)
    )
}

const N: usize = 200;
const SAME: usize = 50;
const REQ: usize = 300;
const RESP: usize = 1200;

fn pair(
    src: &'static str,
    dst: &'static str,
    dir: &'static str,
    verdict: &'static str,
) -> Vec<(&'static str, &'static str)> {
    vec![("src_cell", src), ("dst_cell", dst), ("direction", dir), ("verdict", verdict)]
}

#[test]
fn counts_exactly_the_connections_made() {
    // No live sweep during the test: one RTT sample per connection, at its close.
    let agent = Agent::start(AgentOpts {
        config: Some(&cells(0, 1)),
        args: &["--live-interval", "1h"],
        ..AgentOpts::default()
    });
    let before = agent.metrics();
    let opened = "cellwatch_connections_opened_total";
    assert_eq!(before.get(opened, &pair("cell-a", "cell-b", "egress", "violation")), 0.0);

    // N cross-cell connections (a -> b, a violation) and SAME same-cell ones (b -> b).
    let server = Server::start(FOUNDATION.ip(1, 0, 1), N + SAME, REQ, RESP);
    let (a, b) = (FOUNDATION.ip(0, 0, 1), FOUNDATION.ip(1, 0, 2));
    assert_eq!(clients(a, server.addr, N, REQ, RESP), N, "cross-cell round trips");
    assert_eq!(clients(b, server.addr, SAME, REQ, RESP), SAME, "same-cell round trips");
    assert_eq!(server.join(), N + SAME);

    let closed = "cellwatch_connections_closed_total";
    let m = scrape_until(&agent, |m| {
        m.get(closed, &pair("cell-a", "cell-b", "ingress", "violation")) >= N as f64
            && m.get(closed, &pair("cell-a", "cell-b", "egress", "violation")) >= N as f64
            && m.get(closed, &pair("cell-b", "cell-b", "ingress", "allowed")) >= SAME as f64
    });
    let n = N as f64;
    for dir in ["egress", "ingress"] {
        assert_eq!(m.get(opened, &pair("cell-a", "cell-b", dir, "violation")), n, "opened {dir}");
        assert_eq!(m.get(closed, &pair("cell-a", "cell-b", dir, "violation")), n, "closed {dir}");
        assert_eq!(
            m.get(opened, &pair("cell-a", "cell-b", dir, "allowed")),
            0.0,
            "no allowed a->b {dir}"
        );
        assert_eq!(
            m.get(opened, &pair("cell-b", "cell-b", dir, "allowed")),
            SAME as f64,
            "same cell {dir}"
        );
        let pd = [("src_cell", "cell-a"), ("dst_cell", "cell-b"), ("direction", dir)];
        assert_eq!(m.get("cellwatch_boundary_violations_total", &pd), n, "violations {dir}");
        assert_eq!(m.get("cellwatch_connections_active", &pd), 0.0, "active {dir}");
    }
    let pd = |dir| [("src_cell", "cell-a"), ("dst_cell", "cell-b"), ("direction", dir)];
    assert_eq!(m.get("cellwatch_bytes_sent_total", &pd("egress")), (N * REQ) as f64);
    assert_eq!(m.get("cellwatch_bytes_received_total", &pd("egress")), (N * RESP) as f64);
    assert_eq!(m.get("cellwatch_bytes_sent_total", &pd("ingress")), (N * RESP) as f64);
    assert_eq!(m.get("cellwatch_bytes_received_total", &pd("ingress")), (N * REQ) as f64);
    let p = [("src_cell", "cell-a"), ("dst_cell", "cell-b")];
    assert_eq!(m.get("cellwatch_connect_latency_seconds_count", &p), n);
    assert_eq!(m.get("cellwatch_rtt_seconds_count", &pd("egress")), n);
    assert_eq!(
        m.get(
            "cellwatch_connections_failed_total",
            &[("src_cell", "cell-a"), ("dst_cell", "cell-b"), ("reason", "refused")]
        ),
        0.0
    );
    // No same-cell connection is a violation.
    assert_eq!(
        m.get(
            "cellwatch_boundary_violations_total",
            &[("src_cell", "cell-b"), ("dst_cell", "cell-b"), ("direction", "egress")]
        ),
        0.0
    );
}

#[test]
fn refused_connects_are_failures_not_openings() {
    let agent = Agent::start(AgentOpts { config: Some(&cells(2, 3)), ..AgentOpts::default() });
    // A port nobody listens on: each connect gets a RST.
    let closed = std::net::TcpListener::bind((FOUNDATION.ip(3, 0, 1), 0)).unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    const K: usize = 25;
    let mut refused = 0;
    for _ in 0..K {
        match cellwatch_tests::connect_from(FOUNDATION.ip(2, 0, 1), addr) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused += 1,
            other => panic!("expected a refused connect, got {other:?}"),
        }
    }
    assert_eq!(refused, K);
    let key = [("src_cell", "cell-a"), ("dst_cell", "cell-b"), ("reason", "refused")];
    let m = scrape_until(&agent, |m| m.get("cellwatch_connections_failed_total", &key) >= K as f64);
    assert_eq!(m.get("cellwatch_connections_failed_total", &key), K as f64);
    assert_eq!(
        m.get(
            "cellwatch_connections_opened_total",
            &pair("cell-a", "cell-b", "egress", "violation")
        ),
        0.0
    );
    // Each attempt crossed the boundary, even though none got through.
    let pd = [("src_cell", "cell-a"), ("dst_cell", "cell-b"), ("direction", "egress")];
    assert_eq!(m.get("cellwatch_boundary_violations_total", &pd), K as f64);
}

#[test]
fn a_held_connection_is_active_until_closed() {
    let agent = Agent::start(AgentOpts { config: Some(&cells(4, 5)), ..AgentOpts::default() });
    let l = std::net::TcpListener::bind((FOUNDATION.ip(5, 0, 1), 0)).unwrap();
    let c = cellwatch_tests::connect_from(FOUNDATION.ip(4, 0, 1), l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    let active = |dir| [("src_cell", "cell-a"), ("dst_cell", "cell-b"), ("direction", dir)];
    let m =
        scrape_until(&agent, |m| m.get("cellwatch_connections_active", &active("ingress")) >= 1.0);
    assert_eq!(m.get("cellwatch_connections_active", &active("egress")), 1.0);
    assert_eq!(m.get("cellwatch_connections_active", &active("ingress")), 1.0);
    assert!(m.get("cellwatch_map_entries", &[("map", "conns")]) >= 2.0);
    drop(c);
    drop(s);
    let m = scrape_until(&agent, |m| {
        m.get("cellwatch_connections_active", &active("egress")) == 0.0
            && m.get("cellwatch_connections_active", &active("ingress")) == 0.0
    });
    assert_eq!(m.get("cellwatch_connections_active", &active("egress")), 0.0);
    assert_eq!(m.get("cellwatch_connections_active", &active("ingress")), 0.0);
}

/// Ten times more live connections than the connection table holds: every one it cannot
/// take is counted, none is given wrong cells, the agent keeps serving, the kernel's
/// aya-log warning reaches the agent's (JSON) log, and once they close the table counts
/// new connections exactly again.
#[test]
fn ten_times_the_connection_table_is_counted_and_logged() {
    const CAPACITY: usize = 1024;
    const HELD: usize = 5 * CAPACITY; // 2 sockets each: 10x the table's slots
    ensure_open_files(2 * HELD + 256);
    let cfg = cells(6, 7) + "external: ignore\n";
    let agent = Agent::start(AgentOpts {
        config: Some(&cfg),
        args: &["--conn-capacity", &CAPACITY.to_string(), "--log-format", "json"],
        ..AgentOpts::default()
    });
    let (client, server) = (FOUNDATION.ip(6, 0, 1), FOUNDATION.ip(7, 0, 1));
    let l = std::net::TcpListener::bind((server, 0)).unwrap();
    let mut held = Vec::with_capacity(2 * HELD);
    for i in 0..HELD {
        held.push(cellwatch_tests::connect_from(client, l.local_addr().unwrap()).unwrap());
        held.push(l.accept().unwrap().0);
        if i % 1024 == 0 {
            let (status, _) = cellwatch_tests::http_get(agent.port, "/healthz").unwrap();
            assert_eq!(status, 200, "the agent answers while its table overflows");
        }
    }
    let lost_key = [("source", "conn_table_full")];
    let want = (2 * HELD - CAPACITY) as f64;
    let m = scrape_until(&agent, |m| m.get("cellwatch_events_lost_total", &lost_key) >= want);
    assert_eq!(m.get("cellwatch_events_lost_total", &lost_key), want);
    assert_eq!(m.get("cellwatch_map_entries", &[("map", "conns")]), CAPACITY as f64);
    // Whatever was tracked was tracked right: one pair only, and every listed
    // connection has the cells of its addresses.
    let pairs: Vec<&String> =
        m.0.keys().filter(|k| k.starts_with("cellwatch_connections_opened_total{")).collect();
    assert!(
        pairs
            .iter()
            .all(|k| k.contains("src_cell=\"cell-a\"") && k.contains("dst_cell=\"cell-b\"")),
        "{pairs:?}"
    );
    let list = cellwatch_tests::json(&agent, "/connections?limit=10000");
    let list = list.as_array().expect("a JSON array");
    assert_eq!(list.len(), CAPACITY, "every tracked socket is listed");
    let (client_ip, server_ip) = (client.to_string(), server.to_string());
    for c in list {
        let ok = c.to_string();
        assert!(ok.contains("\"cell-a\"") && ok.contains("\"cell-b\""), "{ok}");
        assert!(ok.contains(&client_ip) && ok.contains(&server_ip), "{ok}");
    }
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !agent.stderr().contains("connection table full") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = agent.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("connection table full"))
        .unwrap_or_else(|| panic!("no kernel log record:\n{log}"));
    assert!(
        line.starts_with('{') && line.contains("\"level\":\"WARN\""),
        "not a JSON warning: {line}"
    );

    // Room again: new connections are counted exactly.
    let entries =
        |m: &cellwatch_tests::Metrics| m.get("cellwatch_map_entries", &[("map", "conns")]);
    let m = scrape_until(&agent, |m| entries(m) == 0.0);
    assert_eq!(entries(&m), 0.0, "the table empties as the connections close");
    let opened = |m: &cellwatch_tests::Metrics| {
        m.get(
            "cellwatch_connections_opened_total",
            &pair("cell-a", "cell-b", "egress", "violation"),
        )
    };
    let before = opened(&m);
    for _ in 0..10 {
        let c =
            cellwatch_tests::connect_from(FOUNDATION.ip(6, 0, 2), l.local_addr().unwrap()).unwrap();
        drop((c, l.accept().unwrap()));
    }
    let m = scrape_until(&agent, |m| opened(m) >= before + 10.0);
    assert_eq!(opened(&m), before + 10.0);
    assert_eq!(m.get("cellwatch_events_lost_total", &lost_key), want, "no loss with room");
}

/// Raises the soft open-file limit to the hard one if `need` is above it; fails loudly
/// when even the hard limit is too low.
fn ensure_open_files(need: usize) {
    let limits = || -> (usize, usize) {
        let text = std::fs::read_to_string("/proc/self/limits").unwrap();
        let line = text.lines().find(|l| l.starts_with("Max open files")).unwrap();
        let v: Vec<usize> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        (v[0], v[1])
    };
    let (soft, hard) = limits();
    if soft < need {
        let pid = std::process::id().to_string();
        let _ = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={hard}:{hard}")])
            .status();
    }
    let (soft, _) = limits();
    assert!(
        soft >= need,
        "this test holds {need} sockets but the open-file limit is {soft} (hard {hard})"
    );
}

/// The optional kernel features the agent reports are the ones this kernel has: a
/// `sock_cookie` field in the tcp tracepoints' formats (tracefs is the reference).
#[test]
fn kernel_features_are_reported_as_the_kernel_has_them() {
    let agent = Agent::start(AgentOpts::default());
    let m = agent.metrics();
    // Closing a connection older than the agent needs the socket's cookie and address in
    // the destroy tracepoint.
    let event = "tcp_destroy_sock";
    let format = std::fs::read_to_string(format!("/sys/kernel/tracing/events/tcp/{event}/format"))
        .unwrap_or_else(|e| panic!("tracefs format of tcp:{event}: {e}"));
    let has = [" sock_cookie;", " skaddr;"].iter().all(|f| format.lines().any(|l| l.contains(f)));
    let reported = m.get("cellwatch_kernel_feature", &[("feature", "destroy_sock_cookie")]);
    assert_eq!(reported, f64::from(u8::from(has)), "destroy_sock_cookie");
    assert!(
        !m.0.keys().any(|k| k.contains("rst_sock_cookie")),
        "the reset tracepoint is no longer used"
    );
    eprintln!("destroy_sock_cookie: {has}");
}
