//! Enforce mode on real loopback and network-namespace traffic: cross-cell connects fail
//! with EPERM and are counted exactly, everything allowed still connects, `enforce_cells`
//! limits the refusal, a reload to audit stops it, the pinned programs go on refusing
//! while no agent runs and nothing is refused once `uninstall` ran, audit's dry-run count
//! equals what enforce then refuses, and an unbound socket in a pod-like namespace is
//! judged by the namespace's address.
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};

use cellwatch_tests::{
    Agent, AgentOpts, Metrics, Pins, Rng, Server, await_reloads, cellwatch, clients, connect_from,
    json,
    netns::Netns,
    ranges::{ENFORCE, ENFORCE_NETNS, HARNESS},
    scrape_until, write_atomic,
};

const EPERM: i32 = 1;

/// A connect's outcome: true connected, false refused with EPERM; any other failure fails
/// the test.
fn admitted(r: std::io::Result<TcpStream>, what: &str) -> bool {
    match r {
        Ok(_) => true,
        Err(e) if e.raw_os_error() == Some(EPERM) => false,
        Err(e) => panic!("connect {what}: {e} (neither connected nor EPERM)"),
    }
}

/// Connects from `from` to `to`: true connected, false refused with EPERM.
fn try_connect(from: IpAddr, to: SocketAddr) -> bool {
    admitted(connect_from(from, to), &format!("{from} -> {to}"))
}

fn denied(m: &Metrics, src: &str, dst: &str) -> f64 {
    m.get("cellwatch_connections_denied_total", &[("src_cell", src), ("dst_cell", dst)])
}

fn violations(m: &Metrics, src: &str, dst: &str) -> f64 {
    m.get(
        "cellwatch_boundary_violations_total",
        &[("src_cell", src), ("dst_cell", dst), ("direction", "egress")],
    )
}

fn opened(m: &Metrics, src: &str, dst: &str, verdict: &str) -> f64 {
    m.get(
        "cellwatch_connections_opened_total",
        &[("src_cell", src), ("dst_cell", dst), ("direction", "egress"), ("verdict", verdict)],
    )
}

