//! Connection telemetry on real traffic between three cells: exact counts per pair,
//! direction and verdict; bytes; connect latency and RTT against the test's own
//! measurements; failures; `/connections` and `/violations`; IPv6; a connection older
//! than the agent; and a violation storm larger than the ring buffer.
use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv6Addr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use cellwatch_tests::{
    Agent, AgentOpts, Server, clients, connect_from, http_get, json, ranges::TELEMETRY,
    scrape_until,
};
use serde_json::Value;

/// A test's three cells, shared, blue and green: /16s `at`, `at + 1` and `at + 2` of the
/// area's block.
#[derive(Clone, Copy)]
struct Three(u8);

/// Each test's cells, apart from the others'.
const PER_PAIR_CELLS: Three = Three(0);
const HELD_CELLS: Three = Three(10);
const V6_CELLS: Three = Three(20);
const OLDER_CELLS: Three = Three(30);
const OLDER_BIG_CELLS: Three = Three(35);
const LATENCY_CELLS: Three = Three(40);
const STORM_CELLS: Three = Three(45);

impl Three {
    /// A global cell, two ordinary ones and an allow rule (green may call blue). Blue
    /// also holds ::1, which no other area uses.
    fn config(self) -> String {
        format!(
            r#"
cells:
  - name: shared
    global: true
    cidrs: ["{}"]
  - name: blue
    cidrs: ["{}", "::1/128"]
  - name: green
    cidrs: ["{}"]
allow:
  - {{ from: green, to: blue }}
ignore_cidrs: []
external: ignore
"#,
            TELEMETRY.cidr(self.0),
            TELEMETRY.cidr(self.0 + 1),
            TELEMETRY.cidr(self.0 + 2)
        )
    }

    fn shared(self, c: u8, d: u8) -> IpAddr {
        TELEMETRY.ip(self.0, c, d)
    }

    fn blue(self, c: u8, d: u8) -> IpAddr {
        TELEMETRY.ip(self.0 + 1, c, d)
    }

    fn green(self, c: u8, d: u8) -> IpAddr {
        TELEMETRY.ip(self.0 + 2, c, d)
    }
}

fn pdv<'a>(src: &'a str, dst: &'a str, dir: &'a str, verdict: &'a str) -> [(&'a str, &'a str); 4] {
    [("src_cell", src), ("dst_cell", dst), ("direction", dir), ("verdict", verdict)]
}

fn pd<'a>(src: &'a str, dst: &'a str, dir: &'a str) -> [(&'a str, &'a str); 3] {
    [("src_cell", src), ("dst_cell", dst), ("direction", dir)]
}

