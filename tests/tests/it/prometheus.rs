//! End to end with a real Prometheus (Debian's `prometheus` package) scraping a real agent on
//! loopback: cross-cell traffic flows, then every dashboard panel query (template variables
//! filled in) and every rule expression goes through the Prometheus HTTP API. Each is
//! accepted, each panel returns data, and `CrossCellLeakage` fires for the leaking pair.
//! A connection that stays open all along shows in the bytes and RTT panels; cell-b is
//! drained, so the Drains panels have the leak's connections into it and the held one. Every
//! `cellwatch_*` name a panel or a rule uses is a family the agent declares.
use std::{net::SocketAddr, time::Duration};

use agent_core::metrics::families;
use cellwatch_tests::{
    Agent, AgentOpts, MIB, Open, Server, clients, connect_from, free_port,
    prometheus::{PromOpts, Prometheus, repo},
    ranges::{HARNESS, PROMETHEUS},
};
use serde_json::Value;

/// Grafana's variables as a dashboard would fill them: the cells `src` and `dst` (".*" for
/// "All"), every node, and intervals that suit a one-second scrape.
fn fill_cells(expr: &str, src: &str, dst: &str) -> String {
    let filled = expr
        .replace("$__rate_interval", "1m")
        .replace("$__range", "5m")
        .replace("$__interval", "15s")
        .replace("$src_cell", src)
        .replace("$dst_cell", dst)
        .replace("$instance", ".*");
    assert!(!filled.contains('$'), "a variable is left unfilled in: {filled}");
    filled
}

/// (dashboard, panel title, filled query) of every panel target.
fn panel_queries() -> Vec<(String, String, String)> {
    panel_queries_for(".*", ".*")
}

/// The dashboards whose panels read the agent's per-pair families (the Blast radius
/// dashboard reads the per-service ones: `report.rs`).
pub(crate) const PAIR_DASHBOARDS: [&str; 3] =
    ["cell-overview", "cross-cell-leakage", "agent-health"];

/// As [`panel_queries`], for one source and destination cell.
pub(crate) fn panel_queries_for(src: &str, dst: &str) -> Vec<(String, String, String)> {
    PAIR_DASHBOARDS.iter().flat_map(|name| dashboard_queries(name, src, dst)).collect()
}

/// (dashboard, panel title, filled query) of every panel target of `dashboards/{name}.json`.
pub(crate) fn dashboard_queries(name: &str, src: &str, dst: &str) -> Vec<(String, String, String)> {
    let path = repo().join(format!("dashboards/{name}.json"));
    let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard"))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(vars.contains(&"datasource"), "{name}: no datasource variable");
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("expr");
            let undeclared = families::undeclared(expr);
            assert!(undeclared.is_empty(), "{name}: {undeclared:?} are no family: {expr}");
            out.push((
                name.to_owned(),
                p["title"].as_str().unwrap_or("").to_owned(),
                fill_cells(expr, src, dst),
            ));
        }
    }
    out
}

/// (rule name, expr) of every rule, recording and alerting, of the shipped rule file.
pub(crate) fn rule_exprs() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(repo().join("deploy/prometheus/cellwatch-rules.yaml")).unwrap();
    let v: Value = serde_saphyr::from_str(&text).expect("rule file");
    v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .map(|r| {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap().to_owned();
            let expr = r["expr"].as_str().unwrap().to_owned();
            let undeclared = families::undeclared(&expr);
            assert!(undeclared.is_empty(), "{name}: {undeclared:?} are no family: {expr}");
            (name, expr)
        })
        .collect()
}

fn config() -> String {
    format!(
        "cells:\n  - {{ name: global, global: true, cidrs: [{}] }}\n  \
         - {{ name: cell-a, cidrs: [{}] }}\n  - {{ name: cell-b, cidrs: [{}], drained: true }}\n  \
         - {{ name: cell-c, cidrs: [{}] }}\nignore_cidrs: [{}]\n",
        PROMETHEUS.cidr(0),
        PROMETHEUS.cidr(1),
        PROMETHEUS.cidr(2),
        PROMETHEUS.cidr(3),
        HARNESS.cidr(0)
    )
}