#[test]
fn cross_cell_connects_fail_with_eperm_and_are_counted_exactly() {
    const K: usize = 25;
    const N: usize = 10;
    let in_cell = Server::start(ENFORCE.ip(1, 0, 1), N, 10, 10);
    let global = Server::start(ENFORCE.ip(0, 0, 1), N, 10, 10);
    let by_rule = Server::start(ENFORCE.ip(3, 0, 1), N, 10, 10);
    // A server in cell-b for the refused connects: none of them may reach it.
    let b = TcpListener::bind((ENFORCE.ip(2, 0, 1), 0)).unwrap();
    let config = format!(
        "cells:\n  - {{ name: global, global: true, cidrs: [{}] }}\n  \
         - {{ name: cell-a, cidrs: [{}] }}\n  - {{ name: cell-b, cidrs: [{}] }}\n  \
         - {{ name: cell-c, cidrs: [{}] }}\n\
         allow:\n  - {{ from: cell-a, to: cell-c, ports: [{}] }}\n\
         ignore_cidrs: [{}]\nmode: enforce\n",
        ENFORCE.cidr(0),
        ENFORCE.cidr(1),
        ENFORCE.cidr(2),
        ENFORCE.cidr(3),
        by_rule.addr.port(),
        HARNESS.cidr(0)
    );
    let agent = Agent::start(AgentOpts { config: Some(&config), ..AgentOpts::default() });

    let a = ENFORCE.ip(1, 0, 2);
    let refused = (0..K).filter(|_| !try_connect(a, b.local_addr().unwrap())).count();
    assert_eq!(refused, K, "every cross-cell connect fails with EPERM");
    // Another port of the ruled pair is not covered by the rule.
    let other_port = SocketAddr::new(ENFORCE.ip(3, 0, 1), b.local_addr().unwrap().port());
    assert!(!try_connect(a, other_port), "the allow rule covers its port only");
    b.set_nonblocking(true).unwrap();
    assert!(b.accept().is_err(), "a refused connect reached the server");

    assert_eq!(clients(a, in_cell.addr, N, 10, 10), N);
    assert_eq!(clients(a, global.addr, N, 10, 10), N);
    assert_eq!(clients(a, by_rule.addr, N, 10, 10), N);
    assert_eq!(in_cell.join() + global.join() + by_rule.join(), 3 * N);

    let m = scrape_until(&agent, |m| opened(m, "cell-a", "cell-c", "allowed") >= N as f64);
    assert_eq!(denied(&m, "cell-a", "cell-b"), K as f64);
    assert_eq!(denied(&m, "cell-a", "cell-c"), 1.0);
    assert_eq!(violations(&m, "cell-a", "cell-b"), K as f64, "a refused leak is still a leak");
    assert_eq!(opened(&m, "cell-a", "cell-b", "violation"), 0.0);
    assert_eq!(opened(&m, "cell-a", "cell-a", "allowed"), N as f64);
    assert_eq!(opened(&m, "cell-a", "global", "allowed"), N as f64);
    assert_eq!(opened(&m, "cell-a", "cell-c", "allowed"), N as f64);
    assert_eq!(m.get("cellwatch_enforce_unresolved_total", &[]), 0.0);

    // Events reach /violations through the agent's ring-buffer drain: poll for them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let refusals = loop {
        let v = json(&agent, "/violations?limit=1000");
        let r: Vec<serde_json::Value> =
            v.as_array().unwrap().iter().filter(|e| e["denied"] == true).cloned().collect();
        if r.len() > K || std::time::Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(refusals.len(), K + 1, "{refusals:?}");
    let me = std::process::id();
    assert!(refusals.iter().all(|e| e["pid"] == me && e["comm"].is_string()), "{refusals:?}");
    assert!(refusals.iter().all(|e| e["src"]["cell"] == "cell-a"));
    assert!(agent.stderr().contains("cross-cell connect refused (enforce mode)"));
    assert!(
        agent.stderr().contains("cross-cell connects from cell-a, cell-b, cell-c are refused"),
        "{}",
        agent.stderr()
    );
}

fn two_cells(mode: &str, extra: &str) -> String {
    format!(
        "cells:\n  - {{ name: cell-a, cidrs: [{}] }}\n  - {{ name: cell-b, cidrs: \
         [{}] }}\nignore_cidrs: [{}]\nmode: {mode}\n{extra}",
        ENFORCE.cidr(4),
        ENFORCE.cidr(5),
        HARNESS.cidr(0)
    )
}

#[test]
fn enforce_cells_limits_it_a_reload_to_audit_stops_it_and_nothing_outlives_the_agent() {
    const N: usize = 8;
    let (a, b) = (ENFORCE.ip(4, 0, 2), ENFORCE.ip(5, 0, 2));
    let a_srv = TcpListener::bind((ENFORCE.ip(4, 0, 1), 0)).unwrap();
    let b_srv = TcpListener::bind((ENFORCE.ip(5, 0, 1), 0)).unwrap();
    let (to_a, to_b) = (a_srv.local_addr().unwrap(), b_srv.local_addr().unwrap());
    let pins = Pins::new();
    let mut agent = Agent::start(AgentOpts {
        config: Some(&two_cells("enforce", "enforce_cells: [cell-a]\n")),
        pins: Some(&pins),
        ..AgentOpts::default()
    });
    assert_eq!((0..N).filter(|_| try_connect(a, to_b)).count(), 0, "cell-a is enforced");
    assert_eq!((0..N).filter(|_| try_connect(b, to_a)).count(), N, "cell-b is not");
    let m = scrape_until(&agent, |m| violations(m, "cell-b", "cell-a") >= N as f64);
    assert_eq!((denied(&m, "cell-a", "cell-b"), denied(&m, "cell-b", "cell-a")), (N as f64, 0.0));
    assert_eq!(violations(&m, "cell-b", "cell-a"), N as f64, "flagged, not refused");

    write_atomic(&agent.config_path(), &two_cells("audit", "enforce_cells: [cell-a]\n"));
    await_reloads(&agent, "success", 1.0);
    assert_eq!((0..N).filter(|_| try_connect(a, to_b)).count(), N, "audit refuses nothing");
    write_atomic(&agent.config_path(), &two_cells("enforce", ""));
    await_reloads(&agent, "success", 2.0);
    assert_eq!((0..N).filter(|_| try_connect(b, to_a)).count(), 0, "every cell is enforced now");
    let m = agent.metrics();
    assert_eq!(
        (denied(&m, "cell-a", "cell-b"), denied(&m, "cell-b", "cell-a")),
        (N as f64, N as f64)
    );

    assert!(agent.stop().success(), "{}", agent.stderr());
    assert_eq!(
        (0..N).filter(|_| try_connect(b, to_a)).count(),
        0,
        "the pinned programs go on refusing while no agent runs"
    );
    let (status, out, err) = cellwatch(&[], &["uninstall", "--bpffs", pins.path()]);
    assert!(status.success(), "{err}");
    assert!(out.contains("removed"), "{out}");
    assert_eq!(
        (0..N).filter(|_| try_connect(a, to_b)).count(),
        N,
        "nothing is refused without the agent"
    );
}

