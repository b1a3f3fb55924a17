//! Kubernetes Services: a connection to a Service address counts under the pod
//! its DNAT reached, on egress as on ingress, with that pod's cell and verdict. Built as
//! kube-proxy builds it, in network namespaces the tests make: pods joined to a node,
//! iptables DNAT in the node (PREROUTING for pod clients, OUTPUT for the node's own), and
//! the agent running in the node's namespace (as the DaemonSet's `hostNetwork: true`).
use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener},
    thread,
    time::{Duration, Instant},
};

use cellwatch_tests::{
    Agent, AgentOpts, Metrics,
    kubeproxy::{Cluster, Pod},
    ranges::KUBEPROXY_NETNS,
};

/// The addresses of test `t`: `10.252.(20t + i).0.d`, or `fd00:252:<20t+i>::d`.
fn ip(t: u8, i: u8, d: u8, v6: bool) -> IpAddr {
    let third = t * 20 + i;
    if v6 {
        format!("fd00:252:{third}::{d}").parse().unwrap()
    } else {
        IpAddr::from([10, KUBEPROXY_NETNS.at(0), third, d])
    }
}

fn net(t: u8, i: u8, v6: bool) -> String {
    let third = t * 20 + i;
    if v6 { format!("\"fd00:252:{third}::/64\"") } else { format!("10.252.{third}.0/24") }
}

/// cell-a (pod clients), cell-b (the server pod), cell-h (the node's own addresses);
/// the Service range; cell-a and cell-h may reach cell-b on port 8081 only.
fn config(t: u8, v6: bool, mode: &str) -> String {
    format!(
        "cells:\n  - name: cell-a\n    cidrs: [{}]\n  - name: cell-b\n    cidrs: [{}]\n  \
         - name: cell-h\n    cidrs: [{}]\nservice_cidrs: [{}]\nallow:\n  \
         - {{ from: cell-a, to: cell-b, ports: [8081] }}\n  \
         - {{ from: cell-h, to: cell-b, ports: [8081] }}\nmode: {mode}\n",
        net(t, 1, v6),
        net(t, 2, v6),
        net(t, 3, v6),
        net(t, 9, v6),
    )
}

/// Serves `n` connections on `l`: reads `req` bytes, answers `resp`, closes. Bounded.
fn serve(l: TcpListener, n: usize, req: usize, resp: usize) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        l.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut done = 0;
        while done < n && Instant::now() < deadline {
            match l.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut buf = vec![0; req];
                    if s.read_exact(&mut buf).is_ok() && s.write_all(&vec![7; resp]).is_ok() {
                        done += 1;
                    }
                }
                Err(_) => thread::sleep(Duration::from_millis(2)),
            }
        }
        done
    })
}

/// One request and answer through a connection, then its close.
fn exchange(mut s: std::net::TcpStream, req: usize, resp: usize) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&vec![1; req]).unwrap();
    let mut buf = vec![0; resp];
    s.read_exact(&mut buf).unwrap();
}

fn opened(m: &Metrics, src: &str, dst: &str, dir: &str, verdict: &str) -> f64 {
    m.get(
        "cellwatch_connections_opened_total",
        &[("src_cell", src), ("dst_cell", dst), ("direction", dir), ("verdict", verdict)],
    )
}

fn closed(m: &Metrics, src: &str, dst: &str, dir: &str, verdict: &str) -> f64 {
    m.get(
        "cellwatch_connections_closed_total",
        &[("src_cell", src), ("dst_cell", dst), ("direction", dir), ("verdict", verdict)],
    )
}

fn flow(m: &Metrics, name: &str, src: &str, dst: &str, dir: &str) -> f64 {
    m.get(name, &[("src_cell", src), ("dst_cell", dst), ("direction", dir)])
}

/// Every opened connection from `src` whose server cell is `dst`, whatever the rest.
fn opened_to(m: &Metrics, src: &str, dst: &str) -> f64 {
    m.0.iter()
        .filter(|(k, _)| {
            k.starts_with("cellwatch_connections_opened_total{")
                && k.contains(&format!("src_cell=\"{src}\""))
                && k.contains(&format!("dst_cell=\"{dst}\""))
        })
        .map(|(_, v)| v)
        .sum()
}

fn agent(c: &Cluster, cfg: &str) -> Agent {
    Agent::start(AgentOpts {
        config: Some(cfg),
        netns: Some(&c.node),
        args: &["--live-interval", "200ms"],
        ..AgentOpts::default()
    })
}

