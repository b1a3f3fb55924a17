//! Drains and migrations on real loopback traffic: a cell drained by a reload while a
//! client process holds pooled connections into it (what opens into it after is counted
//! exactly, the pool is found, named and listed, and closing it empties the cell, which
//! `drain-status` tells through a real Prometheus); `drain: refuse` in enforce mode; a
//! temporary allow rule whose deadline passes during the test, with no reload, in audit
//! and enforce mode; and `CellDrainLeak` delivered by a real Prometheus and Alertmanager
//! to a webhook, then its resolution once the leak stops.
use std::{
    io::{BufRead, BufReader, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use cellwatch_tests::{
    Agent, AgentOpts, Metrics, Server, TempDir,
    alertmanager::Alertmanager,
    await_reloads, cellwatch, clients, connect_from, json,
    prometheus::{PromOpts, Prometheus, shipped_rules_with},
    ranges::{DRAIN, HARNESS},
    scrape_until, terminate, write_atomic,
};

const EPERM: i32 = 1;
/// The command name the pool's process gives itself.
const POOLER: &str = "cw-pooler";

/// A client process holding `n` connections from `from` to `to` open until it is
/// dropped: a database pool, as far as the kernel can tell. It names itself [`POOLER`]
/// (`prctl(PR_SET_NAME)`) before it connects.
struct Pool {
    child: Child,
}

impl Pool {
    fn open(from: IpAddr, to: SocketAddr, n: usize) -> Self {
        let script = format!(
            "import ctypes, socket, sys\n\
             ctypes.CDLL(None).prctl(15, b'{POOLER}', 0, 0, 0)\n\
             pool = []\n\
             for _ in range({n}):\n\
             \x20   s = socket.socket()\n\
             \x20   s.bind(('{from}', 0))\n\
             \x20   s.connect(('{}', {}))\n\
             \x20   pool.append(s)\n\
             print('ready', flush=True)\n\
             sys.stdin.read()\n",
            to.ip(),
            to.port()
        );
        let mut child = Command::new("/usr/bin/python3")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("Debian's python3 runs the pool: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the pool did not connect");
        Self { child }
    }

    /// Closes the pool's connections (the process ends when its stdin does).
    fn close(mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the pool did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            terminate(&mut self.child);
        }
    }
}

/// A drain family's value for cell-a's connections into cell-b.
fn drain(m: &Metrics, family: &str, direction: &str) -> f64 {
    m.get(family, &[("cell", "cell-b"), ("src_cell", "cell-a"), ("direction", direction)])
}

fn config(drained: &str) -> String {
    format!(
        "cells:\n  - {{ name: cell-a, cidrs: [{}] }}\n  - {{ name: cell-b, cidrs: [{}]{drained} }}\n\
         allow:\n  - {{ from: cell-a, to: cell-b }}\nignore_cidrs: [{}]\n",
        DRAIN.cidr(0),
        DRAIN.cidr(1),
        HARNESS.cidr(0)
    )
}

/// Waits until `prom` has scraped `agent` at least twice more (so it holds what the
/// agent shows now).
fn scraped(prom: &Prometheus) {
    let count = || {
        let (_, r) = prom.query("count_over_time(up{job=\"cellwatch\"}[1h])");
        r.first().and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok()).unwrap_or(0.0)
    };
    let before = count();
    prom.wait_for("scraping", Duration::from_secs(20), || count() >= before + 2.0);
}

/// `cellwatch drain-status cell-b` against `prom`: its exit code and output.
fn drain_status(prom: &Prometheus, window: &str) -> (Option<i32>, String) {
    let (status, out, err) = cellwatch(
        &[],
        &["drain-status", "cell-b", "--prometheus", &prom.url(), "--window", window],
    );
    (status.code(), format!("{out}{err}"))
}