/// One round of traffic: a leak (cell-a -> cell-b), in-cell and global calls, refused
/// connects. Returns how many leaked.
fn traffic_round() -> usize {
    const N: usize = 20;
    let b = Server::start(PROMETHEUS.ip(2, 0, 1), 2 * N, 100, 300);
    let g = Server::start(PROMETHEUS.ip(0, 0, 1), N, 50, 50);
    let leaked = clients(PROMETHEUS.ip(1, 0, 2), b.addr, N, 100, 300);
    assert_eq!(clients(PROMETHEUS.ip(2, 0, 2), b.addr, N, 100, 300), N);
    assert_eq!(clients(PROMETHEUS.ip(1, 0, 3), g.addr, N, 50, 50), N);
    let closed = SocketAddr::new(PROMETHEUS.ip(2, 0, 9), free_port());
    for _ in 0..5 {
        assert!(
            connect_from(PROMETHEUS.ip(1, 0, 4), closed).is_err(),
            "nothing listens at {closed}"
        );
    }
    assert_eq!(b.join() + g.join(), 3 * N);
    leaked
}

/// Prometheus's `cellwatch_bytes_sent_total` of the open connection, as stored.
fn open_bytes(prom: &Prometheus) -> Option<String> {
    let q =
        "cellwatch_bytes_sent_total{src_cell=\"cell-c\",dst_cell=\"cell-c\",direction=\"egress\"}";
    let (_, v) = prom.query(q);
    v.first().and_then(|s| s["value"][1].as_str()).map(str::to_owned)
}