/// Scrapes until `f` holds or 15 s pass.
fn scrape_until(a: &Agent, f: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = a.metrics();
        if f(&m) || Instant::now() > deadline {
            return m;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Where the clients connect from: a pod of cell-a, or the node itself (cell-h).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Clients {
    Pod,
    Node,
}

/// The scenario every layout must count exactly: through Service addresses to a pod of
/// cell-b, one connection held open (counted while open), `N` short ones against policy,
/// `M` allowed ones (the rule names the backend's port), and one the backend refuses.
fn through_services(t: u8, v6: bool, clients: Clients) {
    const N: usize = 12;
    const M: usize = 5;
    let mut c = Cluster::new(&format!("v{t}"));
    let gw = |i| ip(t, 0, i, v6);
    let client_pod = c.pod("a", ip(t, 1, 10, v6), gw(1));
    let server = c.pod("b", ip(t, 2, 10, v6), gw(2));
    c.default_route("b");
    let node_client = ip(t, 3, 1, v6);
    c.node_addr(node_client);
    let service_addr = |port| SocketAddr::new(ip(t, 9, 10, v6), port);
    c.service(service_addr(80), SocketAddr::new(server.addr, 8080));
    c.service(service_addr(81), SocketAddr::new(server.addr, 8081));
    c.service(service_addr(82), SocketAddr::new(server.addr, 8099));
    let src = if clients == Clients::Pod { "cell-a" } else { "cell-h" };
    let a = agent(&c, &config(t, v6, "audit"));

    let connect = |to: SocketAddr| match clients {
        Clients::Pod => c.connect(&client_pod, to),
        Clients::Node => c.connect_from_node(node_client, to),
    };
    let denied = serve(c.listen(&server, 8080), N + 1, 1, 2);
    let allowed = serve(c.listen(&server, 8081), M, 1, 2);

    // Held open: counted under the backend while it is open (the sweep finds it).
    let mut held = connect(service_addr(80)).expect("connect through the Service address");
    held.write_all(&[1]).unwrap();
    let mut two = [0; 2];
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    held.read_exact(&mut two).unwrap();
    let m = scrape_until(&a, |m| opened(m, src, "cell-b", "egress", "violation") >= 1.0);
    assert_eq!(
        (
            opened(&m, src, "cell-b", "egress", "violation"),
            flow(&m, "cellwatch_bytes_sent_total", src, "cell-b", "egress"),
        ),
        (1.0, 1.0),
        "the open connection counts under its backend while open"
    );

    for _ in 0..N {
        exchange(connect(service_addr(80)).unwrap(), 1, 2);
    }
    for _ in 0..M {
        exchange(connect(service_addr(81)).unwrap(), 1, 2);
    }
    let refused = connect(service_addr(82)).expect_err("nothing listens on the backend's port");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused, "{refused}");
    drop(held);
    assert_eq!((denied.join().unwrap(), allowed.join().unwrap()), (N + 1, M));

    let n = (N + 1) as f64;
    let done = |m: &Metrics| {
        closed(m, src, "cell-b", "egress", "violation") >= n
            && closed(m, src, "cell-b", "egress", "allowed") >= M as f64
            && closed(m, src, "cell-b", "ingress", "violation") >= n
    };
    scrape_until(&a, done);
    thread::sleep(Duration::from_millis(500));
    let m = a.metrics();
    let failed = |reason| {
        m.get(
            "cellwatch_connections_failed_total",
            &[("src_cell", src), ("dst_cell", "cell-b"), ("reason", reason)],
        )
    };
    for dir in ["egress", "ingress"] {
        assert_eq!(
            (
                opened(&m, src, "cell-b", dir, "violation"),
                closed(&m, src, "cell-b", dir, "violation"),
                opened(&m, src, "cell-b", dir, "allowed"),
                closed(&m, src, "cell-b", dir, "allowed"),
            ),
            (n, n, M as f64, M as f64),
            "{dir}: every connection through a Service address counts under its backend"
        );
    }
    assert_eq!(
        (
            flow(&m, "cellwatch_boundary_violations_total", src, "cell-b", "egress"),
            failed("refused"),
            flow(&m, "cellwatch_bytes_sent_total", src, "cell-b", "egress"),
            flow(&m, "cellwatch_bytes_received_total", src, "cell-b", "egress"),
        ),
        // The refused connect is an attempt too.
        (n + 1.0, 1.0, n + M as f64, 2.0 * (n + M as f64)),
    );
    for other in ["external", "unresolved"] {
        assert_eq!(opened_to(&m, src, other), 0.0, "nothing counts under `{other}`");
    }
    assert_eq!(m.get("cellwatch_kernel_feature", &[("feature", "conntrack_lookup")]), 1.0);
    for reason in ["request_queue_full", "announced_table_full", "ipvs_table_too_large"] {
        let dropped = m.get("cellwatch_service_lookups_dropped_total", &[("reason", reason)]);
        assert_eq!(dropped, 0.0, "{reason}: nothing past a bound in this test");
    }
    assert!(
        m.0.contains_key("cellwatch_service_lookups_dropped_total{reason=\"request_queue_full\"}")
    );
    drop(a);
    let _ = &client_pod;
}

#[test]
fn pod_clients_through_prerouting_dnat_count_under_the_pod_they_reach() {
    through_services(0, false, Clients::Pod);
}

#[test]
fn pod_clients_over_ipv6_count_under_the_pod_they_reach() {
    through_services(1, true, Clients::Pod);
}

#[test]
fn host_network_clients_through_output_dnat_count_under_the_pod_they_reach() {
    through_services(2, false, Clients::Node);
}

/// kube-proxy's IPVS mode: the same exact counts under the pod reached. The host's
/// kernel has no IPVS, so this test runs in the kernel matrix's VMs (Debian's 6.1 and
/// 6.12 kernels have it); `cargo xtask test` leaves it out of the host's run, and run
/// alone on such a host it fails, naming what is missing.
#[test]
fn ipvs_pod_clients_count_under_the_pod_they_reach() {
    const N: usize = 6;
    let t = 6;
    let mut c = Cluster::new(&format!("v{t}"));
    let client = c.pod("a", ip(t, 1, 10, false), ip(t, 0, 1, false));
    let server = c.pod("b", ip(t, 2, 10, false), ip(t, 0, 2, false));
    let service_addr = SocketAddr::new(ip(t, 9, 10, false), 80);
    c.ipvs_service(service_addr, SocketAddr::new(server.addr, 8080));
    let a = agent(&c, &config(t, false, "audit"));
    let served = serve(c.listen(&server, 8080), N, 1, 2);
    for _ in 0..N {
        exchange(c.connect(&client, service_addr).expect("through the IPVS virtual server"), 1, 2);
    }
    assert_eq!(served.join().unwrap(), N);
    let n = N as f64;
    let m = scrape_until(&a, |m| {
        closed(m, "cell-a", "cell-b", "egress", "violation") >= n
            && closed(m, "cell-a", "cell-b", "ingress", "violation") >= n
    });
    thread::sleep(Duration::from_millis(300));
    let m2 = a.metrics();
    for dir in ["egress", "ingress"] {
        assert_eq!(
            (
                opened(&m, "cell-a", "cell-b", dir, "violation"),
                closed(&m2, "cell-a", "cell-b", dir, "violation"),
            ),
            (n, n),
            "{dir}"
        );
    }
    for other in ["external", "unresolved"] {
        assert_eq!(opened_to(&m2, "cell-a", other), 0.0, "nothing counts under `{other}`");
    }
}

/// A Service with no endpoints: its connects are refused before any DNAT, so no backend
/// exists. They count under `unresolved`, never as `external`.
#[test]
fn a_service_without_endpoints_counts_as_unresolved_not_external() {
    let t = 3;
    let mut c = Cluster::new(&format!("v{t}"));
    let client = c.pod("a", ip(t, 1, 10, false), ip(t, 0, 1, false));
    c.default_route("a");
    let service_addr = SocketAddr::new(ip(t, 9, 20, false), 80);
    c.service_without_endpoints(service_addr);
    let a = agent(&c, &config(t, false, "audit"));
    for _ in 0..4 {
        let e = c.connect(&client, service_addr).expect_err("a Service without endpoints refuses");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    }
    let reason = |m: &Metrics, dst| {
        m.get(
            "cellwatch_connections_failed_total",
            &[("src_cell", "cell-a"), ("dst_cell", dst), ("reason", "refused")],
        )
    };
    let m = scrape_until(&a, |m| reason(m, "unresolved") >= 4.0);
    thread::sleep(Duration::from_millis(300));
    let m2 = a.metrics();
    assert_eq!((reason(&m, "unresolved"), reason(&m2, "unresolved")), (4.0, 4.0));
    assert_eq!(reason(&m2, "external"), 0.0);
}

/// Enforce mode cannot see the backend at `connect()` (the DNAT picks it after), so it
/// lets a connect to a Service address through; the connection is then counted, and its
/// event sent, as the leak it is.
#[test]
fn enforce_lets_service_connects_through_and_counts_their_leaks() {
    let t = 4;
    let mut c = Cluster::new(&format!("v{t}"));
    let client = c.pod("a", ip(t, 1, 10, false), ip(t, 0, 1, false));
    let server: Pod = c.pod("b", ip(t, 2, 10, false), ip(t, 0, 2, false));
    let service_addr = SocketAddr::new(ip(t, 9, 10, false), 80);
    c.service(service_addr, SocketAddr::new(server.addr, 8080));
    let a = agent(&c, &config(t, false, "enforce"));
    let served = serve(c.listen(&server, 8080), 3, 1, 2);
    // A direct connect from cell-a to cell-b is refused, as enforce does.
    let direct = c.connect(&client, SocketAddr::new(server.addr, 8080));
    assert_eq!(
        direct.expect_err("enforce refuses a direct cross-cell connect").raw_os_error(),
        Some(libc::EPERM)
    );
    for _ in 0..3 {
        exchange(c.connect(&client, service_addr).expect("through the Service address"), 1, 2);
    }
    assert_eq!(served.join().unwrap(), 3);
    let m = scrape_until(&a, |m| closed(m, "cell-a", "cell-b", "egress", "violation") >= 3.0);
    assert_eq!(
        (
            opened(&m, "cell-a", "cell-b", "egress", "violation"),
            m.get(
                "cellwatch_connections_denied_total",
                &[("src_cell", "cell-a"), ("dst_cell", "cell-b")],
            ),
            flow(&m, "cellwatch_boundary_violations_total", "cell-a", "cell-b", "egress"),
        ),
        // The refused direct connect is the one denied, and a violation too.
        (3.0, 1.0, 4.0)
    );
    // The events come through the ring buffer: wait for them (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (v, through) = loop {
        let v = cellwatch_tests::json(&a, "/violations?limit=10");
        let through = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["denied"] == false && e["direction"] == "egress" && e["dst"]["cell"] == "cell-b"
            })
            .count();
        if through >= 3 || Instant::now() > deadline {
            break (v, through);
        }
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(through, 3, "one event per leak through the Service: {v}");
}

