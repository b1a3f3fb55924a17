//! UDP and DNS on real traffic between network namespaces of the test's own: a global
//! namespace, a cell-a and a cell-b one, each joined to this one, which forwards between
//! them. A real resolver (Debian's dnsmasq) in the global namespace answers real clients
//! (dig) in the cell namespaces, and the per-cell answers by response code equal the
//! resolver's own query log; `cellwatch report` on a real Prometheus names both cells as
//! the resolver's blast radius. UDP flows from cell-a to cell-b, unconnected and
//! connected, count exactly each way on egress and ingress; they are violations in audit
//! mode, and refused with EPERM (and counted) in enforce mode. Without the UDP hooks
//! (`--without udp`) nothing of it is counted, and TCP is as before.
use std::{
    io::ErrorKind,
    net::{IpAddr, SocketAddr, UdpSocket},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use cellwatch_tests::{
    Agent, AgentOpts, Metrics, Pins, TempDir, await_reloads,
    netns::Netns,
    prometheus::{PromOpts, Prometheus},
    ranges::UDP_NETNS,
    scrape_until, write_atomic,
};

/// Three namespaces joined here: (this end, their end) of each is `.1` and `.2` of
/// 10.249.(base + i).0/24, i = 0 (global), 1 (cell-a), 2 (cell-b).
struct Cells {
    ns: [Netns; 3],
    base: u8,
}

impl Cells {
    fn new(tag: &str, base: u8) -> Self {
        let ns = ["g", "a", "b"].map(|c| {
            let i = u8::from(c == "a") + 2 * u8::from(c == "b");
            let (outside, inside) = (UDP_NETNS.ip(0, base + i, 1), UDP_NETNS.ip(0, base + i, 2));
            let n = Netns::new(&format!("{tag}{c}"), &[(outside, inside, 24)]);
            n.route_through(outside);
            n
        });
        Self { ns, base }
    }

    /// The address inside namespace `i`.
    fn ip(&self, i: u8) -> IpAddr {
        UDP_NETNS.ip(0, self.base + i, 2)
    }

    /// The config: global, cell-a and cell-b on the three /24s, the resolver a `dns`
    /// service with `protocol: udp`, in `mode`.
    fn config(&self, mode: &str) -> String {
        let net = |i: u8| format!("10.{}.{}.0/24", UDP_NETNS.first, self.base + i);
        format!(
            "cells:\n  - {{ name: global, global: true, cidrs: [\"{}\"] }}\n  \
             - {{ name: cell-a, cidrs: [\"{}\"] }}\n  - {{ name: cell-b, cidrs: [\"{}\"] }}\n\
             services:\n  - {{ name: dns, cidrs: [\"{}/32\"], ports: [53], protocol: udp }}\n\
             mode: {mode}\n",
            net(0),
            net(1),
            net(2),
            self.ip(0),
        )
    }

    /// A UDP socket bound to `port` (0: any) in namespace `i`.
    fn socket(&self, i: u8, port: u16) -> UdpSocket {
        let at = SocketAddr::new(self.ip(i), port);
        let s = self.ns[usize::from(i)].inside(|| UdpSocket::bind(at)).expect("bind");
        s.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
        s
    }
}

/// dnsmasq in the global namespace, with its query log; killed on drop.
struct Resolver {
    child: Child,
    log: std::path::PathBuf,
    _dir: TempDir,
}

impl Resolver {
    fn start(ns: &Netns, at: IpAddr) -> Self {
        let dir = TempDir::new("dnsmasq");
        let log = dir.0.join("queries.log");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "dnsmasq", "--keep-in-foreground"])
            .arg(format!("--listen-address={at}"))
            .args(["--bind-interfaces", "--port=53", "--no-resolv", "--no-hosts", "--user=root"])
            .arg("--group=root")
            // Names under `test` are answered here: `*.ok.test` with an address, anything
            // else under `test` with NXDOMAIN.
            .args(["--local=/test/", &format!("--address=/ok.test/{at}"), "--log-queries"])
            .arg(format!("--log-facility={}", log.display()))
            .arg(format!("--pid-file={}", dir.0.join("pid").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (cargo xtask setup installs dnsmasq-base)");
        let r = Self { child, log, _dir: dir };
        // Ready once it logs that it started.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !r.log().contains("started") {
            assert!(Instant::now() < deadline, "dnsmasq did not start: {}", r.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// From the resolver's log: per client address, (queries, of them NXDOMAIN).
    fn counts(&self, client: IpAddr) -> (usize, usize) {
        let log = self.log();
        let from = format!(" from {client}");
        let names: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("query[A] ") && l.ends_with(&from))
            .filter_map(|l| l.split("query[A] ").nth(1)?.split(' ').next())
            .collect();
        let nx = names
            .iter()
            .filter(|n| log.lines().any(|l| l.contains(&format!("config {n} is NXDOMAIN"))))
            .count();
        (names.len(), nx)
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        cellwatch_tests::terminate(&mut self.child);
    }
}

/// One query with dig from namespace `ns` to the resolver: its status (`NOERROR`, ...).
fn dig(ns: &Netns, server: IpAddr, name: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "dig", "+tries=1", "+time=5", "+noall", "+comments"])
        .arg(format!("@{server}"))
        .arg(name)
        .output()
        .expect("dig (cargo xtask setup installs dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("dig {name}: no answer: {text}"))
        .to_owned()
}

const DNS_QUERIES: &str = "cellwatch_dns_queries_total";

fn dns(m: &Metrics, cell: &str, rcode: &str) -> f64 {
    m.get(DNS_QUERIES, &[("src_cell", cell), ("service", "dns"), ("rcode", rcode)])
}

/// The resolver in the global namespace and the agent, then 20 queries from cell-a and 7
/// from cell-b (one NXDOMAIN), which the resolver's own log must show.
fn resolve_per_cell(cells: &Cells) -> (Agent, Resolver) {
    let agent = Agent::start(AgentOpts {
        config: Some(&cells.config("audit")),
        args: &["--live-interval", "1s"],
        ..AgentOpts::default()
    });
    let resolver = Resolver::start(&cells.ns[0], cells.ip(0));
    let server = cells.ip(0);
    for i in 0..20 {
        assert_eq!(dig(&cells.ns[1], server, &format!("a{i}.ok.test")), "NOERROR");
    }
    for i in 0..6 {
        assert_eq!(dig(&cells.ns[2], server, &format!("b{i}.ok.test")), "NOERROR");
    }
    assert_eq!(dig(&cells.ns[2], server, "nope.test"), "NXDOMAIN");
    let (a, a_nx) = resolver.counts(cells.ip(1));
    let (b, b_nx) = resolver.counts(cells.ip(2));
    assert_eq!((a, a_nx, b, b_nx), (20, 0, 7, 1), "{}", resolver.log());
    (agent, resolver)
}

#[test]
fn dns_answers_per_cell_and_response_code_equal_the_resolvers_log() {
    let cells = Cells::new("ud", 0);
    let (agent, resolver) = resolve_per_cell(&cells);
    let (a, _) = resolver.counts(cells.ip(1));
    let (b, b_nx) = resolver.counts(cells.ip(2));
    let m = scrape_until(&agent, |m| dns(m, "cell-b", "NXDOMAIN") == 1.0);
    assert_eq!(dns(&m, "cell-a", "NOERROR"), a as f64, "{m:?}");
    assert_eq!(dns(&m, "cell-b", "NOERROR"), (b - b_nx) as f64);
    assert_eq!(dns(&m, "cell-b", "NXDOMAIN"), b_nx as f64);
    let answered: f64 =
        m.0.iter().filter(|(k, _)| k.starts_with(DNS_QUERIES)).map(|(_, v)| v).sum();
    assert_eq!(answered, (a + b) as f64, "no other series: {m:?}");
    let latency = |cell: &str| {
        let l = [("src_cell", cell), ("service", "dns")];
        m.get("cellwatch_dns_latency_seconds_count", &l)
    };
    assert_eq!((latency("cell-a"), latency("cell-b")), (a as f64, b as f64));
    assert_eq!(m.get("cellwatch_events_lost_total", &[("source", "dns_answer_unmatched")]), 0.0);
    // Each dig is a flow of its own (a fresh source port), allowed (the resolver is
    // global), seen from the client's socket and from the resolver's.
    for (cell, n) in [("cell-a", a as f64), ("cell-b", b as f64)] {
        for direction in ["egress", "ingress"] {
            let l = [
                ("src_cell", cell),
                ("service", "dns"),
                ("direction", direction),
                ("verdict", "allowed"),
            ];
            let opened = m.get("cellwatch_udp_service_flows_opened_total", &l);
            assert_eq!(opened, n, "{cell} {direction}");
        }
    }
}

#[test]
fn the_report_names_the_resolvers_clients_as_its_blast_radius() {
    let cells = Cells::new("ur", 30);
    let (agent, _resolver) = resolve_per_cell(&cells);
    let prom = Prometheus::start(PromOpts { target: Some(agent.port), ..PromOpts::default() });
    prom.wait_for("the DNS flows in Prometheus", Duration::from_secs(30), || {
        let q = "count(cellwatch_udp_service_flows_opened_total{direction=\"egress\"})";
        let (ok, v) = prom.query(q);
        ok && v.first().is_some_and(|s| s["value"][1] == "2")
    });
    let url = prom.url();
    let out = crate::report::report_ok(&url, &["--range", "10m", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("report JSON");
    assert_eq!(crate::report::dependents(&v, "dns"), ["cell-a", "cell-b"], "{out}");
    let text = crate::report::report_ok(&url, &["--range", "10m"]);
    assert!(text.contains("dns (in global"), "{text}");
}

/// Sends `sizes` from `from` (unconnected: `send_to`) or over its connection, each
/// answered by `server` with `reply(size)` bytes; returns (bytes sent, bytes answered).
fn exchange(
    from: &UdpSocket,
    to: Option<SocketAddr>,
    server: &UdpSocket,
    sizes: &[usize],
) -> (usize, usize) {
    let (mut sent, mut answered) = (0, 0);
    let mut buf = vec![0u8; 65536];
    for &n in sizes {
        let payload = vec![7u8; n];
        match to {
            Some(to) => assert_eq!(from.send_to(&payload, to).expect("send_to"), n),
            None => assert_eq!(from.send(&payload).expect("send"), n),
        }
        let (got, peer) = server.recv_from(&mut buf).expect("the server receives");
        assert_eq!(got, n);
        let reply = vec![1u8; n / 3 + 1];
        server.send_to(&reply, peer).expect("reply");
        assert_eq!(from.recv(&mut buf).expect("the answer"), reply.len());
        sent += n;
        answered += reply.len();
    }
    (sent, answered)
}

#[test]
fn udp_flows_count_exactly_each_way_and_enforce_mode_refuses_them() {
    let cells = Cells::new("uf", 10);
    let agent = Agent::start(AgentOpts {
        config: Some(&cells.config("audit")),
        args: &["--live-interval", "1s"],
        ..AgentOpts::default()
    });
    let server = cells.socket(2, 7000);
    let to = server.local_addr().unwrap();
    // Unconnected: one socket, send_to; connected: another, send.
    let loose = cells.socket(1, 0);
    let sizes: Vec<usize> = (0..12).map(|i| 20 + 97 * i).collect();
    let (s1, r1) = exchange(&loose, Some(to), &server, &sizes);
    let tied = cells.socket(1, 0);
    tied.connect(to).expect("connect");
    let tied_sizes = [1, 100, 1000, 1400, 5];
    let (s2, r2) = exchange(&tied, None, &server, &tied_sizes);
    let n = (sizes.len() + tied_sizes.len()) as f64;
    let (sent, answered) = ((s1 + s2) as f64, (r1 + r2) as f64);

    let pair =
        |dir: &'static str| [("src_cell", "cell-a"), ("dst_cell", "cell-b"), ("direction", dir)];
    let m = scrape_until(&agent, |m| {
        m.get("cellwatch_udp_datagrams_received_total", &pair("ingress")) == n
            && m.get("cellwatch_udp_datagrams_received_total", &pair("egress")) == n
    });
    let get = |name: &str, dir| m.get(name, &pair(dir));
    // The client's socket (egress) sent the requests and received the answers; the
    // server's (ingress) the other way round.
    for (dir, (d_out, b_out), (d_in, b_in)) in
        [("egress", (n, sent), (n, answered)), ("ingress", (n, answered), (n, sent))]
    {
        assert_eq!(get("cellwatch_udp_datagrams_sent_total", dir), d_out, "{dir}: {m:?}");
        assert_eq!(get("cellwatch_udp_bytes_sent_total", dir), b_out, "{dir}");
        assert_eq!(get("cellwatch_udp_datagrams_received_total", dir), d_in, "{dir}");
        assert_eq!(get("cellwatch_udp_bytes_received_total", dir), b_in, "{dir}");
        let opened = [pair(dir).as_slice(), &[("verdict", "violation")]].concat();
        assert_eq!(m.get("cellwatch_udp_flows_opened_total", &opened), 2.0, "{dir}: two flows");
        // Audit mode: each flow a violation, once.
        assert_eq!(get("cellwatch_boundary_violations_total", dir), 2.0, "{dir}");
    }
    assert_eq!(m.get("cellwatch_udp_denied_total", &pair("egress")[..2]), 0.0);

    // Enforce mode: a new flow's sends and the connected socket's are refused with EPERM.
    write_atomic(&agent.config_path(), &cells.config("enforce"));
    agent.signal("HUP");
    await_reloads(&agent, "success", 1.0);
    let fresh = cells.socket(1, 0);
    for _ in 0..4 {
        let e = fresh.send_to(b"leak", to).expect_err("refused");
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    }
    let e = tied.send(b"leak").expect_err("refused");
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    server.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut buf = [0u8; 64];
    let nothing = server.recv_from(&mut buf).expect_err("nothing got through");
    assert!(matches!(nothing.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{nothing}");
    // What is allowed still goes: cell-a to global.
    let global = cells.socket(0, 7001);
    let (g_sent, _) = exchange(&fresh, Some(global.local_addr().unwrap()), &global, &[64]);
    assert_eq!(g_sent, 64);

    let m =
        scrape_until(&agent, |m| m.get("cellwatch_udp_denied_total", &pair("egress")[..2]) == 5.0);
    assert_eq!(m.get("cellwatch_udp_denied_total", &pair("egress")[..2]), 5.0, "{m:?}");
    // One more violation: the new flow, once for its four refused sends.
    assert_eq!(m.get("cellwatch_boundary_violations_total", &pair("egress")), 3.0);
    // Nothing refused was counted as sent.
    assert_eq!(m.get("cellwatch_udp_datagrams_sent_total", &pair("egress")), n);
    let to_global = [("src_cell", "cell-a"), ("dst_cell", "global"), ("direction", "egress")];
    assert_eq!(m.get("cellwatch_udp_datagrams_sent_total", &to_global), 1.0);
}

#[test]
fn without_the_udp_hooks_nothing_of_udp_is_counted_and_the_ladder_says_so() {
    let cells = Cells::new("ul", 20);
    let pins = Pins::new();
    let config = cells.config("audit");
    let start = |args| {
        Agent::start(AgentOpts {
            config: Some(&config),
            args,
            pins: Some(&pins),
            ..AgentOpts::default()
        })
    };
    let link = Path::new(pins.path()).join("links/cellwatch_udp_egress");
    {
        // A first run with the hooks pins them; the next, without, takes them off.
        let agent = start(&["--without", ""]);
        assert_eq!(agent.metrics().get("cellwatch_kernel_feature", &[("feature", "udp")]), 1.0);
        assert!(link.exists(), "the UDP link is pinned");
    }
    let agent = start(&["--without", "udp"]);
    assert!(!link.exists(), "--without udp takes the pinned UDP link off its hook");
    let server = cells.socket(2, 7000);
    let client = cells.socket(1, 0);
    exchange(&client, Some(server.local_addr().unwrap()), &server, &[10, 20, 30]);
    let m = agent.metrics();
    assert_eq!(m.get("cellwatch_kernel_feature", &[("feature", "udp")]), 0.0);
    let udp: Vec<&String> =
        m.0.iter()
            .filter(|(k, v)| k.starts_with("cellwatch_udp_") && **v != 0.0)
            .map(|(k, _)| k)
            .collect();
    assert!(udp.is_empty(), "no UDP counted: {udp:?}");
    assert!(agent.stderr().contains("udp is off (--without)"), "{}", agent.stderr());
}

#[test]
fn a_flow_ends_after_udp_idle_of_silence() {
    let cells = Cells::new("ui", 40);
    let agent = Agent::start(AgentOpts {
        config: Some(&cells.config("audit")),
        args: &["--udp-idle", "1s", "--live-interval", "1s"],
        ..AgentOpts::default()
    });
    let server = cells.socket(2, 7000);
    let to = Some(server.local_addr().unwrap());
    let client = cells.socket(1, 0);
    // Two datagrams close together are one flow; after 2.5 s of silence (more than
    // --udp-idle) the next begins another.
    exchange(&client, to, &server, &[10, 20]);
    std::thread::sleep(Duration::from_millis(2500));
    exchange(&client, to, &server, &[30]);
    let pair = |dir| {
        [
            ("src_cell", "cell-a"),
            ("dst_cell", "cell-b"),
            ("direction", dir),
            ("verdict", "violation"),
        ]
    };
    let m = scrape_until(&agent, |m| {
        m.get("cellwatch_udp_flows_opened_total", &pair("ingress")) == 2.0
    });
    for dir in ["egress", "ingress"] {
        assert_eq!(m.get("cellwatch_udp_flows_opened_total", &pair(dir)), 2.0, "{dir}: {m:?}");
        let p = &pair(dir)[..3];
        assert_eq!(m.get("cellwatch_boundary_violations_total", p), 2.0, "{dir}");
        let both = m.get("cellwatch_udp_datagrams_sent_total", p)
            + m.get("cellwatch_udp_datagrams_received_total", p);
        assert_eq!(both, 6.0, "{dir}: three each way");
    }
}

#[test]
fn a_full_flow_table_counts_each_datagram_it_cannot_hold_as_lost() {
    let cells = Cells::new("uo", 50);
    // 32 flows: the client's and the server's flow of the first 16 exchanges fill it.
    let config = format!("{}external: ignore\n", cells.config("audit"));
    let agent = Agent::start(AgentOpts {
        config: Some(&config),
        args: &["--udp-flow-table-capacity", "32", "--live-interval", "1s"],
        ..AgentOpts::default()
    });
    let server = cells.socket(2, 7000);
    let to = Some(server.local_addr().unwrap());
    let clients: Vec<UdpSocket> = (0..24).map(|_| cells.socket(1, 0)).collect();
    for c in &clients {
        exchange(c, to, &server, &[50]);
    }
    let lost =
        |m: &Metrics| m.get("cellwatch_events_lost_total", &[("source", "udp_flow_table_full")]);
    // The 8 exchanges past it: request and answer, each seen at both sockets.
    let m = scrape_until(&agent, |m| lost(m) == 32.0);
    assert_eq!(lost(&m), 32.0, "{m:?}");
    let pair = |dir| [("src_cell", "cell-a"), ("dst_cell", "cell-b"), ("direction", dir)];
    for dir in ["egress", "ingress"] {
        let opened = [pair(dir).as_slice(), &[("verdict", "violation")]].concat();
        assert_eq!(m.get("cellwatch_udp_flows_opened_total", &opened), 16.0, "{dir}");
        for family in
            ["cellwatch_udp_datagrams_sent_total", "cellwatch_udp_datagrams_received_total"]
        {
            assert_eq!(m.get(family, &pair(dir)), 16.0, "{family} {dir}");
        }
    }
    // Nothing else was counted: every observation is in a pair or lost.
    let counted: f64 =
        m.0.iter().filter(|(k, _)| k.starts_with("cellwatch_udp_datagrams_")).map(|(_, v)| v).sum();
    assert_eq!(counted + lost(&m), 4.0 * 24.0);
}

#[test]
fn ipv6_flows_count_exactly_each_way() {
    // One namespace of the test's own, both cells' IPv6 addresses on its loopback.
    let (outside, inside) = (UDP_NETNS.ip(0, 60, 1), UDP_NETNS.ip(0, 60, 2));
    let ns = Netns::new("u6", &[(outside, inside, 24)]);
    let (a, b): (IpAddr, IpAddr) =
        ("fd00:249:61::1".parse().unwrap(), "fd00:249:62::1".parse().unwrap());
    for ip in [a, b] {
        cellwatch_tests::netns::run(&format!("ip -n {} addr add {ip}/128 dev lo nodad", ns.name));
    }
    let config = "cells:\n  - { name: cell-a, cidrs: [\"fd00:249:61::/48\"] }\n  \
                  - { name: cell-b, cidrs: [\"fd00:249:62::/48\"] }\n";
    let agent = Agent::start(AgentOpts { config: Some(config), ..AgentOpts::default() });
    let bind = |ip: IpAddr, port| {
        let s = ns.inside(|| UdpSocket::bind(SocketAddr::new(ip, port))).expect("bind");
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s
    };
    let server = bind(b, 7000);
    let client = bind(a, 0);
    let sizes = [1, 64, 512, 1200, 9000];
    let (sent, answered) = exchange(&client, Some(server.local_addr().unwrap()), &server, &sizes);
    let pair = |dir| [("src_cell", "cell-a"), ("dst_cell", "cell-b"), ("direction", dir)];
    let m = scrape_until(&agent, |m| {
        m.get("cellwatch_udp_datagrams_received_total", &pair("egress")) == 5.0
    });
    for (dir, out, back) in [("egress", sent, answered), ("ingress", answered, sent)] {
        assert_eq!(m.get("cellwatch_udp_bytes_sent_total", &pair(dir)), out as f64, "{dir}: {m:?}");
        assert_eq!(m.get("cellwatch_udp_bytes_received_total", &pair(dir)), back as f64, "{dir}");
        assert_eq!(m.get("cellwatch_udp_datagrams_sent_total", &pair(dir)), 5.0, "{dir}");
        assert_eq!(m.get("cellwatch_boundary_violations_total", &pair(dir)), 1.0, "{dir}");
    }
}
