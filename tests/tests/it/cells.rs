//! The cell map in the kernel: verdicts and services checked against the plain-Rust
//! reference over random configs and real connections, and reloads (signal, file change, ConfigMap
//! symlink swap, bad file, deleted file) under live traffic.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use agent_core::{
    config::Config,
    policy::{self, Place},
};
use cellwatch_tests::{
    Agent, AgentOpts, Metrics, Rng, await_reloads, connect_from,
    ranges::{CELLS, HARNESS},
    write_atomic,
};

/// Listeners that accept and drop connections in the background until dropped.
struct Sink {
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Sink {
    fn start(ips: &[IpAddr]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let mut addrs = Vec::new();
        let mut threads = Vec::new();
        for ip in ips {
            let l = TcpListener::bind((*ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}"));
            l.set_nonblocking(true).unwrap();
            addrs.push(l.local_addr().unwrap());
            let (stop, accepted) = (stop.clone(), accepted.clone());
            let deadline = Instant::now() + Duration::from_secs(120);
            threads.push(thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match l.accept() {
                        Ok(_) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => thread::sleep(Duration::from_millis(1)),
                    }
                }
            }));
        }
        Self { addrs, stop, accepted, threads }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Series of `cellwatch_connections_opened_total` as (src, dst, direction, verdict), or
/// of `cellwatch_service_connections_opened_total` as (src, service, direction, verdict).
type Key = (String, String, String, String);

fn opened(m: &Metrics) -> BTreeMap<Key, f64> {
    series(m, "cellwatch_connections_opened_total", "dst_cell")
}

fn service_opened(m: &Metrics) -> BTreeMap<Key, f64> {
    series(m, "cellwatch_service_connections_opened_total", "service")
}

fn series(m: &Metrics, family: &str, to: &str) -> BTreeMap<Key, f64> {
    let mut out = BTreeMap::new();
    let prefix = format!("{family}{{");
    for (series, v) in &m.0 {
        let Some(rest) = series.strip_prefix(&prefix) else {
            continue;
        };
        let mut l = BTreeMap::new();
        for kv in rest.trim_end_matches('}').split(',') {
            if let Some((k, v)) = kv.split_once('=') {
                l.insert(k, v.trim_matches('"').to_owned());
            }
        }
        let key =
            (l["src_cell"].clone(), l[to].clone(), l["direction"].clone(), l["verdict"].clone());
        out.insert(key, *v);
    }
    out
}

fn delta(after: &BTreeMap<Key, f64>, before: &BTreeMap<Key, f64>) -> BTreeMap<Key, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

/// The property test's address universe: the first eight /16s of the area's block
/// (127.200.0.0/13), used by no other test.
fn in_universe(rng: &mut Rng) -> Ipv4Addr {
    let second = CELLS.at(rng.byte(8));
    Ipv4Addr::new(CELLS.net, second, rng.byte(4), 1 + rng.byte(6))
}

/// The universe is one /13, the shortest prefix the random configs use.
const _: () = assert!(CELLS.first.is_multiple_of(8) && CELLS.last - CELLS.first >= 7);

fn name(p: Place<'_>) -> Option<String> {
    match p {
        Place::Cell(n) => Some(n.to_owned()),
        Place::External => Some("external".to_owned()),
        Place::Ignored => None,
    }
}

/// A random config over the addresses in play: nested prefixes, globals, allow rules
/// (some on the listeners' ports), every external mode, sometimes an ignored range.
fn random_config(rng: &mut Rng, addrs: &[Ipv4Addr], ports: &[u16]) -> String {
    let cells = 2 + rng.index(5);
    let mut used = std::collections::HashSet::new();
    let mut y = String::from("cells:\n");
    for c in 0..cells {
        y += &format!("  - name: c{c}\n");
        if rng.chance(25) {
            y += "    global: true\n";
        }
        y += "    cidrs: [";
        for _ in 0..1 + rng.below(3) {
            let a = u32::from(*rng.pick(addrs));
            let len = 13 + rng.small(20); // /13 .. /32
            let net = Ipv4Addr::from(a & (u32::MAX << (32 - len)));
            if used.insert((net, len)) {
                y += &format!("\"{net}/{len}\", ");
            }
        }
        y += "]\n";
    }
    let mut rules = Vec::new();
    for _ in 0..rng.below(4) {
        let (f, t) = (rng.below(cells as u64), rng.below(cells as u64));
        rules.push(if rng.chance(50) {
            format!("  - {{ from: c{f}, to: c{t}, ports: [{}] }}\n", rng.pick(ports))
        } else {
            format!("  - {{ from: c{f}, to: c{t} }}\n")
        });
    }
    y += if rules.is_empty() { "allow: []\n" } else { "allow:\n" };
    y += &rules.concat();
    y += &format!("external: {}\n", rng.pick(&["allow", "violation", "ignore"]));
    let mut ignore = vec![format!("\"{}\"", HARNESS.cidr(0))];
    if rng.chance(30) {
        let a = u32::from(*rng.pick(addrs));
        let len = 24 + rng.small(9);
        let net = Ipv4Addr::from(a & (u32::MAX << (32 - len)));
        if !used.contains(&(net, len)) {
            ignore.push(format!("\"{net}/{len}\""));
        }
    }
    y += &format!("ignore_cidrs: [{}]\n", ignore.join(", "));
    with_services(rng, y, addrs, ports)
}

/// `base` with up to four random services around the addresses in play, with or without
/// the listeners' ports; a candidate the config would refuse (in no cell, across cells,
/// overlapping another) is left out, so the config stays valid.
fn with_services(rng: &mut Rng, base: String, addrs: &[Ipv4Addr], ports: &[u16]) -> String {
    let mut kept: Vec<String> = Vec::new();
    for i in 0..rng.below(5) {
        let a = u32::from(*rng.pick(addrs));
        let len = 22 + rng.small(11); // /22 .. /32
        let net = Ipv4Addr::from(a & (u32::MAX << (32 - len)));
        let ports = if rng.chance(50) {
            String::new()
        } else {
            let picked: Vec<String> =
                (0..1 + rng.below(2)).map(|_| rng.pick(ports).to_string()).collect();
            format!(", ports: [{}]", picked.join(", "))
        };
        let candidate = format!("  - {{ name: s{i}, cidrs: [\"{net}/{len}\"]{ports} }}\n");
        let trial = format!("{base}services:\n{}{candidate}", kept.concat());
        if Config::parse("trial.yaml", &trial).is_ok() {
            kept.push(candidate);
        }
    }
    if kept.is_empty() { base } else { format!("{base}services:\n{}", kept.concat()) }
}

#[test]
fn kernel_verdicts_match_the_reference() {
    const ROUNDS: usize = 6;
    const CONNS: usize = 150;
    let mut rng = Rng::from_env("kernel_verdicts_match_the_reference");
    let servers: Vec<Ipv4Addr> = (0..10).map(|_| in_universe(&mut rng)).collect();
    let clients: Vec<Ipv4Addr> = (0..30).map(|_| in_universe(&mut rng)).collect();
    let mut server_ips: Vec<IpAddr> = servers.iter().map(|a| IpAddr::V4(*a)).collect();
    server_ips.sort();
    server_ips.dedup();
    let sink = Sink::start(&server_ips);
    let ports: Vec<u16> = sink.addrs.iter().map(SocketAddr::port).collect();
    let all: Vec<Ipv4Addr> = servers.iter().chain(&clients).copied().collect();

    let first = random_config(&mut rng, &all, &ports);
    let agent = Agent::start(AgentOpts { config: Some(&first), ..AgentOpts::default() });
    let mut yaml = first;
    for round in 0..ROUNDS {
        if round > 0 {
            yaml = random_config(&mut rng, &all, &ports);
            write_atomic(&agent.config_path(), &yaml);
            await_reloads(&agent, "success", round as f64);
        }
        let cfg = Config::parse("round.yaml", &yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let m = agent.metrics();
        let (before, services_before) = (opened(&m), service_opened(&m));
        let mut want_services: BTreeMap<Key, f64> = BTreeMap::new();
        let accepted_before = sink.accepted.load(Ordering::Relaxed);
        let mut want: BTreeMap<Key, f64> = BTreeMap::new();
        for _ in 0..CONNS {
            let client = *rng.pick(&clients);
            let server = *rng.pick(&sink.addrs);
            let mapped = rng.chance(30);
            let (from, to) = if mapped {
                let m = |a: Ipv4Addr| IpAddr::V6(a.to_ipv6_mapped());
                let IpAddr::V4(s) = server.ip() else { unreachable!() };
                (m(client), SocketAddr::new(m(s), server.port()))
            } else {
                (IpAddr::V4(client), server)
            };
            let c =
                connect_from(from, to).unwrap_or_else(|e| panic!("connect {from} -> {to}: {e}"));
            drop(c);
            let v = policy::verdict(&cfg, from, to.ip(), to.port());
            let (Some(v), Some(src), Some(dst)) =
                (v, name(policy::place(&cfg, from)), name(policy::place(&cfg, to.ip())))
            else {
                continue;
            };
            let v = v.label();
            let service = policy::service(&cfg, to.ip(), to.port());
            for dir in ["egress", "ingress"] {
                *want.entry((src.clone(), dst.clone(), dir.into(), v.into())).or_default() += 1.0;
                if let Some(svc) = service {
                    let k = (src.clone(), svc.to_owned(), dir.into(), v.into());
                    *want_services.entry(k).or_default() += 1.0;
                }
            }
        }
        // Connections between two peers in no cell include other tests' traffic: left out.
        want.retain(|k, _| !(k.0 == "external" && k.1 == "external"));
        let deadline = Instant::now() + Duration::from_secs(10);
        let (got, got_services) = loop {
            let m = agent.metrics();
            let mut got = delta(&opened(&m), &before);
            got.retain(|k, _| !(k.0 == "external" && k.1 == "external"));
            let got_services = delta(&service_opened(&m), &services_before);
            if (got == want && got_services == want_services) || Instant::now() > deadline {
                break (got, got_services);
            }
            thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(got, want, "round {round}: kernel vs reference\nconfig:\n{yaml}");
        assert_eq!(
            got_services, want_services,
            "round {round}: kernel vs reference, services\nconfig:\n{yaml}"
        );
        assert!(sink.accepted.load(Ordering::Relaxed) >= accepted_before);
    }
}

/// Cells `{name}-a` and `{name}-b` on /16s `at` and `at + 1` of the area's block; nothing
/// else is watched.
fn two_cells(name: &str, at: u8) -> String {
    format!(
        "cells:\n  - name: {name}-a\n    cidrs: [{}]\n  - name: {name}-b\n    cidrs: [{}]\n\
         ignore_cidrs: []\nexternal: ignore\n",
        CELLS.cidr(at),
        CELLS.cidr(at + 1)
    )
}

/// Where the reload tests' cells are in the area's block (after the universe).
const BLUE_GREEN: u8 = 10;
const RED: u8 = 12;
const CONFIGMAP: u8 = 14;

/// Connections from cell `a` to cell `b`, one a millisecond, until stopped (bounded by
/// count and time); returns how many were established. Paced: every closed client
/// socket bound to a chosen address keeps its port out of every autobind connect on the
/// machine for TIME_WAIT's 60 s, so an unpaced loop would starve the other tests.
fn churn(stop: Arc<AtomicBool>, from: IpAddr, to: SocketAddr) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) && n < 5_000 && Instant::now() < deadline {
            if connect_from(from, to).is_ok() {
                n += 1;
            }
            thread::sleep(Duration::from_millis(1));
        }
        n
    })
}