#[test]
fn three_cells_exact_per_pair_direction_and_verdict() {
    let net = PER_PAIR_CELLS;
    // No live sweep during the test: each connection's RTT is then observed once, at its
    // close, and the counts below are exact (the live tests cover the sweeps).
    let agent = Agent::start(AgentOpts {
        config: Some(&net.config()),
        args: &["--live-interval", "1h"],
        ..AgentOpts::default()
    });
    // (client, server, connections, request bytes, response bytes, src, dst, verdict)
    let flows = [
        (net.blue(0, 1), net.green(0, 1), 60, 100, 1000, "blue", "green", "violation"),
        (net.green(0, 2), net.blue(0, 2), 40, 200, 700, "green", "blue", "allowed"),
        (net.blue(0, 3), net.shared(0, 3), 30, 300, 50, "blue", "shared", "allowed"),
        (net.shared(0, 4), net.green(0, 4), 20, 400, 5000, "shared", "green", "allowed"),
        (net.blue(0, 5), net.blue(0, 6), 10, 500, 60, "blue", "blue", "allowed"),
    ];
    for (client, server, n, req, resp, ..) in flows {
        let s = Server::start(server, n, req, resp);
        assert_eq!(clients(client, s.addr, n, req, resp), n);
        assert_eq!(s.join(), n);
    }
    let closed = "cellwatch_connections_closed_total";
    let m = scrape_until(&agent, |m| {
        flows.iter().all(|f| {
            m.get(closed, &pdv(f.5, f.6, "ingress", f.7)) >= f.2 as f64
                && m.get(closed, &pdv(f.5, f.6, "egress", f.7)) >= f.2 as f64
        })
    });
    for (_, _, n, req, resp, src, dst, verdict) in flows {
        let n = n as f64;
        let other = if verdict == "violation" { "allowed" } else { "violation" };
        for dir in ["egress", "ingress"] {
            let what = format!("{src}->{dst} {dir}");
            assert_eq!(
                m.get("cellwatch_connections_opened_total", &pdv(src, dst, dir, verdict)),
                n,
                "opened {what}"
            );
            assert_eq!(m.get(closed, &pdv(src, dst, dir, verdict)), n, "closed {what}");
            assert_eq!(
                m.get("cellwatch_connections_opened_total", &pdv(src, dst, dir, other)),
                0.0,
                "{what} as {other}"
            );
            let violations = if verdict == "violation" { n } else { 0.0 };
            assert_eq!(
                m.get("cellwatch_boundary_violations_total", &pd(src, dst, dir)),
                violations,
                "violations {what}"
            );
            assert_eq!(
                m.get("cellwatch_connections_active", &pd(src, dst, dir)),
                0.0,
                "active {what}"
            );
            // RTT comes from the client's side once; every client here is in a cell.
            assert_eq!(
                m.get("cellwatch_rtt_seconds_count", &pd(src, dst, dir)),
                if dir == "egress" { n } else { 0.0 },
                "rtt samples {what}"
            );
        }
        let (c, s) = (n * req as f64, n * resp as f64);
        assert_eq!(
            m.get("cellwatch_bytes_sent_total", &pd(src, dst, "egress")),
            c,
            "{src}->{dst} client sent"
        );
        assert_eq!(
            m.get("cellwatch_bytes_received_total", &pd(src, dst, "egress")),
            s,
            "{src}->{dst} client received"
        );
        assert_eq!(
            m.get("cellwatch_bytes_sent_total", &pd(src, dst, "ingress")),
            s,
            "{src}->{dst} server sent"
        );
        assert_eq!(
            m.get("cellwatch_bytes_received_total", &pd(src, dst, "ingress")),
            c,
            "{src}->{dst} server received"
        );
        let p = [("src_cell", src), ("dst_cell", dst)];
        assert_eq!(
            m.get("cellwatch_connect_latency_seconds_count", &p),
            n,
            "latency samples {src}->{dst}"
        );
        assert_eq!(
            m.get(
                "cellwatch_connect_latency_seconds_bucket",
                &[("src_cell", src), ("dst_cell", dst), ("le", "+Inf")]
            ),
            n
        );
    }
    // Violation events: one per violating connection per side, none for the others. They
    // are drained every 100 ms, so wait for them too.
    let deadline = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let v = json(&agent, "/violations?limit=1000");
        if v.as_array().unwrap().len() >= 120 || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let events = v.as_array().unwrap();
    assert_eq!(events.len(), 120, "60 violating connections, seen from both sides");
    assert!(events.iter().all(|e| e["src"]["cell"] == "blue" && e["dst"]["cell"] == "green"));
    let egress: Vec<&Value> = events.iter().filter(|e| e["direction"] == "egress").collect();
    assert_eq!(egress.len(), 60);
    let me = std::process::id();
    assert!(egress.iter().all(|e| e["pid"] == me), "egress events carry the connecting pid {me}");
    assert_eq!(m.get("cellwatch_events_total", &[("source", "violation")]), 120.0);
}

