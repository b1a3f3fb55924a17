//! The shipped dashboards, rules and `cellwatch report` against a real VictoriaMetrics
//! (Debian's `victoria-metrics`), both ways a fleet feeds it: VictoriaMetrics scraping the
//! agent itself, and a real Prometheus scraping the agent and remote-writing everything
//! (its recording rules' series too) into a second VictoriaMetrics. One real agent on
//! loopback, with the traffic of the Prometheus area (a leak into a drained cell, in-cell
//! and global calls, refused connects, a connection open all along, one held) plus calls
//! to a service. In each VictoriaMetrics: the exact counts; every panel query of every
//! dashboard and every rule expression accepted, each panel of the per-pair dashboards
//! with data (as the Prometheus area demands), each Blast radius panel with data where
//! the Prometheus has some. vmalert runs the shipped rule file against the scraping one:
//! every rule evaluates without error, the recorded series appear, and CrossCellLeakage
//! fires and reaches a real Alertmanager. Once the traffic has stopped and every store
//! holds the agent's final counts, `cellwatch report` (JSON and dot) says the same of
//! both VictoriaMetrics as of the Prometheus.
use std::{net::SocketAddr, time::Duration};

use agent_core::metrics::families as f;
use cellwatch_tests::{
    Agent, AgentOpts, MIB, Metrics, Open, Server,
    alertmanager::Alertmanager,
    clients, connect_from, free_port,
    prometheus::{PromOpts, Prometheus, shipped_rules},
    ranges::{HARNESS, VICTORIA},
    victoria::{VictoriaMetrics, Vmalert},
};
use serde_json::Value;

use crate::{
    prometheus::{PAIR_DASHBOARDS, dashboard_queries, panel_queries_for, rule_exprs},
    report::report_ok as report,
};

/// global (with the service `db` on .5.0/24), cell-a, cell-b (drained), cell-c; a
/// temporary rule from cell-c to cell-a, in force until 2100.
fn config() -> String {
    format!(
        "cells:\n  - {{ name: global, global: true, cidrs: [\"{}\"] }}\n  \
         - {{ name: cell-a, cidrs: [\"{}\"] }}\n  - {{ name: cell-b, cidrs: [\"{}\"], drained: true }}\n  \
         - {{ name: cell-c, cidrs: [\"{}\"] }}\n\
         services:\n  - {{ name: db, cidrs: [\"{}.{}.5.0/24\"] }}\n\
         allow:\n  - {{ from: cell-c, to: cell-a, until: \"2100-01-01T00:00:00Z\", reason: \"a move\" }}\n\
         ignore_cidrs: [\"{}\"]\n",
        VICTORIA.cidr(0),
        VICTORIA.cidr(1),
        VICTORIA.cidr(2),
        VICTORIA.cidr(3),
        VICTORIA.net,
        VICTORIA.at(0),
        HARNESS.cidr(0)
    )
}

const N: usize = 20;

/// One round: a leak (cell-a -> cell-b), calls inside cell-b, cell-a and cell-c calling
/// the service `db` in global, refused connects into cell-b. Returns how many leaked.
fn traffic_round() -> usize {
    let b = Server::start(VICTORIA.ip(2, 0, 1), 2 * N, 100, 300);
    let db = Server::start(VICTORIA.ip(0, 5, 1), N + N / 2, 50, 50);
    let leaked = clients(VICTORIA.ip(1, 0, 2), b.addr, N, 100, 300);
    assert_eq!(clients(VICTORIA.ip(2, 0, 2), b.addr, N, 100, 300), N);
    assert_eq!(clients(VICTORIA.ip(1, 0, 3), db.addr, N, 50, 50), N);
    assert_eq!(clients(VICTORIA.ip(3, 0, 3), db.addr, N / 2, 50, 50), N / 2);
    let closed = SocketAddr::new(VICTORIA.ip(2, 0, 9), free_port());
    for _ in 0..5 {
        assert!(connect_from(VICTORIA.ip(1, 0, 4), closed).is_err(), "nothing listens at {closed}");
    }
    assert_eq!(b.join() + db.join(), 3 * N + N / 2);
    leaked
}