/// Forwards 127.0.0.1:<returned port> here to 127.0.0.1:`port` inside namespace `ns`
/// (a Prometheus outside scraping the agent inside), until the returned flag is set.
fn forward_into(ns: &str, port: u16) -> (u16, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let here = l.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let (ns, flag) = (ns.to_owned(), stop.clone());
    thread::spawn(move || {
        // Bounded: it ends when told, or after two minutes.
        let deadline = Instant::now() + Duration::from_secs(120);
        while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
            let Ok((outside, _)) = l.accept() else {
                thread::sleep(Duration::from_millis(5));
                continue;
            };
            outside.set_nonblocking(false).unwrap();
            let inside = cellwatch_tests::netns::enter(&ns, || {
                std::net::TcpStream::connect(("127.0.0.1", port))
            });
            let Ok(inside) = inside else { continue };
            for (mut from, mut to) in
                [(outside.try_clone().unwrap(), inside.try_clone().unwrap()), (inside, outside)]
            {
                thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    (here, stop)
}

/// The shipped `CrossCellLeakage` alert fires, in a real Prometheus scraping the agent,
/// for a leak made through a Service address, under the two cells it joins.
#[test]
fn a_leak_through_a_service_address_fires_cross_cell_leakage() {
    use cellwatch_tests::prometheus::{PromOpts, Prometheus};
    let t = 5;
    let mut c = Cluster::new(&format!("v{t}"));
    let client = c.pod("a", ip(t, 1, 10, false), ip(t, 0, 1, false));
    let server = c.pod("b", ip(t, 2, 10, false), ip(t, 0, 2, false));
    let service_addr = SocketAddr::new(ip(t, 9, 10, false), 80);
    c.service(service_addr, SocketAddr::new(server.addr, 8080));
    let a = agent(&c, &config(t, false, "audit"));
    let (port, stop) = forward_into(&c.node, a.port);
    let prom = Prometheus::start(PromOpts { target: Some(port), ..PromOpts::default() });
    let served = serve(c.listen(&server, 8080), 3, 1, 2);
    for _ in 0..3 {
        exchange(c.connect(&client, service_addr).unwrap(), 1, 2);
    }
    assert_eq!(served.join().unwrap(), 3);
    prom.wait_for("firing CrossCellLeakage for cell-a -> cell-b", Duration::from_secs(90), || {
        !prom
            .firing("CrossCellLeakage")
            .iter()
            .filter(|a| a["labels"]["src_cell"] == "cell-a" && a["labels"]["dst_cell"] == "cell-b")
            .collect::<Vec<_>>()
            .is_empty()
    });
    let others: Vec<_> = prom
        .firing("CrossCellLeakage")
        .into_iter()
        .filter(|a| a["labels"]["dst_cell"] != "cell-b")
        .collect();
    assert!(others.is_empty(), "only cell-a -> cell-b leaks: {others:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
}