#[test]
fn a_held_connection_is_listed_with_its_process() {
    let agent =
        Agent::start(AgentOpts { config: Some(&HELD_CELLS.config()), ..AgentOpts::default() });
    let l = TcpListener::bind((HELD_CELLS.green(0, 1), 0)).unwrap();
    let mut c = connect_from(HELD_CELLS.blue(0, 1), l.local_addr().unwrap()).unwrap();
    let (mut s, _) = l.accept().unwrap();
    c.write_all(&[7u8; 1234]).unwrap();
    let mut buf = [0u8; 1234];
    s.read_exact(&mut buf).unwrap();
    s.write_all(&[9u8; 77]).unwrap();
    c.read_exact(&mut [0u8; 77]).unwrap();

    let m = scrape_until(&agent, |m| {
        m.get("cellwatch_connections_active", &pd("blue", "green", "ingress")) == 1.0
    });
    assert_eq!(m.get("cellwatch_connections_active", &pd("blue", "green", "egress")), 1.0);
    assert_eq!(m.get("cellwatch_connections_active", &pd("blue", "green", "ingress")), 1.0);

    let conns = json(&agent, "/connections?cell=green&verdict=violation&limit=10");
    let conns = conns.as_array().unwrap();
    assert_eq!(conns.len(), 2, "both sides of the one connection: {conns:?}");
    // The client's comm is the connecting thread's (the kernel records the task); the
    // server's is found through /proc and is the process's.
    let thread = std::fs::read_to_string("/proc/thread-self/comm").unwrap().trim().to_owned();
    let process = std::fs::read_to_string("/proc/self/comm").unwrap().trim().to_owned();
    let me = std::process::id();
    for c in conns {
        assert_eq!(c["src"]["cell"], "blue");
        assert_eq!(c["dst"]["cell"], "green");
        assert_eq!(c["src"]["addr"], HELD_CELLS.blue(0, 1).to_string());
        assert_eq!(c["dst"]["port"], l.local_addr().unwrap().port());
        assert_eq!(c["verdict"], "violation");
        assert_eq!(c["pid"], me, "{c}");
        let comm = if c["direction"] == "egress" { &thread } else { &process };
        assert_eq!(c["comm"], comm.as_str(), "{c}");
        assert!(c["srtt_us"].as_u64().is_some(), "{c}");
        assert!(c["age_seconds"].as_f64().unwrap() >= 0.0);
    }
    let egress = conns.iter().find(|c| c["direction"] == "egress").unwrap();
    assert_eq!(
        (egress["bytes_sent"].as_u64(), egress["bytes_received"].as_u64()),
        (Some(1234), Some(77))
    );
    let ingress = conns.iter().find(|c| c["direction"] == "ingress").unwrap();
    assert_eq!(
        (ingress["bytes_sent"].as_u64(), ingress["bytes_received"].as_u64()),
        (Some(77), Some(1234))
    );
    // Filters: an allowed-only view of green has neither; a bad parameter is a 400.
    assert_eq!(
        json(&agent, "/connections?cell=green&verdict=allowed").as_array().unwrap().len(),
        0
    );
    let (status, body) = http_get(agent.port, "/connections?verdict=maybe").unwrap();
    assert_eq!((status, body.trim()), (400, "`verdict` must be allowed or violation, not `maybe`"));
    let (status, _) = http_get(agent.port, "/connections?limit=0").unwrap();
    assert_eq!(status, 400);
    drop((c, s));
    let m = scrape_until(&agent, |m| {
        m.get("cellwatch_connections_active", &pd("blue", "green", "ingress")) == 0.0
    });
    assert_eq!(m.get("cellwatch_connections_active", &pd("blue", "green", "egress")), 0.0);
}

#[test]
fn ipv6_on_loopback_is_counted() {
    let agent =
        Agent::start(AgentOpts { config: Some(&V6_CELLS.config()), ..AgentOpts::default() });
    const N: usize = 25;
    let s = Server::start(IpAddr::V6(Ipv6Addr::LOCALHOST), N, 10, 20);
    assert_eq!(clients(IpAddr::V6(Ipv6Addr::LOCALHOST), s.addr, N, 10, 20), N);
    assert_eq!(s.join(), N);
    let m = scrape_until(&agent, |m| {
        m.get("cellwatch_connections_closed_total", &pdv("blue", "blue", "ingress", "allowed"))
            >= N as f64
    });
    for dir in ["egress", "ingress"] {
        assert_eq!(
            m.get("cellwatch_connections_opened_total", &pdv("blue", "blue", dir, "allowed")),
            N as f64,
            "{dir}"
        );
        assert_eq!(
            m.get("cellwatch_connections_closed_total", &pdv("blue", "blue", dir, "allowed")),
            N as f64,
            "{dir}"
        );
    }
    assert_eq!(m.get("cellwatch_bytes_sent_total", &pd("blue", "blue", "egress")), (N * 10) as f64);
    assert_eq!(
        m.get("cellwatch_bytes_received_total", &pd("blue", "blue", "egress")),
        (N * 20) as f64
    );
}