/// A store the test reads: the Prometheus, or a VictoriaMetrics.
enum Store<'a> {
    Prom(&'a Prometheus),
    Vm(&'a VictoriaMetrics),
}

impl Store<'_> {
    fn query(&self, q: &str) -> (bool, Vec<Value>) {
        match self {
            Self::Prom(p) => p.query(q),
            Self::Vm(v) => v.query(q),
        }
    }

    fn url(&self) -> String {
        match self {
            Self::Prom(p) => p.url(),
            Self::Vm(v) => v.url(),
        }
    }

    fn wait_for(&self, what: &str, limit: Duration, ok: impl FnMut() -> bool) {
        match self {
            Self::Prom(p) => p.wait_for(what, limit, ok),
            Self::Vm(v) => v.wait_for(what, limit, ok),
        }
    }

    /// The value of the query's first series, as the store writes it.
    fn value(&self, q: &str) -> Option<String> {
        let (_, v) = self.query(q);
        v.first().and_then(|s| s["value"][1].as_str()).map(str::to_owned)
    }

    /// Why the store rejects `q` (VictoriaMetrics' error message; empty if accepted).
    fn rejection(&self, q: &str) -> String {
        match self {
            Self::Prom(p) => {
                if p.query(q).0 {
                    String::new()
                } else {
                    "rejected".to_owned()
                }
            }
            Self::Vm(v) => v.query_error(q),
        }
    }
}

const OPEN_BYTES: &str =
    "cellwatch_bytes_sent_total{src_cell=\"cell-c\",dst_cell=\"cell-c\",direction=\"egress\"}";

/// The counter families, each summed over its series: every one `cellwatch report` reads
/// (and closings and violations): once all stores hold the agent's sums, the traffic's
/// last counts are in.
const COUNTED: [&str; 11] = [
    f::CONNECTIONS_OPENED_TOTAL,
    f::CONNECTIONS_CLOSED_TOTAL,
    f::CONNECTIONS_FAILED_TOTAL,
    f::BYTES_SENT_TOTAL,
    f::BYTES_RECEIVED_TOTAL,
    f::CONNECT_LATENCY_SECONDS_BUCKET,
    f::SERVICE_CONNECTIONS_OPENED_TOTAL,
    f::SERVICE_BYTES_SENT_TOTAL,
    f::SERVICE_BYTES_RECEIVED_TOTAL,
    f::SERVICE_CONNECT_LATENCY_SECONDS_BUCKET,
    f::BOUNDARY_VIOLATIONS_TOTAL,
];

/// The sum of every series of `family` in one scrape of the agent.
fn scraped_sum(m: &Metrics, family: &str) -> f64 {
    m.0.iter()
        .filter(|(k, _)| k.as_str() == family || k.starts_with(&format!("{family}{{")))
        .map(|(_, v)| v)
        .sum()
}

/// The JSON report with each temporary rule's `expires_in_seconds` (seconds to its
/// deadline from the time of the queries, which differs between two reports) checked
/// against `reference` to within 5 s and then set to it.
fn comparable(json: &str, reference: Option<&Value>) -> Value {
    let mut v: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}:\n{json}"));
    if let (Some(rules), Some(reference)) =
        (v["temporary_rules"].as_array_mut(), reference.map(|r| &r["temporary_rules"]))
    {
        for (i, r) in rules.iter_mut().enumerate() {
            let want = reference[i]["expires_in_seconds"].as_u64().unwrap_or(0);
            let got = r["expires_in_seconds"].as_u64().unwrap_or(0);
            assert!(got.abs_diff(want) <= 5, "expires in {got} s, and {want} s against Prometheus");
            r["expires_in_seconds"] = want.into();
        }
    }
    v
}