#[test]
fn the_audit_dry_run_counts_exactly_what_enforce_then_refuses() {
    // Cells x, y, z and a global one; enforce applies to x and y only.
    let cells = ["g", "x", "y", "z"];
    let servers: Vec<TcpListener> =
        (0..4).map(|i| TcpListener::bind((ENFORCE.ip(10 + i, 0, 1), 0)).unwrap()).collect();
    let config = |mode: &str| {
        format!(
            "cells:\n  - {{ name: g, global: true, cidrs: [{}] }}\n  \
             - {{ name: x, cidrs: [{}] }}\n  - {{ name: y, cidrs: [{}] }}\n  \
             - {{ name: z, cidrs: [{}] }}\nallow:\n  - {{ from: x, to: y }}\n\
             ignore_cidrs: [{}]\nmode: {mode}\nenforce_cells: [x, y]\n",
            ENFORCE.cidr(10),
            ENFORCE.cidr(11),
            ENFORCE.cidr(12),
            ENFORCE.cidr(13),
            HARNESS.cidr(0)
        )
    };
    let mut rng = Rng::from_env("dry-run");
    let plan: Vec<(usize, usize)> = (0..90).map(|_| (rng.index(4), rng.index(4))).collect();
    let run = || -> usize {
        let refused = plan
            .iter()
            .filter(|(from, to)| {
                let src = ENFORCE.ip(10 + u8::try_from(*from).expect("below 4"), 0, 2);
                !try_connect(src, servers[*to].local_addr().unwrap())
            })
            .count();
        // Drain the accept queues so the backlog never fills.
        for s in &servers {
            s.set_nonblocking(true).unwrap();
            while s.accept().is_ok() {}
        }
        refused
    };
    let sum = |m: &Metrics, f: &dyn Fn(&Metrics, &str, &str) -> f64| -> f64 {
        ["x", "y"]
            .iter()
            .flat_map(|s| cells.iter().map(move |d| (*s, *d)))
            .map(|(s, d)| f(m, s, d))
            .sum()
    };

    let mut audit =
        Agent::start(AgentOpts { config: Some(&config("audit")), ..AgentOpts::default() });
    assert_eq!(run(), 0, "audit refuses nothing");
    let m = scrape_until(&audit, |_| false);
    let dry_run = sum(&m, &violations);
    assert!(dry_run > 0.0, "the plan has enforced leaks");
    assert!(audit.stop().success());

    let enforce =
        Agent::start(AgentOpts { config: Some(&config("enforce")), ..AgentOpts::default() });
    let refused = run();
    let m = enforce.metrics();
    assert_eq!(refused as f64, dry_run, "enforce refused what the dry run counted");
    assert_eq!(sum(&m, &denied), dry_run);
    // z is not enforced: its leaks still connect.
    let z_leaks = plan.iter().filter(|(f, t)| *f == 3 && *t != 0 && *t != 3).count();
    assert_eq!(
        m.get(
            "cellwatch_boundary_violations_total",
            &[("src_cell", "z"), ("dst_cell", "x"), ("direction", "egress")]
        ) + m.get(
            "cellwatch_boundary_violations_total",
            &[("src_cell", "z"), ("dst_cell", "y"), ("direction", "egress")]
        ),
        z_leaks as f64
    );
}