#[test]
fn a_hundred_reloads_under_traffic_keep_counts_exact_and_cells_consistent() {
    const RELOADS: usize = 100;
    let (blue, green) = (two_cells("blue", BLUE_GREEN), two_cells("green", BLUE_GREEN));
    let agent = Agent::start(AgentOpts { config: Some(&blue), ..AgentOpts::default() });
    let sink = Sink::start(&[CELLS.ip(BLUE_GREEN + 1, 0, 1)]);
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = churn(stop.clone(), CELLS.ip(BLUE_GREEN, 0, 1), sink.addrs[0]);
    for i in 1..=RELOADS {
        write_atomic(&agent.config_path(), if i % 2 == 1 { &green } else { &blue });
        await_reloads(&agent, "success", i as f64);
    }
    stop.store(true, Ordering::Relaxed);
    let made = traffic.join().unwrap() as f64;
    assert!(made > RELOADS as f64, "too little traffic ({made}) to overlap the reloads");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (got, m) = loop {
        let m = agent.metrics();
        let got = opened(&m);
        let sum =
            |dir: &str| -> f64 { got.iter().filter(|(k, _)| k.2 == dir).map(|(_, v)| v).sum() };
        if (sum("egress") == made && sum("ingress") == made) || Instant::now() > deadline {
            break (got, m);
        }
        thread::sleep(Duration::from_millis(50));
    };
    for ((src, dst, dir, verdict), n) in &got {
        let consistent =
            (src == "blue-a" && dst == "blue-b") || (src == "green-a" && dst == "green-b");
        assert!(
            consistent,
            "{n} connections judged against a mix of configs: {src} -> {dst} ({dir}, {verdict})"
        );
    }
    for dir in ["egress", "ingress"] {
        let total: f64 = got.iter().filter(|(k, _)| k.2 == dir).map(|(_, v)| v).sum();
        assert_eq!(total, made, "{dir}: every connection counted once");
        let both: f64 = ["blue", "green"]
            .iter()
            .map(|c| {
                let l = [
                    ("src_cell", format!("{c}-a")),
                    ("dst_cell", format!("{c}-b")),
                    ("direction", dir.to_owned()),
                    ("verdict", "violation".to_owned()),
                ];
                let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
                m.get("cellwatch_connections_opened_total", &l)
            })
            .sum();
        assert_eq!(both, made, "{dir}");
    }
    let closed: f64 =
        m.0.iter()
            .filter(|(k, _)| k.starts_with("cellwatch_connections_closed_total{"))
            .map(|(_, v)| v)
            .sum();
    assert!(closed <= 2.0 * made, "closed {closed} > opened {}", 2.0 * made);
    assert_eq!(m.get("cellwatch_config_reloads_total", &[("result", "error")]), 0.0);
}