#[test]
fn dashboards_rules_and_report_work_against_victoria_metrics() {
    let agent = Agent::start(AgentOpts {
        config: Some(&config()),
        args: &["--live-interval", "1s"],
        ..Default::default()
    });
    let am = Alertmanager::start();
    // Way 1: VictoriaMetrics scrapes the agent, and vmalert runs the rules against it.
    let scraping = VictoriaMetrics::start(Some(agent.port));
    let vmalert = Vmalert::start(&scraping, &shipped_rules(), &am);
    // Way 2: Prometheus scrapes the agent (and runs the rules), remote-writing it all.
    let written = VictoriaMetrics::start(None);
    let prom = Prometheus::start_remote_writing(
        PromOpts { target: Some(agent.port), ..PromOpts::default() },
        &written.write_url(),
    );
    let stores = [
        ("Prometheus", Store::Prom(&prom)),
        ("VictoriaMetrics scraping", Store::Vm(&scraping)),
        ("VictoriaMetrics remote-written", Store::Vm(&written)),
    ];
    let vms = &stores[1..];
    let wait_all = |what: &str, limit: Duration, ok: &dyn Fn(&Store<'_>) -> bool| {
        for (name, s) in &stores {
            s.wait_for(&format!("{name}: {what}"), limit, || ok(s));
        }
    };
    wait_all("storing the agent up", Duration::from_secs(30), &|s| {
        s.query("up{job=\"cellwatch\"} == 1").1.len() == 1
    });

    let mut open =
        Open::start(VICTORIA.ip(3, 0, 2), VICTORIA.ip(3, 0, 1), Duration::from_secs(180));
    open.send_mib();
    wait_all("storing the open connection's first MiB", Duration::from_secs(30), &|s| {
        s.value(OPEN_BYTES).as_deref() == Some("1048576")
    });
    open.send_mib();
    wait_all("storing the open connection's second MiB", Duration::from_secs(30), &|s| {
        s.value(OPEN_BYTES).as_deref() == Some("2097152")
    });

    assert_eq!(traffic_round(), N);
    wait_all("seeing the leak", Duration::from_secs(30), &|s| {
        !s.query("cellwatch_boundary_violations_total{direction=\"egress\"}").1.is_empty()
    });
    assert_eq!(traffic_round(), N);
    // One connection inside cell-b stays open, both ends held, for the active panels.
    let held_listener = std::net::TcpListener::bind((VICTORIA.ip(2, 0, 5), 0)).unwrap();
    let held = connect_from(VICTORIA.ip(2, 0, 6), held_listener.local_addr().unwrap())
        .expect("held connection");
    let (held_server, _) = held_listener.accept().expect("the held connection's server side");
    wait_all("seeing the second round", Duration::from_secs(60), &|s| {
        !s.query(
            "cellwatch_boundary_violations_total{direction=\"egress\",src_cell=\"cell-a\"} >= 40",
        )
        .1
        .is_empty()
            && !s
                .query(
                    "cellwatch_connections_active{direction=\"egress\",src_cell=\"cell-b\",dst_cell=\"cell-b\"} >= 1",
                )
                .1
                .is_empty()
    });
    // Exact, as each stored it.
    for (name, s) in &stores {
        let q = "cellwatch_connections_opened_total{direction=\"egress\",src_cell=\"cell-a\",\
                 dst_cell=\"cell-b\",verdict=\"violation\"}";
        assert_eq!(s.value(q).as_deref(), Some("40"), "{name}: {q}");
        let q = "cellwatch_connections_failed_total{src_cell=\"cell-a\",dst_cell=\"cell-b\",\
                 reason=\"refused\"}";
        assert_eq!(s.value(q).as_deref(), Some("10"), "{name}: {q}");
        let q = "cellwatch_service_connections_opened_total{direction=\"egress\",\
                 src_cell=\"cell-a\",service=\"db\"}";
        assert_eq!(s.value(q).as_deref(), Some("40"), "{name}: {q}");
    }

    // Every panel of the per-pair dashboards: accepted, with data (remote-written samples
    // may lag a second behind: a few passes, bounded).
    let queries = panel_queries_for(".*", ".*");
    assert!(queries.len() >= 20, "{} panel queries", queries.len());
    let mut rejected = Vec::new();
    for (name, s) in vms {
        for (dash, title, q) in &queries {
            let why = s.rejection(q);
            if !why.is_empty() {
                rejected.push(format!("{name}: {dash} / {title}: {why}: {q}"));
            }
        }
    }
    assert!(rejected.is_empty(), "rejected panel queries:\n{}", rejected.join("\n"));
    for (name, s) in vms {
        let empty = |s: &Store<'_>| -> Vec<String> {
            queries
                .iter()
                .filter(|(.., q)| s.query(q).1.is_empty())
                .map(|(dash, title, q)| format!("{dash} / {title}: {q}"))
                .collect()
        };
        s.wait_for(&format!("{name}: data in every panel"), Duration::from_secs(20), || {
            empty(s).is_empty()
        });
    }

    // The bytes and RTT panels, for cell-c alone: its one connection has never closed.
    for (name, s) in &stores {
        let q = "cellwatch_connections_closed_total{src_cell=\"cell-c\",dst_cell=\"cell-c\"} > 0";
        let (_, closed) = s.query(q);
        assert!(closed.is_empty(), "{name}: cell-c's connection is still open: {closed:?}");
        for (dash, title, q) in panel_queries_for("cell-c", "cell-c") {
            if !(title.starts_with("Bytes") || title.starts_with("RTT")) {
                continue;
            }
            let (accepted, result) = s.query(&q);
            assert!(accepted, "{name}: {dash} / {title}: rejected {q}");
            let value = result
                .first()
                .and_then(|r| r["value"][1].as_str())
                .and_then(|v| v.parse::<f64>().ok());
            assert!(
                value.is_some_and(|v| v > 0.0 && v.is_finite()),
                "{name}: {dash} / {title} shows nothing of the open connection: {q} = {result:?}"
            );
        }
    }

    // Every other dashboard (the Blast radius): accepted, and each panel with data, as
    // `report.rs` demands of a Prometheus (its containment panels read recorded series:
    // vmalert's in the scraping VictoriaMetrics, Prometheus' own in the other two).
    let mut others = Vec::new();
    for entry in std::fs::read_dir(cellwatch_tests::prometheus::repo().join("dashboards")).unwrap()
    {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        if path.extension().is_some_and(|e| e == "json") && !PAIR_DASHBOARDS.contains(&&*name) {
            others.extend(dashboard_queries(&name, ".*", ".*"));
        }
    }
    assert!(others.len() >= 10, "{} other panel queries", others.len());
    for (name, s) in &stores {
        for (dash, title, q) in &others {
            let why = s.rejection(q);
            assert!(why.is_empty(), "{name}: {dash} / {title}: {why}: {q}");
            s.wait_for(
                &format!("{name}: data in {dash} / {title}: {q}"),
                Duration::from_secs(30),
                || !s.query(q).1.is_empty(),
            );
        }
    }

    // Every rule of the shipped file, recording and alerting: accepted.
    let rules = rule_exprs();
    assert_eq!(rules.len(), 40);
    let mut rejected = Vec::new();
    for (name, s) in vms {
        for (rule, expr) in &rules {
            let why = s.rejection(expr);
            if !why.is_empty() {
                rejected.push(format!("{name}: {rule}: {why}: {expr}"));
            }
        }
    }
    assert!(rejected.is_empty(), "rejected rules:\n{}", rejected.join("\n"));

    // vmalert evaluates every rule, none with an error.
    let unevaluated = |r: &Value| {
        r["lastEvaluation"].as_str().is_none_or(|t| t.is_empty() || t.starts_with("0001-"))
    };
    vmalert.wait_for("evaluating every rule", Duration::from_secs(30), || {
        let got = vmalert.rules();
        got.len() == rules.len() && !got.iter().any(unevaluated)
    });
    let errors: Vec<String> = vmalert
        .rules()
        .iter()
        .filter(|r| r["health"] != "ok" || r["lastError"].as_str().is_some_and(|e| !e.is_empty()))
        .map(|r| format!("{}: {}", r["name"], r["lastError"]))
        .collect();
    assert!(errors.is_empty(), "vmalert's rules in error:\n{}", errors.join("\n"));

    // The recorded series: vmalert's in one, Prometheus' remote-written in the other.
    for (name, s) in vms {
        s.wait_for(&format!("{name}: recording the leak"), Duration::from_secs(30), || {
            let (_, leak) = s.query("cellwatch:boundary_violations:increase5m");
            leak.iter()
                .any(|r| r["metric"]["src_cell"] == "cell-a" && r["metric"]["dst_cell"] == "cell-b")
        });
        s.wait_for(
            &format!("{name}: recording one active connection"),
            Duration::from_secs(30),
            || {
                let (_, active) = s
                    .query("cellwatch:connections_active{src_cell=\"cell-b\",dst_cell=\"cell-b\"}");
                active.len() == 1 && active[0]["value"][1] == "1"
            },
        );
        s.wait_for(
            &format!("{name}: the raw series counting it from both sides"),
            Duration::from_secs(30),
            || {
                let q = "cellwatch_connections_active{src_cell=\"cell-b\",dst_cell=\"cell-b\"}";
                s.value(&format!("sum({q})")).as_deref() == Some("2")
            },
        );
    }

    // CrossCellLeakage, evaluated by vmalert, fires for cell-a -> cell-b alone and
    // reaches the Alertmanager.
    let leak = |a: &Value| {
        a["labels"]["alertname"] == "CrossCellLeakage"
            && a["labels"]["src_cell"] == "cell-a"
            && a["labels"]["dst_cell"] == "cell-b"
    };
    vmalert.wait_for("firing CrossCellLeakage", Duration::from_secs(60), || {
        vmalert.alerts().iter().any(|a| leak(a) && a["state"] == "firing")
    });
    let wrong: Vec<Value> = vmalert
        .alerts()
        .into_iter()
        .filter(|a| {
            a["labels"]["alertname"] == "CrossCellLeakage" && a["labels"]["src_cell"] != "cell-a"
        })
        .collect();
    assert!(wrong.is_empty(), "only cell-a -> cell-b leaks: {wrong:?}");
    let (_, delivered) = am.wait_for_notification(0, Duration::from_secs(30), |n| {
        n["alerts"].as_array().into_iter().flatten().any(|a| leak(a) && a["status"] == "firing")
    });
    assert_eq!(delivered["receiver"], "webhook", "{delivered}");

    // The traffic stops; every store catches up with the agent's final counts.
    drop(held);
    drop(held_server);
    assert_eq!(open.close(), 2 * MIB, "the open connection's payload");
    let settled = || {
        let m = agent.metrics();
        stores.iter().all(|(_, s)| {
            COUNTED.iter().all(|family| {
                let want = scraped_sum(&m, family);
                s.value(&format!("sum({family})")).and_then(|v| v.parse::<f64>().ok()) == Some(want)
            })
        })
    };
    prom.wait_for("every store holding the agent's final counts", Duration::from_secs(60), settled);

    // The same report, of the same cells, pairs and figures, from each store.
    let reference_json = report(&prom.url(), &["--format", "json"]);
    let reference = comparable(&reference_json, None);
    let cells: Vec<&str> =
        reference["cells"].as_array().unwrap().iter().filter_map(|c| c["cell"].as_str()).collect();
    for cell in ["global", "cell-a", "cell-b", "cell-c"] {
        assert!(cells.contains(&cell), "the report names {cells:?}:\n{reference_json}");
    }
    let cell_a = reference["cells"].as_array().unwrap().iter().find(|c| c["cell"] == "cell-a");
    let to_b = cell_a
        .and_then(|c| c["cells"].as_array())
        .and_then(|d| d.iter().find(|d| d["cell"] == "cell-b"));
    assert_eq!(to_b.map(|d| d["connections"].clone()), Some(40.into()), "{reference_json}");
    let db = reference["services"].as_array().unwrap().iter().find(|s| s["service"] == "db");
    assert_eq!(db.map(|s| s["connections"].clone()), Some(60.into()), "{reference_json}");
    let rules = reference["temporary_rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "{reference_json}");
    assert_eq!(
        (rules[0]["from"].as_str(), rules[0]["to"].as_str()),
        (Some("cell-c"), Some("cell-a"))
    );
    let reference_dot = report(&prom.url(), &["--format", "dot"]);
    for (name, s) in vms {
        let json = report(&s.url(), &["--format", "json"]);
        assert_eq!(
            comparable(&json, Some(&reference)),
            reference,
            "{name}'s report differs from Prometheus':\n{json}\nPrometheus':\n{reference_json}"
        );
        assert_eq!(report(&s.url(), &["--format", "dot"]), reference_dot, "{name}'s dot");
    }
}