/// Host `h` of the namespace's IPv4 subnet, 10.251.0.0/24 (the area's block for it).
fn v4(h: u8) -> IpAddr {
    ENFORCE_NETNS.ip(0, 0, h)
}

/// Host `h` of the namespace's IPv6 subnet, fd00:251::/64.
fn v6(h: u8) -> IpAddr {
    format!("fd00:{}::{h}", ENFORCE_NETNS.at(0)).parse().expect("an IPv6 address")
}

/// `ignore_cidrs` for the pod test on subnet `mine` (0 or 1 of the area's namespace
/// block): loopback, and the other pod test's subnets, whose unbound connects this
/// test's agent (its programs see every connect on the node) must not count.
fn ignoring_the_other_pod(mine: u8) -> String {
    let other = 1 - mine;
    let at = ENFORCE_NETNS.at(0);
    let v6 = if other == 0 { format!("fd00:{at}::/64") } else { format!("fd00:{at}:0:1::/64") };
    format!(
        "ignore_cidrs: [\"127.0.0.0/8\", \"::1/128\", \"{}/24\", \"{v6}\"]\n",
        ENFORCE_NETNS.ip(0, other, 0)
    )
}

/// The pod tests' cell map, enforced: `global` at host 1, the pod's cell at 2, `other`
/// at 3 of the subnets of `v4` and `v6` (subnet `mine` of the area's block).
fn pod_config(v4: fn(u8) -> IpAddr, v6: fn(u8) -> IpAddr, mine: u8) -> String {
    format!(
        "cells:\n  - {{ name: global, global: true, cidrs: [{}/32, \"{}/128\"] }}\n  \
         - {{ name: pod-cell, cidrs: [{}/32, \"{}/128\"] }}\n  \
         - {{ name: other, cidrs: [{}/32, \"{}/128\"] }}\nmode: enforce\n{}",
        v4(1),
        v6(1),
        v4(2),
        v6(2),
        v4(3),
        v6(3),
        ignoring_the_other_pod(mine)
    )
}

/// A pod's namespace: one veth pair, removed on drop.
fn pod() -> Netns {
    pod_on("enf", v4, v6)
}

/// A pod's namespace `tag` on the subnets of `v4` and `v6`: the pod at host 2, this
/// namespace's end at 1, and a second address here at 3, in another cell.
fn pod_on(tag: &str, v4: fn(u8) -> IpAddr, v6: fn(u8) -> IpAddr) -> Netns {
    let ns = Netns::new(tag, &[(v4(1), v4(2), 24), (v6(1), v6(2), 64)]);
    ns.alias(v4(3), 24);
    ns.alias(v6(3), 64);
    ns
}

/// An unbound TCP connect from inside the namespace: true connected, false refused
/// with EPERM.
fn connects(ns: &Netns, to: SocketAddr) -> bool {
    admitted(ns.connect_unbound(to), &format!("from {} to {to}", ns.name))
}