/// Judges one connection from red-a (127.212.0.1) to the sink in red-b and returns the
/// scrape after.
fn probe(agent: &Agent, sink: &Sink) -> Metrics {
    let before = opened(&agent.metrics());
    drop(connect_from(CELLS.ip(RED, 0, 1), sink.addrs[0]).unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = agent.metrics();
        if delta(&opened(&m), &before).values().sum::<f64>() >= 2.0 || Instant::now() > deadline {
            return m;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn egress(m: &Metrics, src: &str, dst: &str) -> f64 {
    m.get(
        "cellwatch_connections_opened_total",
        &[("src_cell", src), ("dst_cell", dst), ("direction", "egress"), ("verdict", "violation")],
    )
}

#[test]
fn bad_and_deleted_configs_keep_the_running_one() {
    let agent =
        Agent::start(AgentOpts { config: Some(&two_cells("red", RED)), ..AgentOpts::default() });
    let sink = Sink::start(&[CELLS.ip(RED + 1, 0, 1)]);
    assert_eq!(egress(&probe(&agent, &sink), "red-a", "red-b"), 1.0);

    // Bad YAML on SIGHUP: counted, logged, and the old config still judges.
    std::fs::write(agent.config_path(), "cells: [\n").unwrap();
    agent.signal("HUP");
    // The write itself is a change the directory watch also reloads (and fails): one or
    // two errors, depending on which comes first.
    let errors = |agent: &Agent| {
        agent.metrics().get("cellwatch_config_reloads_total", &[("result", "error")])
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while errors(&agent) < 1.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(errors(&agent) >= 1.0, "{}", agent.stderr());
    assert_eq!(egress(&probe(&agent, &sink), "red-a", "red-b"), 2.0);
    assert!(
        agent.stderr().contains("config reload failed; the running config stays"),
        "{}",
        agent.stderr()
    );

    // A valid config whose services with ports need more trie entries (300 addresses
    // times 300 ports) than the kernel's map holds: refused before anything is written,
    // with the map and the figures, and the old config still judges.
    let octet = |v: u16| u8::try_from(v).unwrap();
    let hosts: Vec<String> = (0..300u16)
        .map(|i| format!("\"{}/32\"", CELLS.ip(RED + 1, 1 + octet(i / 250), 1 + octet(i % 250))))
        .collect();
    let ports: Vec<String> = (1..=300).map(|p: u16| p.to_string()).collect();
    let too_big = format!(
        "{}services:\n  - {{ name: wide, cidrs: [{}], ports: [{}] }}\n",
        two_cells("huge", RED),
        hosts.join(", "),
        ports.join(", ")
    );
    let before = errors(&agent);
    write_atomic(&agent.config_path(), &too_big);
    await_reloads(&agent, "error", before + 1.0);
    assert!(
        agent
            .stderr()
            .contains("the config needs 90000 entries in the kernel map SERVICES_V4_A/_B"),
        "{}",
        agent.stderr()
    );
    assert_eq!(egress(&probe(&agent, &sink), "red-a", "red-b"), 3.0);
    let dir = cellwatch_tests::TempDir::new("too-big");
    let file = dir.write("cells.yaml", &too_big);
    let (status, out, err) =
        cellwatch_tests::cellwatch(&[], &["check-config", file.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "{out}{err}");
    assert!(
        err.starts_with(&format!("{}:1:1: the config needs 90000 entries", file.display())),
        "{err}"
    );

    // A good file again: picked up by the directory watch.
    write_atomic(&agent.config_path(), &two_cells("rose", RED));
    await_reloads(&agent, "success", 1.0);
    assert_eq!(egress(&probe(&agent, &sink), "rose-a", "rose-b"), 1.0);

    // Deleted: a warning, an error counted, and the last config stays.
    let before = errors(&agent);
    std::fs::remove_file(agent.config_path()).unwrap();
    await_reloads(&agent, "error", before + 1.0);
    assert!(
        agent.stderr().contains("the config file is gone; the running config stays"),
        "{}",
        agent.stderr()
    );
    assert_eq!(egress(&probe(&agent, &sink), "rose-a", "rose-b"), 2.0);
}

#[test]
fn a_configmap_symlink_swap_is_picked_up_once() {
    use std::os::unix::fs::symlink;
    let dir = cellwatch_tests::TempDir::new("configmap");
    let version = |n: u32, yaml: &str| {
        let d = dir.0.join(format!("..2026_11_25_{n}"));
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("cells.yaml"), yaml).unwrap();
        d
    };
    // The kubelet's layout: cells.yaml -> ..data/cells.yaml, ..data -> ..<timestamp>.
    let v1 = version(1, &two_cells("red", CONFIGMAP));
    symlink(v1.file_name().unwrap(), dir.0.join("..data")).unwrap();
    symlink("..data/cells.yaml", dir.0.join("cells.yaml")).unwrap();
    let path = dir.0.join("cells.yaml");
    let agent = Agent::start(AgentOpts {
        args: &["--config", path.to_str().unwrap()],
        ..AgentOpts::default()
    });

    let v2 = version(2, &two_cells("ruby", CONFIGMAP));
    symlink(v2.file_name().unwrap(), dir.0.join("..data_tmp")).unwrap();
    std::fs::rename(dir.0.join("..data_tmp"), dir.0.join("..data")).unwrap();
    std::fs::remove_dir_all(&v1).unwrap();
    await_reloads(&agent, "success", 1.0);
    thread::sleep(Duration::from_millis(800));
    await_reloads(&agent, "success", 1.0); // still exactly one
    let sink = Sink::start(&[CELLS.ip(CONFIGMAP + 1, 0, 1)]);
    drop(connect_from(CELLS.ip(CONFIGMAP, 0, 1), sink.addrs[0]).unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while egress(&agent.metrics(), "ruby-a", "ruby-b") < 1.0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(egress(&agent.metrics(), "ruby-a", "ruby-b"), 1.0);
}
