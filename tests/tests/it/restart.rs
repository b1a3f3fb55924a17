//! Restarts lose nothing: the programs and maps stay pinned under `--bpffs` while no
//! agent runs, and the next agent adopts them, or swaps its own programs onto the same
//! links, with every counter where it was. State it cannot read is removed once, said
//! in one line and counted, and the agent runs on.
use std::{
    net::{IpAddr, TcpListener},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use cellwatch_tests::{
    Agent, AgentOpts, Metrics, Pins, cellwatch, connect_from, prog_ids_of, ranges::RESTART,
    scrape_until,
};

/// Cell a and cell b on /16s `a` and `b` of the area's block, so each test has its own;
/// loopback outside them is not watched.
fn cells(a: u8, b: u8) -> String {
    format!(
        "cells:\n  - {{ name: cell-a, cidrs: [\"{}\"] }}\n  \
         - {{ name: cell-b, cidrs: [\"{}\"] }}\nignore_cidrs: []\nexternal: ignore\n",
        RESTART.cidr(a),
        RESTART.cidr(b)
    )
}

fn pair(dir: &'static str) -> [(&'static str, &'static str); 4] {
    [("src_cell", "cell-a"), ("dst_cell", "cell-b"), ("direction", dir), ("verdict", "violation")]
}

fn opened(m: &Metrics, dir: &'static str) -> f64 {
    m.get("cellwatch_connections_opened_total", &pair(dir))
}

fn closed(m: &Metrics, dir: &'static str) -> f64 {
    m.get("cellwatch_connections_closed_total", &pair(dir))
}

fn active(m: &Metrics, dir: &'static str) -> f64 {
    m.get("cellwatch_connections_active", &pair(dir)[..3])
}

fn violations(m: &Metrics, dir: &'static str) -> f64 {
    m.get("cellwatch_boundary_violations_total", &pair(dir)[..3])
}

/// Cross-cell connections from cell a to a server in cell b, one every few
/// milliseconds, until stopped (at most 5,000, at most 60 s). Each is opened and closed
/// at once; `made` counts them as they complete.
struct Traffic {
    stop: Arc<AtomicBool>,
    made: Arc<AtomicUsize>,
    handle: thread::JoinHandle<usize>,
}

impl Traffic {
    fn start(from: IpAddr, server: IpAddr) -> Self {
        let l = TcpListener::bind((server, 0)).unwrap();
        let (stop, made) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let (s, m) = (stop.clone(), made.clone());
        let handle = thread::spawn(move || {
            let to = l.local_addr().unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            while !s.load(Ordering::Relaxed)
                && m.load(Ordering::Relaxed) < 5_000
                && Instant::now() < deadline
            {
                let c = connect_from(from, to).expect("connect");
                let (srv, _) = l.accept().expect("accept");
                drop(c);
                drop(srv);
                m.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(3));
            }
            m.load(Ordering::Relaxed)
        });
        Self { stop, made, handle }
    }

    fn made(&self) -> usize {
        self.made.load(Ordering::Relaxed)
    }

    /// Stops and returns how many connections were made in all.
    fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("traffic thread")
    }
}

/// Lets the traffic run for a while and returns how many connections it made meanwhile.
fn meanwhile(t: &Traffic, how_long: Duration) -> usize {
    let before = t.made();
    thread::sleep(how_long);
    t.made() - before
}

fn start(pins: &Pins, config: &str, args: &[&str]) -> Agent {
    Agent::start(AgentOpts { config: Some(config), pins: Some(pins), args, ..AgentOpts::default() })
}

fn start_state(m: &Metrics) -> Vec<String> {
    m.0.iter()
        .filter(|(k, v)| k.starts_with("cellwatch_start_info{") && **v == 1.0)
        .map(|(k, _)| k.clone())
        .collect()
}

