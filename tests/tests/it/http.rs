//! The HTTP endpoints under load and abuse: many concurrent scrapers get correct answers
//! and the agent stays responsive; oversized headers, slow (slowloris) clients and bad
//! query parameters are refused without harm.
use std::{
    io::{Read, Write},
    net::TcpStream,
    thread,
    time::{Duration, Instant},
};

use cellwatch_tests::{
    Agent, AgentOpts, Metrics, Server, clients, http_get, http_get_at,
    netns::Netns,
    ranges::{HARNESS, HTTP, HTTP_NETNS},
};

fn cells() -> String {
    format!(
        "cells:\n  - {{ name: cell-a, cidrs: [{}] }}\n  \
         - {{ name: cell-b, cidrs: [{}] }}\nignore_cidrs: [{}]\n",
        HTTP.cidr(0),
        HTTP.cidr(1),
        HARNESS.cidr(0)
    )
}

/// How long `/healthz` takes to answer 200.
fn health_time(port: u16) -> Duration {
    let t = Instant::now();
    let (status, _) = http_get(port, "/healthz").expect("healthz");
    assert_eq!(status, 200);
    t.elapsed()
}

#[test]
fn many_concurrent_scrapers_get_correct_answers() {
    const N: usize = 50;
    let agent = Agent::start(AgentOpts { config: Some(&cells()), ..AgentOpts::default() });
    let s = Server::start(HTTP.ip(1, 0, 1), N, 10, 10);
    assert_eq!(clients(HTTP.ip(0, 0, 1), s.addr, N, 10, 10), N);
    assert_eq!(s.join(), N);
    let key = [
        ("src_cell", "cell-a"),
        ("dst_cell", "cell-b"),
        ("direction", "egress"),
        ("verdict", "violation"),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.metrics().get("cellwatch_connections_closed_total", &key) < N as f64 {
        assert!(Instant::now() < deadline, "connections not counted");
        thread::sleep(Duration::from_millis(50));
    }

    // 64 clients, 10 requests each, alternating /metrics and /connections: bounded.
    let port = agent.port;
    let workers: Vec<_> = (0..64)
        .map(|w| {
            thread::spawn(move || {
                let mut opened = Vec::new();
                for i in 0..10 {
                    let path = if (w + i) % 2 == 0 { "/metrics" } else { "/connections?limit=5" };
                    let (status, body) = match http_get(port, path) {
                        Ok(answer) => answer,
                        Err(e) => return Err(format!("{path}: {e}")),
                    };
                    assert_eq!(status, 200, "{path}: {body}");
                    if path == "/metrics" {
                        opened.push(
                            Metrics::parse(&body).get("cellwatch_connections_opened_total", &key),
                        );
                    } else {
                        assert!(body.starts_with('['), "{body}");
                    }
                }
                Ok(opened)
            })
        })
        .collect();
    // Meanwhile the agent keeps answering quickly.
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        worst = worst.max(health_time(port));
        thread::sleep(Duration::from_millis(20));
    }
    for w in workers {
        let opened = w.join().expect("worker").unwrap_or_else(|e| {
            panic!("a request failed: {e}; the agent's log:\n{}", agent.stderr())
        });
        for opened in opened {
            assert_eq!(opened, N as f64, "every scrape under load is exact");
        }
    }
    assert!(worst < Duration::from_secs(2), "healthz took {worst:?} under load");
}

