//! `cellwatch report`, the Blast radius dashboard and the shared-dependency rules against a
//! real Prometheus (Debian's `prometheus` package). What it scrapes is a synthetic exporter
//! on loopback: the per-service families the contract names (`cellwatch_service_*`,
//! `cellwatch_cell_info`, `cellwatch_service_info`) and the per-pair ones, with counters
//! that grow at every scrape. Two cells call the global service `orders-db`, a third calls
//! the global cell but not the service, and cell-1 fails 30% of its connects to it.
//! cell-1 calls cell-2 too, under a temporary allow rule until 2100 (and one expired).
//! No agent and no root are needed; the same checks against a real agent belong with the
//! agent's per-service metrics.
use std::{
    io::{Read, Write},
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use cellwatch_tests::{
    cellwatch, dot_to_svg, free_port,
    prometheus::{PromOpts, Prometheus, repo},
};
use serde_json::Value;

/// The exporter's text at its `k`th scrape: each counter is `k` times its step.
fn exposition(k: u64) -> String {
    let mut t = String::new();
    let mut line = |l: String| {
        t.push_str(&l);
        t.push('\n');
    };
    for (cell, global) in
        [("global", true), ("cell-1", false), ("cell-2", false), ("cell-3", false)]
    {
        line(format!("cellwatch_cell_info{{cell=\"{cell}\",global=\"{global}\"}} 1"));
    }
    line("cellwatch_service_info{service=\"orders-db\",cell=\"global\"} 1".to_owned());
    line("cellwatch_service_info{service=\"ledger\",cell=\"global\"} 1".to_owned());
    // (client cell, opened and failed per scrape) to orders-db.
    for (src, opened, failed) in [("cell-1", 7, 3), ("cell-2", 10, 0)] {
        let s = format!("src_cell=\"{src}\",service=\"orders-db\"");
        for direction in ["egress", "ingress"] {
            line(format!(
                "cellwatch_service_connections_opened_total{{{s},direction=\"{direction}\",verdict=\"allowed\"}} {}",
                opened * k
            ));
            line(format!(
                "cellwatch_service_bytes_sent_total{{{s},direction=\"{direction}\"}} {}",
                100 * opened * k
            ));
            line(format!(
                "cellwatch_service_bytes_received_total{{{s},direction=\"{direction}\"}} {}",
                300 * opened * k
            ));
            line(format!(
                "cellwatch_service_connections_active{{{s},direction=\"{direction}\"}} 1"
            ));
        }
        if failed > 0 {
            line(format!(
                "cellwatch_service_connections_failed_total{{{s},reason=\"refused\"}} {}",
                failed * k
            ));
        }
        for le in ["0.001024", "+Inf"] {
            line(format!(
                "cellwatch_service_connect_latency_seconds_bucket{{{s},le=\"{le}\"}} {}",
                opened * k
            ));
        }
        line(format!("cellwatch_service_connect_latency_seconds_count{{{s}}} {}", opened * k));
    }
    // (client cell, server cell, opened per scrape); orders-db's connections count in
    // (cell, global) too.
    for (src, dst, opened) in [
        ("cell-1", "cell-1", 10),
        ("cell-1", "global", 7),
        ("cell-1", "cell-2", 2),
        ("cell-2", "cell-2", 10),
        ("cell-2", "global", 10),
        ("cell-3", "cell-3", 10),
        ("cell-3", "global", 3),
    ] {
        let p = format!("src_cell=\"{src}\",dst_cell=\"{dst}\"");
        // Every flow is allowed: cell-1 -> cell-2 by the temporary rule below.
        line(format!(
            "cellwatch_connections_opened_total{{{p},direction=\"egress\",verdict=\"allowed\"}} {}",
            opened * k
        ));
        line(format!(
            "cellwatch_bytes_sent_total{{{p},direction=\"egress\"}} {}",
            100 * opened * k
        ));
        line(format!(
            "cellwatch_bytes_received_total{{{p},direction=\"egress\"}} {}",
            300 * opened * k
        ));
        for le in ["0.001024", "+Inf"] {
            line(format!(
                "cellwatch_connect_latency_seconds_bucket{{{p},le=\"{le}\"}} {}",
                opened * k
            ));
        }
    }
    line(format!(
        "cellwatch_connections_failed_total{{src_cell=\"cell-1\",dst_cell=\"global\",reason=\"refused\"}} {}",
        3 * k
    ));
    // The temporary rules: one in force until 2100-01-01, one expired in 2023.
    for (to, reason, until) in
        [("cell-2", "orders migration", RULE_UNTIL), ("cell-3", "old move", 1_700_000_000)]
    {
        line(format!(
            "cellwatch_allow_rule_expiry_timestamp_seconds{{from=\"cell-1\",to=\"{to}\",reason=\"{reason}\"}} {until}"
        ));
    }
    t
}

/// The deadline of the temporary rule in force: 2100-01-01T00:00:00Z.
const RULE_UNTIL: u64 = 4_102_444_800;

/// The synthetic exporter: answers every request with the next [`exposition`].
struct Exporter {
    port: u16,
    stop: Arc<AtomicBool>,
    scrapes: Arc<AtomicU64>,
}

impl Exporter {
    fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let scrapes = Arc::new(AtomicU64::new(0));
        let (s2, n) = (Arc::clone(&stop), Arc::clone(&scrapes));
        thread::spawn(move || {
            for conn in l.incoming() {
                if s2.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let body = exposition(n.fetch_add(1, Ordering::Relaxed) + 1);
                let _ = write!(
                    conn,
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { port, stop, scrapes }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// `cellwatch report --prometheus URL ARGS...`: (exit code, stdout, stderr).
fn report(url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["report", "--prometheus", url];
    all.extend(args);
    let (status, out, err) = cellwatch(&[], &all);
    (status.code(), out, err)
}

#[test]
fn report_dashboard_and_rules_read_a_real_prometheus() {
    let exporter = Exporter::start();
    let prom = Prometheus::start(PromOpts { target: Some(exporter.port), ..PromOpts::default() });
    // Five scrapes: rate() and increase() have something to work on, and the recording
    // rules have run.
    prom.wait_for("recording containment", Duration::from_secs(60), || {
        exporter.scrapes.load(Ordering::Relaxed) >= 5
            && !prom.query("cellwatch:cell_containment_connections:ratio5m").1.is_empty()
    });

    // JSON: exactly cell-1 and cell-2 are orders-db's blast radius; cell-1 is the outlier.
    // Over a minute, an outlier needs 12 connects (0.2 a second): five scrapes make 50.
    let (code, out, err) = report(&prom.url(), &["--range", "1m", "--format", "json"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}:\n{out}"));
    let services = v["services"].as_array().unwrap();
    let db = services.iter().find(|s| s["service"] == "orders-db").expect("orders-db");
    assert_eq!((db["cell"].as_str(), db["global"].as_bool()), (Some("global"), Some(true)));
    let mut dependents: Vec<&str> =
        db["dependents"].as_array().unwrap().iter().map(|d| d["cell"].as_str().unwrap()).collect();
    dependents.sort_unstable();
    assert_eq!(dependents, ["cell-1", "cell-2"], "{db}");
    // 7 and 10 a scrape: cell-1 has 7/17 of the connections (the range holds every scrape,
    // counted from each series' first sample on).
    let share = db["dependents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["cell"] == "cell-1")
        .unwrap()["connections_share"]
        .as_f64()
        .unwrap();
    assert!((share - 7.0 / 17.0).abs() < 0.01, "cell-1's share {share}");
    let ledger = services.iter().find(|s| s["service"] == "ledger").expect("ledger");
    assert_eq!(ledger["dependents"], Value::Array(vec![]));
    let cell3 = v["cells"].as_array().unwrap().iter().find(|c| c["cell"] == "cell-3").unwrap();
    assert_eq!(cell3["services"], Value::Array(vec![]));
    let outliers: Vec<(&str, &str, &str)> = v["outliers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["cell"].as_str().unwrap(),
                o["destination"]["name"].as_str().unwrap(),
                o["signal"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outliers,
        [("cell-1", "orders-db", "connect_failures"), ("cell-1", "global", "connect_failures")]
    );
    // The rule in force only, with what its flow carried: cell-1's connections and bytes to
    // cell-2, every one of them allowed.
    let rules = v["temporary_rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "{rules:?}");
    let rule = &rules[0];
    let cell1 = v["cells"].as_array().unwrap().iter().find(|c| c["cell"] == "cell-1").unwrap();
    let to_cell2 =
        cell1["cells"].as_array().unwrap().iter().find(|c| c["cell"] == "cell-2").unwrap();
    // 2 connections a scrape, of 100 bytes sent and 300 received each.
    let (conns, bytes) =
        (to_cell2["connections"].as_u64().unwrap(), to_cell2["bytes"].as_u64().unwrap());
    assert!(conns > 0 && bytes.abs_diff(400 * conns) <= 400, "{to_cell2}");
    let left = rule["expires_in_seconds"].as_u64().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!((RULE_UNTIL - now).abs_diff(left) <= 60, "{left} s left at {now}");
    assert_eq!(
        *rule,
        serde_json::json!({
            "from": "cell-1",
            "to": "cell-2",
            "reason": "orders migration",
            "expires": "2100-01-01T00:00:00Z",
            "expires_in_seconds": left,
            "connections": to_cell2["connections"],
            "bytes": to_cell2["bytes"]
        })
    );

    // Text and dot, which graphviz draws.
    let (code, text, err) = report(&prom.url(), &["--range", "1m"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(text.contains("  orders-db (in global, a global cell): 2 cells, "), "{text}");
    assert!(text.contains("  cell-1 -> service orders-db: 30.0% of connects failed; "), "{text}");
    let rules = text.split("\nTEMPORARY ALLOW RULES in force").nth(1).expect("the rules' section");
    assert!(rules.contains("\n  cell-1  cell-2  2100-01-01T00:00:00Z  "), "{text}");
    assert!(rules.contains("  orders migration\n") && !rules.contains("old move"), "{text}");
    let (code, dot, err) = report(&prom.url(), &["--range", "1m", "--format", "dot"]);
    assert_eq!(code, Some(0), "{err}");
    let svg = dot_to_svg(&dot);
    assert_eq!(svg.matches("class=\"edge\"").count(), dot.matches(" -> ").count(), "{dot}");
    assert!(svg.contains(">orders&#45;db</text>"), "{svg}");

    // Every panel of the Blast radius dashboard is accepted and shows data.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("dashboards/blast-radius.json")).unwrap(),
    )
    .unwrap();
    let vars: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(vars, ["datasource", "src_cell"]);
    let mut empty = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let q =
                t["expr"].as_str().unwrap().replace("$__range", "5m").replace("$src_cell", ".*");
            assert!(!q.contains('$'), "a variable is left unfilled in: {q}");
            let (accepted, result) = prom.query(&q);
            assert!(accepted, "{}: Prometheus rejected {q}", p["title"]);
            if result.is_empty() {
                empty.push(format!("{} ({}): {q}", p["title"], t["refId"]));
            }
        }
    }
    assert!(empty.is_empty(), "panels without data:\n{}", empty.join("\n"));

    // The alerts' expressions: cell-1 is the outlier to orders-db and to the global cell;
    // no dependency is new to a Prometheus without a day of history.
    let rules: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo().join("deploy/prometheus/cellwatch-rules.yaml")).unwrap(),
    )
    .unwrap();
    let expr = |alert: &str| -> String {
        rules["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .find(|r| r["alert"] == alert)
            .and_then(|r| r["expr"].as_str())
            .unwrap()
            .to_owned()
    };
    // rate() over 5 minutes of a few seconds' growth: the 0.2 connects a second are
    // reached after about 6 s of scrapes.
    let outliers = || -> Vec<String> {
        let (accepted, result) = prom.query(&expr("CellOutlier"));
        assert!(accepted, "Prometheus rejected CellOutlier");
        let mut found: Vec<String> = result
            .iter()
            .map(|s| {
                let m = &s["metric"];
                format!(
                    "{} {}{} {}",
                    m["src_cell"].as_str().unwrap_or(""),
                    m["service"].as_str().unwrap_or(""),
                    m["dst_cell"].as_str().unwrap_or(""),
                    m["signal"].as_str().unwrap_or("")
                )
            })
            .collect();
        found.sort();
        found
    };
    let expected = ["cell-1 global connect_failures", "cell-1 orders-db connect_failures"];
    prom.wait_for("finding cell-1 an outlier", Duration::from_secs(60), || {
        let found = outliers();
        assert!(found.iter().all(|f| expected.contains(&f.as_str())), "{found:?}");
        found == expected
    });
    let (accepted, new) = prom.query(&expr("CellNewSharedDependency"));
    assert!(accepted && new.is_empty(), "{new:?}");
}

#[test]
fn report_failures_are_one_sentence_and_exit_1() {
    // Nothing listens there.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (code, out, err) = report(&dead, &[]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with(&format!("cellwatch: cannot reach Prometheus at {dead}: ")), "{err}");

    // Something that is not Prometheus answers there.
    let exporter = Exporter::start();
    let (code, _, err) =
        report(&format!("http://127.0.0.1:{}", exporter.port), &["--format", "json"]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("does not answer as Prometheus' query API: HTTP 200, not its JSON"),
        "{err}"
    );

    // A Prometheus that scrapes no agent.
    let prom = Prometheus::start(PromOpts::default());
    let (code, out, err) = report(&prom.url(), &["--format", "dot"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(
        err,
        format!(
            "cellwatch: Prometheus at {} has no cellwatch data over the last 1h (no \
             cellwatch_cell_info, cellwatch_connections_opened_total or \
             cellwatch_service_connections_opened_total series): does it scrape the agents?\n",
            prom.url()
        )
    );
}