#[test]
fn traffic_through_sigterm_kill_and_restarts_is_counted_exactly() {
    let (a, b) = (0, 1);
    let cfg = cells(a, b);
    let pins = Pins::new();
    let mut first = start(&pins, &cfg, &[]);
    // One connection held open across every restart.
    let held_srv = TcpListener::bind((RESTART.ip(b, 0, 9), 0)).unwrap();
    let held = connect_from(RESTART.ip(a, 0, 9), held_srv.local_addr().unwrap()).unwrap();
    let held_peer = held_srv.accept().unwrap().0;
    let traffic = Traffic::start(RESTART.ip(a, 0, 1), RESTART.ip(b, 0, 1));
    let pause = Duration::from_millis(400);

    meanwhile(&traffic, pause);
    assert!(first.stop().success(), "{}", first.stderr());
    let down_after_sigterm = meanwhile(&traffic, pause);
    let mut second = start(&pins, &cfg, &[]);
    assert_eq!(start_state(&second.metrics()), ["cellwatch_start_info{pinned_state=\"adopted\"}"]);
    meanwhile(&traffic, pause);
    second.kill();
    let down_after_kill = meanwhile(&traffic, pause);
    let third = start(&pins, &cfg, &[]);
    meanwhile(&traffic, pause);
    let made = traffic.finish() as f64;
    assert!(
        down_after_sigterm > 0 && down_after_kill > 0,
        "traffic ran while no agent did: {down_after_sigterm} after SIGTERM, {down_after_kill} after kill -9"
    );

    let want = made + 1.0; // and the held one
    let m = scrape_until(&third, |m| opened(m, "egress") >= want && closed(m, "ingress") >= made);
    assert_eq!((opened(&m, "egress"), opened(&m, "ingress")), (want, want), "{made} made");
    assert_eq!((closed(&m, "egress"), closed(&m, "ingress")), (made, made));
    assert_eq!((violations(&m, "egress"), violations(&m, "ingress")), (want, want));
    assert_eq!((active(&m, "egress"), active(&m, "ingress")), (1.0, 1.0), "the held connection");
    assert_eq!(m.get("cellwatch_events_lost_total", &[("source", "conn_table_full")]), 0.0);

    drop((held, held_peer));
    let m = scrape_until(&third, |m| closed(m, "egress") >= want && closed(m, "ingress") >= want);
    assert_eq!((closed(&m, "egress"), closed(&m, "ingress")), (want, want));
    assert_eq!((active(&m, "egress"), active(&m, "ingress")), (0.0, 0.0));
    eprintln!(
        "restart: {made} connections + 1 held, {down_after_sigterm} made after SIGTERM and \
         {down_after_kill} after kill -9 with no agent running; all counted"
    );
}

#[test]
fn an_upgrade_swaps_programs_on_the_live_links_without_losing_or_doubling() {
    let (a, b) = (2, 3);
    let cfg = cells(a, b);
    let pins = Pins::new();
    let mut old = start(&pins, &cfg, &[]);
    let old_programs = prog_ids_of(old.pid());
    assert!(!old_programs.is_empty());
    let traffic = Traffic::start(RESTART.ip(a, 0, 1), RESTART.ip(b, 0, 1));
    meanwhile(&traffic, Duration::from_millis(400));
    assert!(old.stop().success(), "{}", old.stderr());
    // What an upgrade does by itself when the build differs.
    let new = start(&pins, &cfg, &["--replace-programs"]);
    meanwhile(&traffic, Duration::from_millis(400));
    let made = traffic.finish() as f64;

    let m = scrape_until(&new, |m| closed(m, "ingress") >= made && closed(m, "egress") >= made);
    assert_eq!(start_state(&m), ["cellwatch_start_info{pinned_state=\"replaced\"}"]);
    assert!(new.stderr().contains("swapped this build's programs"), "{}", new.stderr());
    assert_eq!((opened(&m, "egress"), opened(&m, "ingress")), (made, made), "{made} made");
    assert_eq!((closed(&m, "egress"), closed(&m, "ingress")), (made, made));
    cellwatch_tests::assert_unloaded(&old_programs, "the swap");
    eprintln!("upgrade: {made} connections across the program swap, all counted once");
}

#[test]
fn unreadable_pinned_state_is_discarded_once_said_and_counted() {
    let (a, b) = (4, 5);
    let cfg = cells(a, b);
    let pins = Pins::new();
    let connect = |n: usize| {
        let l = TcpListener::bind((RESTART.ip(b, 0, 1), 0)).unwrap();
        for _ in 0..n {
            let c = connect_from(RESTART.ip(a, 0, 1), l.local_addr().unwrap()).unwrap();
            drop((c, l.accept().unwrap()));
        }
    };
    let discarded = |m: &Metrics| m.get("cellwatch_pinned_state_discarded_total", &[]);

    let mut agent = start(&pins, &cfg, &[]);
    connect(5);
    assert_eq!(opened(&scrape_until(&agent, |m| opened(m, "egress") >= 5.0), "egress"), 5.0);
    assert!(agent.stop().success());

    // A newer agent's layout, as far as this one can tell.
    let meta = pins.0.join("maps/META");
    let status = Command::new("bpftool")
        .args(["map", "update", "pinned", meta.to_str().unwrap()])
        .args(["key", "0", "0", "0", "0", "value", "99", "0", "0", "0"])
        .status()
        .expect("bpftool");
    assert!(status.success());
    let mut agent = start(&pins, &cfg, &[]);
    let m = agent.metrics();
    assert_eq!(start_state(&m), ["cellwatch_start_info{pinned_state=\"discarded\"}"]);
    assert_eq!(discarded(&m), 1.0);
    assert_eq!(opened(&m, "egress"), 0.0, "counting starts from zero");
    let said: Vec<String> =
        agent.stderr().lines().filter(|l| l.contains("pinned state")).map(str::to_owned).collect();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].contains("layout 99") && said[0].contains("starts from zero"), "{}", said[0]);
    connect(3);
    assert_eq!(opened(&scrape_until(&agent, |m| opened(m, "egress") >= 3.0), "egress"), 3.0);
    assert!(agent.stop().success());

    // What it made is readable: the next start adopts it, no loop of discards.
    let mut agent = start(&pins, &cfg, &[]);
    let m = agent.metrics();
    assert_eq!(start_state(&m), ["cellwatch_start_info{pinned_state=\"adopted\"}"]);
    assert_eq!((discarded(&m), opened(&m, "egress")), (0.0, 3.0));
    assert!(agent.stop().success());

    // A start that never finished leaves no layout version behind.
    std::fs::remove_file(&meta).unwrap();
    let agent = start(&pins, &cfg, &[]);
    let m = agent.metrics();
    assert_eq!((discarded(&m), opened(&m, "egress")), (1.0, 0.0));
    assert!(agent.stderr().contains("no layout version"), "{}", agent.stderr());
    drop(agent);

    // A map pin removed by hand: the rest cannot be trusted to match what runs.
    std::fs::remove_file(pins.0.join("maps/PAIR_STATS")).unwrap();
    let agent = start(&pins, &cfg, &[]);
    assert_eq!(discarded(&agent.metrics()), 1.0);
    assert!(agent.stderr().contains("lacks the map PAIR_STATS"), "{}", agent.stderr());
    drop(agent);
    let (status, out, err) = cellwatch(&[], &["uninstall", "--bpffs", pins.path()]);
    assert!(status.success() && out.contains("removed"), "{out}{err}");
}