#[test]
fn an_unbound_socket_in_a_pod_namespace_is_judged_by_the_namespace_address() {
    let ns = pod();
    let global = TcpListener::bind((v4(1), 0)).unwrap();
    let other = TcpListener::bind((v4(3), 0)).unwrap();
    let config = pod_config(v4, v6, 0);
    let agent = Agent::start(AgentOpts { config: Some(&config), ..AgentOpts::default() });
    // The namespace has made no connection yet: its address is unknown, so the first
    // unbound connect is let through, and counted as unresolved. It teaches the address.
    assert!(connects(&ns, other.local_addr().unwrap()), "unknown source: fail open");
    assert!(connects(&ns, global.local_addr().unwrap()));
    let refused = (0..3).filter(|_| !connects(&ns, other.local_addr().unwrap())).count();
    assert_eq!(refused, 3, "once known, the namespace's leaks are refused");
    let m = scrape_until(&agent, |m| denied(m, "pod-cell", "other") >= 3.0);
    assert_eq!(denied(&m, "pod-cell", "other"), 3.0);
    assert_eq!(m.get("cellwatch_enforce_unresolved_total", &[]), 1.0);
    assert_eq!(opened(&m, "pod-cell", "other", "violation"), 1.0);
    assert_eq!(opened(&m, "pod-cell", "global", "allowed"), 1.0);

    // IPv6 (connect6): the namespace's v6 address is learned from its first v6 connect,
    // to the global cell, which needs no source to judge; then its v6 leaks are refused.
    let global6 = TcpListener::bind((v6(1), 0)).unwrap();
    let other6 = TcpListener::bind((v6(3), 0)).unwrap();
    assert!(connects(&ns, global6.local_addr().unwrap()));
    let refused6 = (0..2).filter(|_| !connects(&ns, other6.local_addr().unwrap())).count();
    assert_eq!(refused6, 2, "the namespace's IPv6 leaks are refused");
    let m = scrape_until(&agent, |m| denied(m, "pod-cell", "other") >= 5.0);
    assert_eq!(denied(&m, "pod-cell", "other"), 5.0);
    assert_eq!(m.get("cellwatch_enforce_unresolved_total", &[]), 1.0);
}

