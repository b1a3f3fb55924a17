//! Services (`services:` in the config): connections to a named destination counted per
//! (client cell, service) in the kernel, exactly, beside the pair families that still
//! hold them; a service with ports and one without; the catalog of cells and services;
//! `/connections` naming the service; a reload that adds a service; and the blast radius
//! read back from a real Prometheus: `cellwatch report`, the dashboard and the alerts.
use std::{
    io::Read,
    net::{SocketAddr, TcpListener},
};

use std::time::Duration;

use cellwatch_tests::{
    Agent, AgentOpts, Metrics, Server, TempDir, await_reloads, cellwatch, clients, connect_from,
    dot_to_svg, json,
    prometheus::{PromOpts, Prometheus, repo, shipped_rules},
    ranges::{HARNESS, SERVICES},
    scrape_until, write_atomic,
};

/// The database's port: a service with ports is matched on it.
const DB_PORT: u16 = 15_432;
const REQ: usize = 120;
const RESP: usize = 900;

/// global (127.110, shared services: `orders-db` on .5.0/24 port 15432, `store` on
/// .6.0/24 on any port), cell-a, cell-b, cell-c on the next /16s.
fn config(extra_service: &str) -> String {
    format!(
        "cells:\n  - {{ name: global, global: true, cidrs: [\"{}\"] }}\n  \
         - {{ name: cell-a, cidrs: [\"{}\"] }}\n  - {{ name: cell-b, cidrs: [\"{}\"] }}\n  \
         - {{ name: cell-c, cidrs: [\"{}\"] }}\n\
         services:\n  - {{ name: orders-db, cidrs: [\"{}.{}.5.0/24\"], ports: [{DB_PORT}] }}\n  \
         - {{ name: store, cidrs: [\"{}.{}.6.0/24\"] }}\n{extra_service}\
         ignore_cidrs: [\"{}\"]\n",
        SERVICES.cidr(0),
        SERVICES.cidr(1),
        SERVICES.cidr(2),
        SERVICES.cidr(3),
        SERVICES.net,
        SERVICES.at(0),
        SERVICES.net,
        SERVICES.at(0),
        HARNESS.cidr(0),
    )
}

fn svc<'a>(src: &'a str, service: &'a str, dir: &'a str) -> [(&'a str, &'a str); 3] {
    [("src_cell", src), ("service", service), ("direction", dir)]
}

fn svcv<'a>(src: &'a str, service: &'a str, dir: &'a str) -> [(&'a str, &'a str); 4] {
    [("src_cell", src), ("service", service), ("direction", dir), ("verdict", "allowed")]
}

fn opened(m: &Metrics, src: &str, service: &str, dir: &str) -> f64 {
    m.get("cellwatch_service_connections_opened_total", &svcv(src, service, dir))
}