/// An adopting agent started with another config judges by it at once, and what the old
/// config put in the pinned cell map is gone: the agent read both pinned sets back, so
/// its writes remove what it did not write itself. A reload then swaps back, exactly.
#[test]
fn an_adopting_agent_judges_by_its_own_config_and_reloads_cleanly() {
    let (a, b, c) = (6, 7, 8);
    let first = cells(a, b);
    let second = cells(a, c);
    let pins = Pins::new();
    let l_b = TcpListener::bind((RESTART.ip(b, 0, 1), 0)).unwrap();
    let l_c = TcpListener::bind((RESTART.ip(c, 0, 1), 0)).unwrap();
    let to = |l: &TcpListener, n: usize| {
        for _ in 0..n {
            let conn = connect_from(RESTART.ip(a, 0, 1), l.local_addr().unwrap()).unwrap();
            drop((conn, l.accept().unwrap()));
        }
    };
    let mut agent = start(&pins, &first, &[]);
    to(&l_b, 3);
    assert_eq!(opened(&scrape_until(&agent, |m| opened(m, "egress") >= 3.0), "egress"), 3.0);
    assert!(agent.stop().success());

    // cell-b moves from /16 b to /16 c: b is in no cell now (and external: ignore).
    let mut agent = start(&pins, &second, &[]);
    assert_eq!(start_state(&agent.metrics()), ["cellwatch_start_info{pinned_state=\"adopted\"}"]);
    to(&l_b, 4);
    to(&l_c, 5);
    let m = scrape_until(&agent, |m| opened(m, "egress") >= 8.0);
    let only = |n: u8, to: u8| format!("only the {n} to {} count", RESTART.cidr(to));
    assert_eq!(opened(&m, "egress"), 8.0, "{}, on top of 3", only(5, c));

    // Back to the first config by reload: the set written by the first agent is the
    // target now, and must end up exactly as the first config says.
    std::fs::write(agent.config_path(), &first).unwrap();
    agent.signal("HUP");
    let reloaded = scrape_until(&agent, |m| {
        m.get("cellwatch_config_reloads_total", &[("result", "success")]) >= 1.0
    });
    assert!(reloaded.get("cellwatch_config_reloads_total", &[("result", "success")]) >= 1.0);
    to(&l_b, 2);
    to(&l_c, 6);
    let m = scrape_until(&agent, |m| opened(m, "egress") >= 10.0);
    thread::sleep(Duration::from_millis(300));
    let m2 = agent.metrics();
    assert_eq!((opened(&m, "egress"), opened(&m2, "egress")), (10.0, 10.0), "{}", only(2, b));

    // A failed reload too; then both counts carry over a restart (counters never go
    // back, agent restarts included).
    std::fs::write(agent.config_path(), "cells: [").unwrap();
    agent.signal("HUP");
    scrape_until(&agent, |m| reloads(m, "error") >= 1.0);
    thread::sleep(Duration::from_millis(300));
    let before = agent.metrics();
    let before = (reloads(&before, "success"), reloads(&before, "error"));
    assert!(before.0 >= 1.0 && before.1 >= 1.0, "{before:?}");
    assert!(agent.stop().success());
    let mut agent = start(&pins, &first, &[]);
    let after = agent.metrics();
    assert_eq!((reloads(&after, "success"), reloads(&after, "error")), before);
    assert!(agent.stop().success());
}

fn reloads(m: &Metrics, result: &str) -> f64 {
    m.get("cellwatch_config_reloads_total", &[("result", result)])
}