#[test]
fn a_connection_older_than_the_agent_is_seen() {
    let l = TcpListener::bind((OLDER_CELLS.green(0, 1), 0)).unwrap();
    let c = connect_from(OLDER_CELLS.blue(0, 1), l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    let agent =
        Agent::start(AgentOpts { config: Some(&OLDER_CELLS.config()), ..AgentOpts::default() });
    let m = agent.metrics();
    for dir in ["egress", "ingress"] {
        assert_eq!(m.get("cellwatch_connections_active", &pd("blue", "green", dir)), 1.0, "{dir}");
        assert_eq!(
            m.get("cellwatch_boundary_violations_total", &pd("blue", "green", dir)),
            1.0,
            "{dir}"
        );
    }
    let conns = json(&agent, "/connections?cell=blue");
    let conns = conns.as_array().unwrap();
    assert_eq!(conns.len(), 2, "{conns:?}");
    assert!(conns.iter().all(|c| c["seeded"] == true && c["verdict"] == "violation"));
    assert!(
        conns.iter().any(|c| c["direction"] == "ingress")
            && conns.iter().any(|c| c["direction"] == "egress")
    );
    drop((c, s));
    let m = scrape_until(&agent, |m| {
        m.get("cellwatch_connections_closed_total", &pdv("blue", "green", "ingress", "violation"))
            >= 1.0
            && m.get(
                "cellwatch_connections_closed_total",
                &pdv("blue", "green", "egress", "violation"),
            ) >= 1.0
    });
    for dir in ["egress", "ingress"] {
        assert_eq!(
            m.get("cellwatch_connections_closed_total", &pdv("blue", "green", dir, "violation")),
            1.0,
            "{dir}"
        );
        assert_eq!(m.get("cellwatch_connections_active", &pd("blue", "green", dir)), 0.0, "{dir}");
    }
    assert_eq!(
        m.get("cellwatch_map_entries", &[("map", "conns")]),
        0.0,
        "the table is empty again"
    );
}

/// A connection older than the agent that moved more than 4 GiB before it started: what
/// it moves afterwards is reported exactly (its byte base is kept in 64 bits). The
/// kernel matrix skips it (software emulation would take minutes over 4 GiB).
#[test]
fn a_connection_older_than_the_agent_that_moved_over_4_gib() {
    const BEFORE: u64 = (4 << 30) + (1 << 20);
    const AFTER: usize = 1_000_003;
    const BACK: usize = 7_777;
    let l = TcpListener::bind((OLDER_BIG_CELLS.green(0, 1), 0)).unwrap();
    let mut c = connect_from(OLDER_BIG_CELLS.blue(0, 1), l.local_addr().unwrap()).unwrap();
    let (mut s, _) = l.accept().unwrap();
    // The server reads what comes, and says when it has a given total.
    let (total_tx, total_rx) = std::sync::mpsc::channel::<u64>();
    let mut reader = s.try_clone().unwrap();
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n as u64,
            }
            if got == BEFORE || got == BEFORE + AFTER as u64 {
                total_tx.send(got).unwrap();
            }
        }
    });
    let chunk = vec![0x42u8; 1 << 20];
    let mut sent = 0u64;
    while sent < BEFORE {
        let n = usize::try_from(BEFORE - sent).map_or(chunk.len(), |left| left.min(chunk.len()));
        c.write_all(&chunk[..n]).unwrap();
        sent += n as u64;
    }
    assert_eq!(total_rx.recv_timeout(Duration::from_secs(120)).unwrap(), BEFORE);
    let agent =
        Agent::start(AgentOpts { config: Some(&OLDER_BIG_CELLS.config()), ..AgentOpts::default() });
    c.write_all(&vec![0x43u8; AFTER]).unwrap();
    assert_eq!(total_rx.recv_timeout(Duration::from_secs(60)).unwrap(), BEFORE + AFTER as u64);
    s.write_all(&vec![0x44u8; BACK]).unwrap();
    let mut back = vec![0u8; BACK];
    c.read_exact(&mut back).unwrap();
    // Give the last segments a moment to leave and be counted by both ends.
    let deadline = Instant::now() + Duration::from_secs(10);
    let conns = loop {
        let conns = json(&agent, "/connections?cell=blue");
        let done = conns
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["bytes_sent"] == if c["direction"] == "egress" { AFTER } else { BACK });
        if done || Instant::now() > deadline {
            break conns;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let conns = conns.as_array().unwrap();
    assert_eq!(conns.len(), 2, "{conns:?}");
    for conn in conns {
        assert_eq!(conn["seeded"], true, "{conn}");
        let (sent, received) =
            if conn["direction"] == "egress" { (AFTER, BACK) } else { (BACK, AFTER) };
        assert_eq!(conn["bytes_sent"], sent, "{conn}");
        assert_eq!(conn["bytes_received"], received, "{conn}");
    }
    drop((c, s));
    drain.join().unwrap();
}