#[test]
fn two_cells_calling_a_shared_service_are_counted_exactly_per_service() {
    const A: usize = 40;
    const B: usize = 25;
    const C: usize = 15;
    const OTHER_PORT: usize = 10;
    let agent = Agent::start(AgentOpts {
        config: Some(&config("")),
        args: &["--live-interval", "1h"],
        ..AgentOpts::default()
    });
    let db = SocketAddr::new(SERVICES.ip(0, 5, 1), DB_PORT);
    let server = Server::start_on(db, A + B, REQ, RESP);
    // The database's address on another port: no service (orders-db has ports).
    let other = Server::start(SERVICES.ip(0, 5, 1), OTHER_PORT, REQ, RESP);
    // `store` has no ports: any port of its prefix.
    let store = Server::start(SERVICES.ip(0, 6, 9), C, REQ, RESP);
    assert_eq!(clients(SERVICES.ip(1, 0, 1), db, A, REQ, RESP), A);
    assert_eq!(clients(SERVICES.ip(2, 0, 1), db, B, REQ, RESP), B);
    assert_eq!(clients(SERVICES.ip(1, 0, 2), other.addr, OTHER_PORT, REQ, RESP), OTHER_PORT);
    assert_eq!(clients(SERVICES.ip(3, 0, 1), store.addr, C, REQ, RESP), C);
    assert_eq!(server.join() + other.join() + store.join(), A + B + OTHER_PORT + C);

    let closed = "cellwatch_connections_closed_total";
    let pair = |src, dir| {
        [("src_cell", src), ("dst_cell", "global"), ("direction", dir), ("verdict", "allowed")]
    };
    let m = scrape_until(&agent, |m| {
        ["egress", "ingress"].iter().all(|d| {
            m.get(closed, &pair("cell-a", d)) == (A + OTHER_PORT) as f64
                && m.get(closed, &pair("cell-b", d)) == B as f64
                && m.get(closed, &pair("cell-c", d)) == C as f64
        })
    });
    for dir in ["egress", "ingress"] {
        // Per service, exactly: cell-a and cell-b call orders-db, cell-c calls store.
        assert_eq!(opened(&m, "cell-a", "orders-db", dir), A as f64, "{dir}");
        assert_eq!(opened(&m, "cell-b", "orders-db", dir), B as f64, "{dir}");
        assert_eq!(opened(&m, "cell-c", "orders-db", dir), 0.0, "{dir}");
        assert_eq!(opened(&m, "cell-c", "store", dir), C as f64, "{dir}");
        assert_eq!(opened(&m, "cell-a", "store", dir), 0.0, "{dir}");
        let active = "cellwatch_service_connections_active";
        assert_eq!(m.get(active, &svc("cell-a", "orders-db", dir)), 0.0, "{dir}");
        // The pair families still hold every connection, service or not.
        let pair_opened = m.get("cellwatch_connections_opened_total", &pair("cell-a", dir));
        assert_eq!(pair_opened, (A + OTHER_PORT) as f64, "{dir}");
    }
    let (sent, received) =
        ("cellwatch_service_bytes_sent_total", "cellwatch_service_bytes_received_total");
    assert_eq!(m.get(sent, &svc("cell-a", "orders-db", "egress")), (A * REQ) as f64);
    assert_eq!(m.get(received, &svc("cell-a", "orders-db", "egress")), (A * RESP) as f64);
    assert_eq!(m.get(sent, &svc("cell-b", "orders-db", "ingress")), (B * RESP) as f64);
    assert_eq!(m.get(received, &svc("cell-b", "orders-db", "ingress")), (B * REQ) as f64);
    let latency = "cellwatch_service_connect_latency_seconds_count";
    let sl = [("src_cell", "cell-a"), ("service", "orders-db")];
    assert_eq!(m.get(latency, &sl), A as f64);
    // No failure: those series appear from the first failure on.
    assert!(!m.0.keys().any(|k| k.starts_with("cellwatch_service_connections_failed_total")));
    // The catalog.
    assert_eq!(m.get("cellwatch_cell_info", &[("cell", "global"), ("global", "true")]), 1.0);
    assert_eq!(m.get("cellwatch_cell_info", &[("cell", "cell-b"), ("global", "false")]), 1.0);
    let info = [("service", "orders-db"), ("cell", "global")];
    assert_eq!(m.get("cellwatch_service_info", &info), 1.0);
}

#[test]
fn a_refused_service_connect_is_a_failure_of_the_service() {
    let agent = Agent::start(AgentOpts { config: Some(&config("")), ..AgentOpts::default() });
    // Nothing listens on the database's port at this address: refused.
    let to = SocketAddr::new(SERVICES.ip(0, 5, 77), DB_PORT);
    for _ in 0..3 {
        assert!(connect_from(SERVICES.ip(2, 0, 7), to).is_err(), "nothing listens at {to}");
    }
    let failed = "cellwatch_service_connections_failed_total";
    let labels = [("src_cell", "cell-b"), ("service", "orders-db"), ("reason", "refused")];
    let m = scrape_until(&agent, |m| m.get(failed, &labels) >= 3.0);
    assert_eq!(m.get(failed, &labels), 3.0);
    assert_eq!(
        m.get(failed, &[("src_cell", "cell-b"), ("service", "orders-db"), ("reason", "reset")]),
        0.0
    );
}