#[test]
fn dashboards_and_rules_work_against_a_real_prometheus() {
    let agent = Agent::start(AgentOpts {
        config: Some(&config()),
        args: &["--live-interval", "1s"],
        ..Default::default()
    });
    let prom = Prometheus::start(PromOpts { target: Some(agent.port), ..PromOpts::default() });
    prom.wait_for("scraping the agent", Duration::from_secs(30), || {
        prom.query("up{job=\"cellwatch\"} == 1").1.len() == 1
    });
    // The open connection: one MiB Prometheus sees, then one more, so increase() and
    // rate() have something to work on.
    let mut open =
        Open::start(PROMETHEUS.ip(3, 0, 2), PROMETHEUS.ip(3, 0, 1), Duration::from_secs(120));
    open.send_mib();
    prom.wait_for("storing the open connection's first MiB", Duration::from_secs(30), || {
        open_bytes(&prom).as_deref() == Some("1048576")
    });
    open.send_mib();
    prom.wait_for("storing the open connection's second MiB", Duration::from_secs(30), || {
        open_bytes(&prom).as_deref() == Some("2097152")
    });

    // Two rounds, with a scrape between: counters that rate() and increase() can see move.
    assert_eq!(traffic_round(), 20);
    prom.wait_for("seeing the leak", Duration::from_secs(30), || {
        !prom.query("cellwatch_boundary_violations_total{direction=\"egress\"}").1.is_empty()
    });
    assert_eq!(traffic_round(), 20);
    // One connection stays open for the active-connections panel.
    let held_srv = Server::start(PROMETHEUS.ip(2, 0, 5), 1, 1, 1);
    let held = connect_from(PROMETHEUS.ip(2, 0, 6), held_srv.addr).expect("held connection");
    prom.wait_for("seeing the second round", Duration::from_secs(60), || {
        !prom
            .query("cellwatch_boundary_violations_total{direction=\"egress\",src_cell=\"cell-a\"} >= 40")
            .1
            .is_empty()
            && !prom
                .query(
                    "cellwatch_connections_active{direction=\"egress\",src_cell=\"cell-b\",dst_cell=\"cell-b\"} >= 1",
                )
                .1
                .is_empty()
    });
    // Exact, as Prometheus stored it.
    let (_, v) = prom.query("cellwatch_connections_opened_total{direction=\"egress\",src_cell=\"cell-a\",dst_cell=\"cell-b\",verdict=\"violation\"}");
    assert_eq!(v[0]["value"][1], "40", "{v:?}");
    let (_, v) = prom.query("cellwatch_connections_failed_total{src_cell=\"cell-a\",dst_cell=\"cell-b\",reason=\"refused\"}");
    assert_eq!(v[0]["value"][1], "10", "{v:?}");

    let mut empty = Vec::new();
    let queries = panel_queries();
    assert!(queries.len() >= 20, "{} panel queries", queries.len());
    for (dash, title, q) in &queries {
        let (accepted, result) = prom.query(q);
        assert!(accepted, "{dash} / {title}: Prometheus rejected {q}");
        if result.is_empty() {
            empty.push(format!("{dash} / {title}: {q}"));
        }
    }
    assert!(empty.is_empty(), "panels without data:\n{}", empty.join("\n"));

    // The bytes and RTT panels, for cell-c alone: its one connection has never closed.
    let (_, closed) = prom.query("cellwatch_connections_closed_total{src_cell=\"cell-c\"} > 0");
    assert!(closed.is_empty(), "cell-c's connection is still open: {closed:?}");
    for (dash, title, q) in panel_queries_for("cell-c", "cell-c") {
        if !(title.starts_with("Bytes") || title.starts_with("RTT")) {
            continue;
        }
        let (accepted, result) = prom.query(&q);
        assert!(accepted, "{dash} / {title}: Prometheus rejected {q}");
        let value =
            result.first().and_then(|s| s["value"][1].as_str()).and_then(|v| v.parse::<f64>().ok());
        assert!(
            value.is_some_and(|v| v > 0.0 && v.is_finite()),
            "{dash} / {title} shows nothing of the open connection: {q} = {result:?}"
        );
    }

    let rules = rule_exprs();
    // Every rule of the shipped file (16 for pairs and leaks, 19 for services, 5 for
    // drains and temporary rules).
    assert_eq!(rules.len(), 40);
    for (name, expr) in &rules {
        assert!(prom.query(expr).0, "{name}: Prometheus rejected {expr}");
    }
    // Recording rules run on their own one-second clock: wait for them to catch up.
    prom.wait_for("recording the leak", Duration::from_secs(30), || {
        let (_, leak) = prom.query("cellwatch:boundary_violations:increase5m");
        leak.iter()
            .any(|s| s["metric"]["src_cell"] == "cell-a" && s["metric"]["dst_cell"] == "cell-b")
    });
    // Counted once: the ingress side of the held connection is not added.
    prom.wait_for("recording one active connection", Duration::from_secs(30), || {
        let (_, active) =
            prom.query("cellwatch:connections_active{src_cell=\"cell-b\",dst_cell=\"cell-b\"}");
        active.len() == 1 && active[0]["value"][1] == "1"
    });
    // The raw series count it twice (egress and ingress); the other rounds' connections
    // may take a scrape or two to be seen closed.
    prom.wait_for("the raw series counting it from both sides", Duration::from_secs(30), || {
        let (_, both) = prom
            .query("sum(cellwatch_connections_active{src_cell=\"cell-b\",dst_cell=\"cell-b\"})");
        both.len() == 1 && both[0]["value"][1] == "2"
    });

    prom.wait_for("firing CrossCellLeakage", Duration::from_secs(60), || {
        prom.alerts().iter().any(|a| {
            a["labels"]["alertname"] == "CrossCellLeakage"
                && a["state"] == "firing"
                && a["labels"]["src_cell"] == "cell-a"
                && a["labels"]["dst_cell"] == "cell-b"
        })
    });
    let wrong: Vec<Value> = prom
        .alerts()
        .into_iter()
        .filter(|a| {
            a["labels"]["alertname"] == "CrossCellLeakage" && a["labels"]["src_cell"] != "cell-a"
        })
        .collect();
    assert!(wrong.is_empty(), "only cell-a -> cell-b leaks: {wrong:?}");
    drop(held);
    held_srv.join();
    assert_eq!(open.close(), 2 * MIB, "the open connection's payload");
}