/// Stated tolerance: the kernel's connect latency is the handshake inside the test's own
/// connect() call, so it is positive and at most what the test measured; the kernel's
/// RTT at close is within a factor of 3 (plus 50 µs) of the srtt the test read with
/// TCP_INFO just before closing (the closing ACKs can move it).
#[test]
fn latency_and_rtt_agree_with_the_tests_own_measurements() {
    let agent =
        Agent::start(AgentOpts { config: Some(&LATENCY_CELLS.config()), ..AgentOpts::default() });
    const N: usize = 50;
    let l = TcpListener::bind((LATENCY_CELLS.green(0, 1), 0)).unwrap();
    let addr = l.local_addr().unwrap();
    let acceptor = std::thread::spawn(move || {
        for _ in 0..N {
            if let Ok((mut s, _)) = l.accept() {
                let _ = s.write_all(b"x");
                let _ = s.read(&mut [0u8; 1]);
            }
        }
    });
    let (mut connect_total, mut rtt_total) = (0.0, 0.0);
    for _ in 0..N {
        let t = Instant::now();
        let mut c: TcpStream = connect_from(LATENCY_CELLS.blue(0, 1), addr).unwrap();
        connect_total += t.elapsed().as_secs_f64();
        c.read_exact(&mut [0u8; 1]).unwrap();
        rtt_total += tcp_info_rtt_us(&c) as f64 * 1e-6;
    }
    acceptor.join().unwrap();
    let p = [("src_cell", "blue"), ("dst_cell", "green")];
    let m = scrape_until(&agent, |m| {
        m.get("cellwatch_rtt_seconds_count", &pd("blue", "green", "egress")) >= N as f64
    });
    let k_lat = m.get("cellwatch_connect_latency_seconds_sum", &p)
        / m.get("cellwatch_connect_latency_seconds_count", &p);
    let t_lat = connect_total / N as f64;
    eprintln!(
        "connect latency: kernel mean {:.1} µs, test mean {:.1} µs",
        k_lat * 1e6,
        t_lat * 1e6
    );
    assert!(k_lat > 0.0 && k_lat <= t_lat, "kernel {k_lat} vs test {t_lat}");
    let e = pd("blue", "green", "egress");
    let k_rtt = m.get("cellwatch_rtt_seconds_sum", &e) / m.get("cellwatch_rtt_seconds_count", &e);
    let t_rtt = rtt_total / N as f64;
    eprintln!("smoothed RTT: kernel mean {:.1} µs, test mean {:.1} µs", k_rtt * 1e6, t_rtt * 1e6);
    assert!(
        k_rtt <= 3.0 * t_rtt + 50e-6 && t_rtt <= 3.0 * k_rtt + 50e-6,
        "kernel {k_rtt} vs test {t_rtt}"
    );
}

/// `tcpi_rtt` (µs) of a socket of this namespace.
fn tcp_info_rtt_us(c: &TcpStream) -> u32 {
    cellwatch_tests::srtt_us(c.local_addr().unwrap())
}

#[test]
fn a_violation_storm_beyond_the_ring_buffer_keeps_counts_exact() {
    const STORM: usize = 3000;
    let agent = Agent::start(AgentOpts {
        config: Some(&STORM_CELLS.config()),
        args: &["--events-buffer-kib", "4", "--violation-event-rate", "1000000"],
        ..AgentOpts::default()
    });
    let s = Server::start(STORM_CELLS.green(0, 1), STORM, 1, 1);
    assert_eq!(clients(STORM_CELLS.blue(0, 1), s.addr, STORM, 1, 1), STORM);
    assert_eq!(s.join(), STORM);
    let want = 2.0 * STORM as f64;
    let m = scrape_until(&agent, |m| {
        m.get("cellwatch_connections_closed_total", &pdv("blue", "green", "ingress", "violation"))
            >= STORM as f64
    });
    let v = |dir| m.get("cellwatch_boundary_violations_total", &pd("blue", "green", dir));
    assert_eq!(v("egress") + v("ingress"), want, "violations are exact");
    let sent = m.get("cellwatch_events_total", &[("source", "violation")]);
    let full = m.get("cellwatch_events_lost_total", &[("source", "violation_ringbuf_full")]);
    let limited = m.get("cellwatch_events_lost_total", &[("source", "violation_rate_limit")]);
    eprintln!(
        "storm of {want}: {sent} events delivered, {full} lost to a full ring, {limited} rate-limited"
    );
    assert_eq!(sent + full + limited, want, "every violation is delivered or counted lost");
    assert!(full > 0.0, "a 4 KiB ring must overflow under a storm of {want} events");
    assert_eq!(limited, 0.0);
}