#[test]
fn a_reload_adds_a_service_and_an_open_connection_keeps_its_own() {
    let agent = Agent::start(AgentOpts { config: Some(&config("")), ..AgentOpts::default() });
    // Held open across the reload: it was to no service, and stays so.
    let l = TcpListener::bind((SERVICES.ip(0, 7, 1), 0)).unwrap();
    let held = connect_from(SERVICES.ip(1, 0, 9), l.local_addr().unwrap()).unwrap();
    let (mut accepted, _) = l.accept().unwrap();
    let port = l.local_addr().unwrap().port();
    let mine = listed_to(&agent, port);
    assert_eq!(mine.len(), 2, "both ends listed: {mine:?}");
    assert!(mine.iter().all(|c| c["service"].is_null()), "{mine:?}");

    let extra =
        format!("  - {{ name: cache, cidrs: [\"{}.{}.7.0/24\"] }}\n", SERVICES.net, SERVICES.at(0));
    write_atomic(&agent.config_path(), &config(&extra));
    await_reloads(&agent, "success", 1.0);
    let n = 5;
    let cache = Server::start(SERVICES.ip(0, 7, 2), n, REQ, RESP);
    assert_eq!(clients(SERVICES.ip(1, 0, 10), cache.addr, n, REQ, RESP), n);
    assert_eq!(cache.join(), n);
    let m = scrape_until(&agent, |m| opened(m, "cell-a", "cache", "ingress") >= n as f64);
    assert_eq!(opened(&m, "cell-a", "cache", "egress"), n as f64);
    assert_eq!(opened(&m, "cell-a", "cache", "ingress"), n as f64);
    let mine = listed_to(&agent, port);
    assert_eq!(mine.len(), 2, "both ends listed: {mine:?}");
    assert!(mine.iter().all(|c| c["service"].is_null()), "judged when first seen: {mine:?}");
    drop(held);
    let mut buf = [0u8; 1];
    assert_eq!(accepted.read(&mut buf).unwrap(), 0, "the held connection closed");
    let info = [("service", "cache"), ("cell", "global")];
    assert_eq!(agent.metrics().get("cellwatch_service_info", &info), 1.0);
}

/// cell-a's connections in `/connections` whose server port is `port`.
fn listed_to(agent: &Agent, port: u16) -> Vec<serde_json::Value> {
    let conns = json(agent, "/connections?cell=cell-a");
    conns.as_array().unwrap().iter().filter(|c| c["dst"]["port"] == port).cloned().collect()
}