#[test]
fn oversized_headers_slow_clients_and_bad_parameters_are_refused_without_harm() {
    let agent = Agent::start(AgentOpts { config: Some(&cells()), ..AgentOpts::default() });
    let port = agent.port;

    // A 64 KiB header: refused (431) or cut off, never served.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let big = "x".repeat(64 * 1024);
    let _ = write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(!answer.starts_with("HTTP/1.1 200"), "an oversized request was served");
    if !answer.is_empty() {
        assert!(answer.starts_with("HTTP/1.1 431"), "{}", answer.lines().next().unwrap_or(""));
    }

    // 20 slowloris clients that never finish their headers: they hold a connection each
    // until the header timeout, and everyone else is still served at once.
    let slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").unwrap();
            c
        })
        .collect();
    assert!(health_time(port) < Duration::from_secs(1), "healthz blocked by slow clients");
    let t = Instant::now();
    for mut c in slow {
        c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
        assert!(!String::from_utf8_lossy(&rest).contains(" 200 "), "a slow client was served");
    }
    assert!(t.elapsed() < Duration::from_secs(12), "slow clients held on for {:?}", t.elapsed());

    // Bad parameters: one sentence and a 400, nothing silently ignored.
    for (path, want) in [
        ("/connections?verdict=maybe", "verdict"),
        ("/connections?limit=0", "limit"),
        ("/connections?colour=red", "unknown parameter"),
        ("/violations?cell=a", "unknown parameter"),
        ("/connections?cell=%ZZ", "escape"),
    ] {
        let (status, body) = http_get(port, path).unwrap();
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body.trim_end().lines().count(), 1, "{path}: {body}");
        assert!(body.contains(want), "{path}: {body}");
    }
    assert_eq!(http_get(port, "/metrics").unwrap().0, 200, "still serving after all that");
}

/// Listening on every address as the DaemonSet does (`hostNetwork`, `0.0.0.0`), the agent
/// answers `/metrics` and the probes to a pod (a network namespace of its own, joined by
/// a veth pair), but not `/connections` or `/violations`, which name the node's pods and
/// processes: those are for clients on the node, over loopback.
#[test]
fn detail_endpoints_answer_clients_on_the_node_only() {
    let agent = Agent::start(AgentOpts { listen_all: true, ..AgentOpts::default() });
    let (node, pod_ip) = (HTTP_NETNS.ip(0, 0, 1), HTTP_NETNS.ip(0, 0, 2));
    let pod = Netns::new("detail", &[(node, pod_ip, 24)]);
    let at = std::net::SocketAddr::new(node, agent.port);
    for (path, want) in [
        ("/metrics", 200),
        ("/healthz", 200),
        ("/readyz", 200),
        ("/connections", 403),
        ("/violations?limit=5", 403),
    ] {
        let (code, body) = pod.inside(|| http_get_at(at, path)).unwrap();
        assert_eq!(code, want, "{path} from the pod: {body}");
        if want == 403 {
            assert_eq!(body.trim().lines().count(), 1, "{body}");
            assert!(body.contains("served only to clients on the node"), "{body}");
            assert!(body.contains(&pod_ip.to_string()), "{body}");
            assert!(!body.contains("cell"), "nothing of the detail leaks: {body}");
        }
    }
    for path in ["/connections", "/violations"] {
        let (code, body) = agent.get(path).unwrap();
        assert_eq!(code, 200, "{path} over loopback: {body}");
        assert!(body.starts_with('['), "{body}");
    }
}

/// Clients that take every connection slot (128 that never finish a request) do not keep
/// the kubelet's probes waiting: `/healthz` and `/readyz` are answered at once on the
/// probe path, which answers nothing else (503), and everything is served again once the
/// header timeout has freed the slots.
#[test]
fn probes_are_answered_while_every_slot_is_taken() {
    let agent = Agent::start(AgentOpts::default());
    let port = agent.port;
    let hogs: Vec<TcpStream> = (0..128)
        .map(|_| {
            let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
            c
        })
        .collect();
    // Until the agent has taken them all: then a request for anything but a probe is
    // turned away at once.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut turned_away = (0, String::new());
    while Instant::now() < deadline {
        turned_away = http_get(port, "/metrics").unwrap();
        if turned_away.0 == 503 {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(turned_away.0, 503, "{}", turned_away.1);
    assert!(turned_away.1.contains("only /healthz and /readyz"), "{}", turned_away.1);
    for path in ["/healthz", "/readyz"] {
        let t = Instant::now();
        let (code, _) = http_get(port, path).unwrap();
        assert_eq!(code, 200, "{path}");
        assert!(t.elapsed() < Duration::from_secs(1), "{path} took {:?}", t.elapsed());
    }
    drop(hogs);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut code = 0;
    while code != 200 && Instant::now() < deadline {
        code = http_get(port, "/metrics").unwrap().0;
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(code, 200, "served again once the slots are free");
}