/// The host end's link-local IPv6 address, once duplicate address detection is done
/// (bounded wait).
fn link_local(dev: &str, netns: Option<&str>) -> std::net::Ipv6Addr {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let mut cmd = std::process::Command::new("ip");
        if let Some(n) = netns {
            cmd.args(["-n", n]);
        }
        let out = cmd.args(["-6", "-o", "addr", "show", "dev", dev, "scope", "link"]).output();
        let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        let ready = text.lines().find(|l| !l.contains("tentative"));
        if let Some(addr) =
            ready.and_then(|l| l.split_whitespace().nth(3)?.split('/').next()?.parse().ok())
        {
            return addr;
        }
        assert!(std::time::Instant::now() < deadline, "no link-local address on {dev}: {text}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A pod cannot switch enforce off for itself by showing the agent a second source
/// address: not with a connect from an address bound with IP_FREEBIND (another cell's,
/// never routed back to it: the connection never establishes, and only an established
/// one teaches an address), nor with an IPv6 link-local connection (link-local addresses
/// are never the source towards a cell). Its unbound leaks stay refused.
#[test]
fn a_pod_cannot_switch_enforce_off_with_a_freebind_or_link_local_connect() {
    // Subnets of their own (10.251.1.0/24, fd00:251:0:1::/64): the other tests' pods
    // run beside this one.
    fn v4(h: u8) -> IpAddr {
        ENFORCE_NETNS.ip(0, 1, h)
    }
    fn v6(h: u8) -> IpAddr {
        format!("fd00:{}:0:1::{h}", ENFORCE_NETNS.at(0)).parse().expect("an IPv6 address")
    }
    let ns = pod_on("enfb", v4, v6);
    let global = TcpListener::bind((v4(1), 0)).unwrap();
    let other = TcpListener::bind((v4(3), 0)).unwrap();
    let global6 = TcpListener::bind((v6(1), 0)).unwrap();
    let other6 = TcpListener::bind((v6(3), 0)).unwrap();
    let config = pod_config(v4, v6, 1);
    let agent = Agent::start(AgentOpts { config: Some(&config), ..AgentOpts::default() });
    // The namespace's addresses are learned from its connections to the global cell.
    assert!(connects(&ns, global.local_addr().unwrap()));
    assert!(connects(&ns, global6.local_addr().unwrap()));
    assert!(!connects(&ns, other.local_addr().unwrap()), "a known namespace's leak is refused");

    // A connect from another cell's address, bound with IP_FREEBIND: the SYN leaves with
    // it, the answer goes elsewhere, and the connect never completes.
    let spoofed = ns.inside(|| {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        s.set_freebind_v4(true)?;
        s.bind(&SocketAddr::new(v4(3), 0).into())?;
        let r = s.connect_timeout(
            &global.local_addr().unwrap().into(),
            std::time::Duration::from_millis(500),
        );
        Ok(r.is_ok())
    });
    assert_eq!(spoofed.ok(), Some(false), "the spoofed connect does not complete");

    // A link-local IPv6 connection to the node's end of the link: it completes.
    let host_ll = link_local(&ns.host_if, None);
    let ll_listener = TcpListener::bind((IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0)).unwrap();
    let port = ll_listener.local_addr().unwrap().port();
    let pod_if = format!("{}n", ns.name);
    let _ = link_local(&pod_if, Some(&ns.name));
    let index = ns
        .inside(|| {
            let out =
                std::process::Command::new("ip").args(["-o", "link", "show", &pod_if]).output()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.split(':')
                .next()
                .and_then(|n| n.trim().parse::<u32>().ok())
                .ok_or_else(|| std::io::Error::other(text))
        })
        .unwrap();
    let to = SocketAddr::V6(std::net::SocketAddrV6::new(host_ll, port, 0, index));
    let ll = ns.inside(|| TcpStream::connect_timeout(&to, std::time::Duration::from_secs(5)));
    assert!(ll.is_ok(), "the link-local connection: {ll:?}");
    drop((ll, ll_listener.accept()));

    // Neither taught the agent anything: the pod's unbound leaks are still refused, in
    // both families, and nothing more was let through unjudged.
    let unresolved = agent.metrics().get("cellwatch_enforce_unresolved_total", &[]);
    assert!(!connects(&ns, other.local_addr().unwrap()), "IPv4 leak after the FREEBIND connect");
    assert!(!connects(&ns, other6.local_addr().unwrap()), "IPv6 leak after the link-local one");
    let m = scrape_until(&agent, |m| denied(m, "pod-cell", "other") >= 3.0);
    assert_eq!(denied(&m, "pod-cell", "other"), 3.0);
    assert_eq!(m.get("cellwatch_enforce_unresolved_total", &[]), unresolved);
}

/// A connect refused while both pair tables are full (made tiny here) is still counted:
/// refused with EPERM, and, having no pair entry to count its denial in, counted as a
/// pair-table loss, exactly once.
#[test]
fn a_connect_refused_with_both_pair_tables_full_is_counted_as_a_loss() {
    const CELLS: u8 = 6;
    let cidr = |i: u8| format!("127.{}.{i}.0/24", ENFORCE.at(6));
    let ip = |i: u8| ENFORCE.ip(6, i, 1);
    let mut config = String::from("cells:\n");
    for i in 0..CELLS {
        config.push_str(&format!("  - {{ name: c{i}, cidrs: [\"{}\"] }}\n", cidr(i)));
    }
    // Peers in no cell (every other test's traffic) are not counted at all here.
    config.push_str("external: ignore\nmode: enforce\n");
    let agent = Agent::start(AgentOpts {
        config: Some(&config),
        args: &["--pair-table-capacity", "4"],
        ..AgentOpts::default()
    });
    let lost = |m: &Metrics| m.get("cellwatch_events_lost_total", &[("source", "pair_table_full")]);
    // In-cell connections, two pair keys each (egress and ingress): 6 cells need 12,
    // and the two tables hold 8.
    for i in 0..CELLS {
        let l = TcpListener::bind((ip(i), 0)).unwrap();
        drop(connect_from(ip(i), l.local_addr().unwrap()).unwrap());
        drop(l.accept().unwrap());
    }
    let m = scrape_until(&agent, |m| lost(m) >= 1.0);
    let capacity = |map| m.get("cellwatch_map_capacity", &[("map", map)]);
    assert_eq!((capacity("pair_stats"), capacity("pair_overflow")), (4.0, 4.0));
    let before = lost(&m);
    assert!(before >= 1.0, "the tables are full");
    let target = TcpListener::bind((ip(CELLS - 1), 0)).unwrap();
    let refused = connect_from(ip(0), target.local_addr().unwrap());
    assert_eq!(refused.err().and_then(|e| e.raw_os_error()), Some(EPERM), "refused");
    let m = scrape_until(&agent, |m| lost(m) > before);
    assert_eq!(lost(&m), before + 1.0, "the refusal is counted once, as a loss");
    assert_eq!(denied(&m, "c0", &format!("c{}", CELLS - 1)), 0.0, "no entry to count it in");
}