#[test]
fn a_service_connection_lists_its_service() {
    let agent = Agent::start(AgentOpts { config: Some(&config("")), ..AgentOpts::default() });
    let l = TcpListener::bind((SERVICES.ip(0, 6, 3), 0)).unwrap();
    let c = connect_from(SERVICES.ip(3, 0, 4), l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    let conns = json(&agent, "/connections?cell=cell-c");
    let list = conns.as_array().unwrap();
    assert_eq!(list.len(), 2, "{conns}");
    assert!(list.iter().all(|x| x["service"] == "store"), "{conns}");
    let m = agent.metrics();
    let active = "cellwatch_service_connections_active";
    assert_eq!(m.get(active, &svc("cell-c", "store", "egress")), 1.0);
    drop((c, s));
}

/// The blast radius end to end: a real agent counts two cells calling `orders-db` (and a
/// third calling the global cell, not the service), a real Prometheus scrapes it, on a
/// day of history in which only cell-1 ever called `orders-db`. Then `cellwatch report`
/// names exactly cell-1 and cell-2 as the service's blast radius (text, JSON, and a dot
/// graph that graphviz renders), every Blast radius panel returns data,
/// `CellNewSharedDependency` fires for cell-2 (new) and not cell-1 (old), and
/// `CellOutlier` fires for cell-3, whose connects to the global cell fail, and nobody else.
#[test]
fn blast_radius_report_and_alerts_from_a_real_prometheus() {
    const SECONDS: usize = 40;
    let (g, one, two, three) = (4, 5, 6, 7);
    let config = format!(
        "cells:\n  - {{ name: global, global: true, cidrs: [\"{}\"] }}\n  \
         - {{ name: cell-1, cidrs: [\"{}\"] }}\n  - {{ name: cell-2, cidrs: [\"{}\"] }}\n  \
         - {{ name: cell-3, cidrs: [\"{}\"] }}\n\
         services:\n  - {{ name: orders-db, cidrs: [\"{}.{}.5.0/24\"], ports: [{DB_PORT}] }}\n\
         ignore_cidrs: [\"{}\"]\n",
        SERVICES.cidr(g),
        SERVICES.cidr(one),
        SERVICES.cidr(two),
        SERVICES.cidr(three),
        SERVICES.net,
        SERVICES.at(g),
        HARNESS.cidr(0),
    );
    let agent = Agent::start(AgentOpts {
        config: Some(&config),
        args: &["--live-interval", "1s"],
        ..AgentOpts::default()
    });
    let rules = quick_rules();
    let prom = Prometheus::start(PromOpts {
        target: Some(agent.port),
        rules: Some(&rules.0.join("rules.yaml")),
        history: Some(&history(agent.port)),
        ..PromOpts::default()
    });

    // SECONDS of traffic, bounded: each second cell-1 and cell-2 call orders-db three
    // times, cell-3 calls a plain global server three times and a closed global port once,
    // and cell-1 calls a server of its own twice (traffic that stays inside).
    let db = SocketAddr::new(SERVICES.ip(g, 5, 1), DB_PORT);
    let per = 3 * SECONDS;
    let db_server = Server::start_on(db, 2 * per, REQ, RESP);
    let plain = Server::start(SERVICES.ip(g, 9, 1), per, REQ, RESP);
    let closed = SocketAddr::new(SERVICES.ip(g, 9, 2), cellwatch_tests::free_port());
    let own = Server::start(SERVICES.ip(one, 9, 1), 2 * SECONDS, REQ, RESP);
    let started = std::time::Instant::now();
    for s in 0..SECONDS {
        assert_eq!(clients(SERVICES.ip(one, 0, 1), db, 3, REQ, RESP), 3);
        assert_eq!(clients(SERVICES.ip(two, 0, 1), db, 3, REQ, RESP), 3);
        assert_eq!(clients(SERVICES.ip(three, 0, 1), plain.addr, 3, REQ, RESP), 3);
        assert!(connect_from(SERVICES.ip(three, 0, 2), closed).is_err(), "{closed} is closed");
        assert_eq!(clients(SERVICES.ip(one, 0, 3), own.addr, 2, REQ, RESP), 2);
        let next = started + std::time::Duration::from_secs(s as u64 + 1);
        std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
    }
    assert_eq!(db_server.join() + plain.join() + own.join(), 3 * per + 2 * SECONDS);

    // The alerts, on the shipped expressions.
    let new_dep = |src: &str| {
        prom.firing("CellNewSharedDependency")
            .iter()
            .any(|a| a["labels"]["src_cell"] == src && a["labels"]["service"] == "orders-db")
    };
    prom.wait_for("firing CellNewSharedDependency", Duration::from_secs(60), || new_dep("cell-2"));
    assert!(!new_dep("cell-1"), "cell-1 called orders-db the day before: {:?}", prom.alerts());
    assert_eq!(prom.firing("CellNewSharedDependency").len(), 1, "{:?}", prom.alerts());
    prom.wait_for("firing CellOutlier", Duration::from_secs(60), || {
        !prom.firing("CellOutlier").is_empty()
    });
    let outliers = prom.firing("CellOutlier");
    assert!(
        outliers.iter().all(|a| a["labels"]["src_cell"] == "cell-3"
            && a["labels"]["dst_cell"] == "global"
            && a["labels"]["signal"] == "connect_failures"),
        "only cell-3's failures to global: {outliers:?}"
    );

    // The report: orders-db's blast radius is exactly cell-1 and cell-2.
    let url = prom.url();
    let out = crate::report::report_ok(&url, &["--range", "10m", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("report JSON");
    assert_eq!(crate::report::dependents(&v, "orders-db"), ["cell-1", "cell-2"], "{out}");
    let outlier_cells: Vec<&str> =
        v["outliers"].as_array().unwrap().iter().map(|o| o["cell"].as_str().unwrap()).collect();
    assert!(outlier_cells.iter().all(|c| *c == "cell-3") && !outlier_cells.is_empty(), "{out}");
    let (status, text, err) = cellwatch(&[], &["report", "--prometheus", &url, "--range", "10m"]);
    assert!(status.success(), "report: {err}");
    assert!(text.contains("orders-db (in global"), "{text}");
    let (status, dot, err) =
        cellwatch(&[], &["report", "--prometheus", &url, "--range", "10m", "--format", "dot"]);
    assert!(status.success(), "report: {err}");
    // graphviz writes `-` as `&#45;` in SVG text.
    let svg = dot_to_svg(&dot).replace("&#45;", "-");
    for node in ["cell-1", "cell-2", "cell-3", "orders-db"] {
        assert!(svg.contains(node), "{node} in the SVG");
    }

    // Every panel of the Blast radius dashboard has data.
    let d: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("dashboards/blast-radius.json")).unwrap(),
    )
    .unwrap();
    let mut empty = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let q = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$__range", "5m")
                .replace("$__interval", "15s")
                .replace("$src_cell", ".*")
                .replace("$service", ".*")
                .replace("$instance", ".*");
            assert!(!q.contains('$'), "a variable is left unfilled in {q}");
            let (accepted, result) = prom.query(&q);
            assert!(accepted, "{}: Prometheus rejected {q}", p["title"]);
            if result.is_empty() {
                empty.push(format!("{}: {q}", p["title"]));
            }
        }
    }
    assert!(empty.is_empty(), "panels without data:\n{}", empty.join("\n"));
}