#[test]
fn a_drained_cell_counts_what_opens_into_it_and_names_its_pooled_connections() {
    const NEW: usize = 5;
    let (a, b) = (DRAIN.ip(0, 0, 2), DRAIN.ip(1, 0, 1));
    let pool_server = TcpListener::bind((b, 0)).unwrap();
    let server = pool_server.local_addr().unwrap();
    let agent = Agent::start(AgentOpts { config: Some(&config("")), ..AgentOpts::default() });
    let prom = Prometheus::start(PromOpts { target: Some(agent.port), ..PromOpts::default() });

    // Three pooled connections, open before the drain begins.
    let pool = Pool::open(a, server, 3);
    let held: Vec<TcpStream> = (0..3).map(|_| pool_server.accept().unwrap().0).collect();
    let m = scrape_until(&agent, |m| {
        m.get("cellwatch_connections_active", &[("src_cell", "cell-a"), ("direction", "egress")])
            == 3.0
    });
    assert_eq!(
        m.get("cellwatch_drain_start_timestamp_seconds", &[("cell", "cell-b")]),
        0.0,
        "nothing is drained yet"
    );
    assert_eq!(drain(&m, "cellwatch_drain_connections_active", "egress"), 0.0);

    write_atomic(&agent.config_path(), &config(", drained: true"));
    await_reloads(&agent, "success", 1.0);
    // Five new connections into the drained cell.
    let fresh = Server::start(b, NEW, 1, 1);
    assert_eq!(clients(a, fresh.addr, NEW, 1, 1), NEW);
    assert_eq!(fresh.join(), NEW);

    let m = scrape_until(&agent, |m| {
        drain(m, "cellwatch_drain_connections_opened_total", "ingress") == NEW as f64
            && drain(m, "cellwatch_drain_connections_active", "egress") == 3.0
    });
    for direction in ["egress", "ingress"] {
        assert_eq!(drain(&m, "cellwatch_drain_connections_opened_total", direction), NEW as f64);
        assert_eq!(drain(&m, "cellwatch_drain_connections_active", direction), 3.0, "{direction}");
    }
    let holdout =
        [("cell", "cell-b"), ("src_cell", "cell-a"), ("comm", POOLER), ("container", "host")];
    assert_eq!(
        m.get("cellwatch_drain_holdouts", &holdout),
        3.0,
        "{:?}",
        m.by_label("cellwatch_drain_holdouts", "comm")
    );
    assert!(m.get("cellwatch_drain_start_timestamp_seconds", &[("cell", "cell-b")]) > 0.0);

    // The listing names the pool's three with their process.
    let listed = json(&agent, "/connections?drained=cell-b");
    let egress: Vec<&serde_json::Value> =
        listed.as_array().unwrap().iter().filter(|c| c["direction"] == "egress").collect();
    assert_eq!(egress.len(), 3, "{listed}");
    assert!(egress.iter().all(|c| c["comm"] == POOLER && c["dst"]["cell"] == "cell-b"), "{listed}");
    assert!(
        egress.iter().all(|c| c["pid"].as_u64().is_some() && c["age_seconds"].as_f64().is_some())
    );
    let into_a = json(&agent, "/connections?drained=cell-a");
    assert_eq!(into_a.as_array().unwrap().len(), 0, "nothing is open into cell-a: {into_a}");

    // Not empty: new connections in the window, and the pool.
    scraped(&prom);
    let (code, out) = drain_status(&prom, "1m");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(POOLER), "{out}");

    pool.close();
    drop(held);
    let m = scrape_until(&agent, |m| {
        drain(m, "cellwatch_drain_connections_active", "egress") == 0.0
            && drain(m, "cellwatch_drain_connections_active", "ingress") == 0.0
    });
    assert_eq!(drain(&m, "cellwatch_drain_connections_active", "egress"), 0.0);
    assert_eq!(drain(&m, "cellwatch_drain_connections_active", "ingress"), 0.0);
    assert!(m.by_label("cellwatch_drain_holdouts", "comm").is_empty());
    // Empty once the window (its shortest, a minute) holds no new connection.
    let deadline = Instant::now() + Duration::from_secs(100);
    let (code, out) = loop {
        let (code, out) = drain_status(&prom, "1m");
        if code == Some(0) || Instant::now() > deadline {
            break (code, out);
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_eq!(code, Some(0), "{out}");
    // Counted while drained only: the pool opened before the drain is not among them.
    let m = agent.metrics();
    assert_eq!(drain(&m, "cellwatch_drain_connections_opened_total", "egress"), NEW as f64);
}

#[test]
fn drain_refuse_refuses_new_connects_in_enforce_mode_and_cuts_nothing_open() {
    const K: usize = 7;
    // cell-a may call cell-b (a rule); cell-c and cell-d may not, and only cell-a and
    // cell-c are enforced: the drain refuses all three, each refusal counted once.
    let (a, b, c, d) =
        (DRAIN.ip(2, 0, 2), DRAIN.ip(3, 0, 1), DRAIN.ip(10, 0, 2), DRAIN.ip(11, 0, 2));
    let listener = TcpListener::bind((b, 0)).unwrap();
    let server = listener.local_addr().unwrap();
    let cfg = |drained: &str| {
        format!(
            "cells:\n  - {{ name: cell-a, cidrs: [{}] }}\n  - {{ name: cell-b, cidrs: [{}]{drained} }}\n  \
             - {{ name: cell-c, cidrs: [{}] }}\n  - {{ name: cell-d, cidrs: [{}] }}\n\
             allow:\n  - {{ from: cell-a, to: cell-b }}\nignore_cidrs: [{}]\nmode: enforce\n\
             enforce_cells: [cell-a, cell-c]\n",
            DRAIN.cidr(2),
            DRAIN.cidr(3),
            DRAIN.cidr(10),
            DRAIN.cidr(11),
            HARNESS.cidr(0)
        )
    };
    let agent = Agent::start(AgentOpts { config: Some(&cfg("")), ..AgentOpts::default() });
    let mut open = connect_from(a, server).unwrap();
    let (mut accepted, _) = listener.accept().unwrap();

    write_atomic(&agent.config_path(), &cfg(", drained: \"2026-12-01T10:00:00Z\", drain: refuse"));
    await_reloads(&agent, "success", 1.0);
    for from in [a, c, d] {
        for _ in 0..K {
            match connect_from(from, server) {
                Err(e) if e.raw_os_error() == Some(EPERM) => {}
                other => panic!("a connect from {from} into the drained cell went on: {other:?}"),
            }
        }
    }
    // The cell's own connects go on, and what was open before the drain stays open.
    let own = connect_from(DRAIN.ip(3, 0, 2), server).expect("a drained cell's own connect");
    drop(own);
    open.write_all(b"x").unwrap();
    let mut byte = [0u8; 1];
    std::io::Read::read_exact(&mut accepted, &mut byte).unwrap();

    let refused = |m: &Metrics, src| {
        m.get("cellwatch_drain_connections_refused_total", &[("cell", "cell-b"), ("src_cell", src)])
    };
    let m = scrape_until(&agent, |m| refused(m, "cell-d") == K as f64);
    for (src, leak) in [("cell-a", 0.0), ("cell-c", K as f64), ("cell-d", K as f64)] {
        let pair = [("src_cell", src), ("dst_cell", "cell-b")];
        assert_eq!(refused(&m, src), K as f64, "{src}: each refusal is the drain's");
        assert_eq!(m.get("cellwatch_connections_denied_total", &pair), K as f64, "{src}");
        // An allowed flow refused by a drain is no leak; a violating one is, enforced or not.
        let egress = [pair[0], pair[1], ("direction", "egress")];
        assert_eq!(m.get("cellwatch_boundary_violations_total", &egress), leak, "{src}");
    }
    assert_eq!(
        m.get("cellwatch_drain_start_timestamp_seconds", &[("cell", "cell-b")]),
        1_796_119_200.0,
        "the config's start"
    );
    assert_eq!(drain(&m, "cellwatch_drain_connections_active", "egress"), 1.0);
    assert_eq!(m.get("cellwatch_enforce_unresolved_total", &[]), 0.0);
}

/// A temporary rule whose deadline falls a few seconds into the test: connects before it
/// are allowed, after it violations (refused under `enforce`), with no reload between.
/// The rule comes in by a reload once the agent runs, so a slow start (an emulated VM)
/// leaves the time before the deadline as it is.
fn temporary_rule_expires(mode: &str, (ca, cb): (u8, u8)) {
    const N: usize = 4;
    let (a, b) = (DRAIN.ip(ca, 0, 2), DRAIN.ip(cb, 0, 1));
    let listener = TcpListener::bind((b, 0)).unwrap();
    let server = listener.local_addr().unwrap();
    drop(listener);
    let config = |rule: &str| {
        format!(
            "cells:\n  - {{ name: cell-a, cidrs: [{}] }}\n  - {{ name: cell-b, cidrs: [{}] }}\n\
             allow:{rule}\nignore_cidrs: [{}]\nmode: {mode}\n",
            DRAIN.cidr(ca),
            DRAIN.cidr(cb),
            HARNESS.cidr(0)
        )
    };
    let agent = Agent::start(AgentOpts { config: Some(&config(" []")), ..AgentOpts::default() });
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let deadline = UNIX_EPOCH + Duration::from_secs(now + 6);
    let rule = format!(
        "\n  - {{ from: cell-a, to: cell-b, ports: [{}], until: \"{}\", reason: \"orders migration\" }}",
        server.port(),
        agent_core::config::rfc3339(deadline)
    );
    write_atomic(&agent.config_path(), &config(&rule));
    await_reloads(&agent, "success", 1.0);
    let s = Server::start_on(server, 2 * N, 1, 1);
    assert!(SystemTime::now() + Duration::from_secs(2) < deadline, "the reload took too long");
    assert_eq!(clients(a, server, N, 1, 1), N);
    while SystemTime::now() < deadline + Duration::from_millis(200) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = (0..N).filter(|_| match connect_from(a, server) {
        Ok(mut c) => {
            c.write_all(b"q").unwrap();
            let _ = std::io::Read::read(&mut c, &mut [0u8; 1]);
            true
        }
        Err(e) if e.raw_os_error() == Some(EPERM) => false,
        Err(e) => panic!("{e}"),
    });
    let admitted = after.count();
    let enforce = mode == "enforce";
    assert_eq!(admitted, if enforce { 0 } else { N }, "{mode}");
    drop(s);

    let opened = |m: &Metrics, verdict| {
        m.get(
            "cellwatch_connections_opened_total",
            &[
                ("src_cell", "cell-a"),
                ("dst_cell", "cell-b"),
                ("direction", "egress"),
                ("verdict", verdict),
            ],
        )
    };
    let pair = [("src_cell", "cell-a"), ("dst_cell", "cell-b"), ("direction", "egress")];
    let m =
        scrape_until(&agent, |m| m.get("cellwatch_boundary_violations_total", &pair) == N as f64);
    assert_eq!(opened(&m, "allowed"), N as f64, "{mode}: before the deadline");
    assert_eq!(m.get("cellwatch_boundary_violations_total", &pair), N as f64, "{mode}: after it");
    assert_eq!(opened(&m, "violation"), if enforce { 0.0 } else { N as f64 }, "{mode}");
    let denied = m.get(
        "cellwatch_connections_denied_total",
        &[("src_cell", "cell-a"), ("dst_cell", "cell-b")],
    );
    assert_eq!(denied, if enforce { N as f64 } else { 0.0 }, "{mode}");
    assert_eq!(
        m.get("cellwatch_config_reloads_total", &[("result", "success")]),
        1.0,
        "no reload but the one that brought the rule in"
    );
    let expiry = [("from", "cell-a"), ("to", "cell-b"), ("reason", "orders migration")];
    let want = deadline.duration_since(UNIX_EPOCH).unwrap().as_secs() as f64;
    assert_eq!(m.get("cellwatch_allow_rule_expiry_timestamp_seconds", &expiry), want);
}

#[test]
fn a_temporary_rule_turns_its_flows_into_violations_at_its_deadline_in_audit_mode() {
    temporary_rule_expires("audit", (4, 5));
}

#[test]
fn a_temporary_rule_is_refused_from_its_deadline_on_in_enforce_mode() {
    temporary_rule_expires("enforce", (6, 7));
}

#[test]
fn a_drain_leak_reaches_alertmanager_with_its_runbook_then_resolves() {
    let (a, b) = (DRAIN.ip(8, 0, 2), DRAIN.ip(9, 0, 1));
    let config = format!(
        "cells:\n  - {{ name: cell-a, cidrs: [{}] }}\n  - {{ name: cell-b, cidrs: [{}], drained: true }}\n\
         ignore_cidrs: [{}]\n",
        DRAIN.cidr(8),
        DRAIN.cidr(9),
        HARNESS.cidr(0)
    );
    let agent = Agent::start(AgentOpts { config: Some(&config), ..AgentOpts::default() });
    let am = Alertmanager::start();
    // The shipped rules, their 5-minute windows and waits made seconds so the test sees
    // the alert come and go: the rules themselves are the shipped ones.
    let dir = TempDir::new("drain-alerts");
    let rules = shipped_rules_with(
        &dir,
        &[("[5m]", "[15s]"), ("offset 5m", "offset 15s"), ("for: 5m", "for: 5s")],
    );
    let prom = Prometheus::start_alerting(
        PromOpts { target: Some(agent.port), rules: Some(&rules), ..PromOpts::default() },
        &am,
    );
    // A leak that goes on: a new connection into the drained cell every 200 ms, until the
    // alert has arrived (bounded in count and time).
    let server = Server::start(b, 600, 1, 1);
    let started = Instant::now();
    let mut made = 0;
    while am.notifications().is_empty() && made < 600 && started.elapsed() < Duration::from_secs(90)
    {
        made += clients(a, server.addr, 1, 1, 1);
        std::thread::sleep(Duration::from_millis(200));
    }
    let (i, alert) = am.wait_for_alert(0, "CellDrainLeak", "firing", Duration::from_secs(10));
    assert_eq!(alert["labels"]["cell"], "cell-b", "{alert}");
    assert_eq!(alert["labels"]["src_cell"], "cell-a", "{alert}");
    assert_eq!(alert["labels"]["severity"], "warning", "{alert}");
    assert_eq!(alert["annotations"]["runbook"], "docs/alerts.md#celldrainleak", "{alert}");
    let runbook =
        std::fs::read_to_string(cellwatch_tests::prometheus::repo().join("docs/alerts.md"))
            .unwrap();
    assert!(runbook.contains("\n## CellDrainLeak\n"), "the runbook link has its section");
    // The leak stops: its resolution follows, for the same alert.
    let stopped = agent.metrics();
    let (_, resolved) =
        am.wait_for_alert(i + 1, "CellDrainLeak", "resolved", Duration::from_secs(90));
    assert_eq!(resolved["labels"], alert["labels"], "{resolved}");
    assert_eq!(resolved["startsAt"], alert["startsAt"], "{resolved}");
    // Every connection was counted as the drain's, each once.
    assert_eq!(drain(&stopped, "cellwatch_drain_connections_opened_total", "egress"), made as f64);
    drop(prom);
    drop(server);
}