/// The shipped rules with every `for:` cut to 0 s, so alerts fire in seconds, not
/// minutes; the expressions are the shipped ones.
fn quick_rules() -> TempDir {
    let text = std::fs::read_to_string(shipped_rules()).unwrap();
    let quick: String = text
        .lines()
        .map(|l| match l.trim_start().strip_prefix("for: ") {
            Some(_) => format!("{}for: 0s", &l[..l.len() - l.trim_start().len()]),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let dir = TempDir::new("quick-rules");
    dir.write("rules.yaml", &quick);
    dir
}

/// A day of history (OpenMetrics, every 5 minutes, until 2 hours ago): the agent at
/// `port` reporting, and cell-1 already calling orders-db.
fn history(port: u16) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_secs();
    let target = format!("instance=\"127.0.0.1:{port}\",job=\"cellwatch\"");
    let times: Vec<u64> = (now - 26 * 3600..now - 2 * 3600).step_by(300).collect();
    let mut om = String::from("# TYPE up gauge\n");
    for t in &times {
        om += &format!("up{{{target}}} 1 {t}\n");
    }
    om += "# TYPE cellwatch_service_connections_opened counter\n";
    for t in &times {
        om += &format!(
            "cellwatch_service_connections_opened_total{{direction=\"egress\",{target},service=\"orders-db\",src_cell=\"cell-1\",verdict=\"allowed\"}} 5 {t}\n"
        );
    }
    om + "# EOF\n"
}
