//! `cellwatch report`, the Blast radius dashboard and the shared-dependency rules against a
//! real Prometheus (Debian's `prometheus` package). What it scrapes is a synthetic exporter
//! on loopback: the per-service families the contract names (`cellwatch_service_*`,
//! `cellwatch_cell_info`, `cellwatch_service_info`) and the per-pair ones, with counters
//! that grow at every scrape. Two cells call the global service `orders-db`, a third calls
//! the global cell but not the service, and cell-1 fails 30% of its connects to it.
//! cell-1 calls cell-2 too, under a temporary allow rule until 2100 (and one expired).
//! No agent and no root are needed; the same checks against a real agent belong with the
//! agent's per-service metrics.
//!
//! `--format html` is rendered in Debian's headless Chromium (a fresh profile, no network
//! of its own, each run killed after a minute), against the same exporter with two leaks
//! and its counts frozen so that the JSON and the page are read alike: the DevTools
//! protocol (over `--remote-debugging-pipe`) sees no console error, no failed load and no
//! request but the page's, a screenshot is taken, and the dumped DOM's `data-*` figures
//! are the JSON's. The page, JSON, DOM and screenshot stay in
//! `$CARGO_TARGET_TMPDIR/report-html/`. The checker is shown a console error and a
//! missing image first, and must fail them.
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use cellwatch_tests::{
    TempDir, cellwatch, dot_to_svg, free_port,
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
        Self::serving(exposition)
    }

    /// An exporter whose `k`th scrape is `body(k)`.
    fn serving(body: fn(u64) -> String) -> Self {
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
                let text = body(n.fetch_add(1, Ordering::Relaxed) + 1);
                let _ = write!(
                    conn,
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{text}",
                    text.len()
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

/// [`report`]'s output; fails the test on an error.
pub(crate) fn report_ok(url: &str, args: &[&str]) -> String {
    let (code, out, err) = report(url, args);
    assert_eq!(code, Some(0), "cellwatch report --prometheus {url} {args:?}: {err}");
    out
}

/// The cells in a JSON report's blast radius of `service` (its `dependents`), sorted.
pub(crate) fn dependents(report: &serde_json::Value, service: &str) -> Vec<String> {
    let svc = report["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["service"] == service))
        .unwrap_or_else(|| panic!("{service} in {report}"));
    let mut cells: Vec<String> = svc["dependents"]
        .as_array()
        .unwrap_or_else(|| panic!("dependents of {service} in {report}"))
        .iter()
        .filter_map(|d| d["cell"].as_str().map(str::to_owned))
        .collect();
    cells.sort_unstable();
    cells
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
             cellwatch_cell_info, cellwatch_connections_opened_total, \
             cellwatch_service_connections_opened_total or \
             cellwatch_udp_service_flows_opened_total series): does it scrape the agents?\n",
            prom.url()
        )
    );
}

/// The HTML test's exporter: [`exposition`] at 100 times the pace (so that a range of an
/// hour still finds cell-1 the outlier), plus two leaks, and frozen from its 5th scrape
/// on. Prometheus started within the hour, so each series counts all of its value: the
/// report is the same whenever it is asked, once the frozen scrape is in.
fn frozen(n: u64) -> String {
    let k = 100 * n.min(FROZEN_AT);
    let mut t = exposition(k);
    // cell-3 calls cell-2 against policy (one connection in 100 of k), and cell-1's
    // connects to cell-3 are refused: both pairs count violations.
    let leak = "src_cell=\"cell-3\",dst_cell=\"cell-2\"";
    let refused = "src_cell=\"cell-1\",dst_cell=\"cell-3\"";
    for l in [
        format!(
            "cellwatch_connections_opened_total{{{leak},direction=\"egress\",verdict=\"violation\"}} {k}"
        ),
        format!("cellwatch_bytes_sent_total{{{leak},direction=\"egress\"}} {}", 50 * k),
        format!("cellwatch_boundary_violations_total{{{leak},direction=\"egress\"}} {k}"),
        format!("cellwatch_connections_failed_total{{{refused},reason=\"refused\"}} {}", 2 * k),
        format!("cellwatch_boundary_violations_total{{{refused},direction=\"egress\"}} {}", 2 * k),
    ] {
        t.push_str(&l);
        t.push('\n');
    }
    t
}

/// The scrape from which [`frozen`] serves the same counts.
const FROZEN_AT: u64 = 5;

/// Debian's Chromium, and how long any one run of it may take.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMIUM_LIMIT: Duration = Duration::from_secs(60);

/// Chromium's flags: headless, no network of its own, a fresh profile in `profile`.
fn chromium_flags(profile: &Path) -> Vec<String> {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is needed (Debian's chromium: run `cargo xtask setup`)"
    );
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

/// Kills Chromium's whole process group (its renderers and helpers with it).
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs Chromium with `args` after its flags (a fresh profile each time), in a process
/// group of its own, killed after [`CHROMIUM_LIMIT`]: (exit success, stdout, stderr).
fn chromium(args: &[String]) -> (bool, String, String) {
    let profile = TempDir::new("chromium-profile");
    let mut child = Command::new(CHROMIUM)
        .args(chromium_flags(&profile.0))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("{CHROMIUM} (run `cargo xtask setup`): {e}"));
    let pipe = |r: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = pipe(child.stdout.take().map(|o| Box::new(o) as Box<dyn Read + Send>));
    let err = pipe(child.stderr.take().map(|e| Box::new(e) as Box<dyn Read + Send>));
    let deadline = Instant::now() + CHROMIUM_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("chromium's status") {
            break status;
        }
        if Instant::now() > deadline {
            kill_group(&mut child);
            panic!("chromium {args:?} did not finish in {CHROMIUM_LIMIT:?}: killed");
        }
        thread::sleep(Duration::from_millis(50));
    };
    // Whatever it left behind goes too, so that the pipes close.
    kill_group(&mut child);
    (status.success(), out.join().unwrap_or_default(), err.join().unwrap_or_default())
}

/// What a page did in Chromium, as the DevTools protocol told it: `problems` (console
/// errors and assertions, uncaught exceptions, error log entries such as a failed load or
/// a Content-Security-Policy refusal, failed requests, HTTP errors), and every URL it
/// requested.
#[derive(Debug, Default)]
struct PageCheck {
    problems: Vec<String>,
    requests: Vec<String>,
}

impl PageCheck {
    fn see(&mut self, event: &Value) {
        let p = &event["params"];
        match event["method"].as_str().unwrap_or("") {
            "Runtime.consoleAPICalled"
                if matches!(p["type"].as_str(), Some("error" | "assert")) =>
            {
                self.problems.push(format!("console.{}: {}", p["type"], p["args"]));
            }
            "Runtime.exceptionThrown" => {
                self.problems.push(format!("exception: {}", p["exceptionDetails"]));
            }
            "Log.entryAdded" if p["entry"]["level"] == "error" => {
                let e = &p["entry"];
                self.problems.push(format!("log: {} ({})", e["text"], e["url"]));
            }
            "Network.loadingFailed" => {
                self.problems.push(format!("failed load: {} ({})", p["errorText"], p["requestId"]));
            }
            "Network.responseReceived" if p["response"]["status"].as_u64() >= Some(400) => {
                let r = &p["response"];
                self.problems.push(format!("HTTP {}: {}", r["status"], r["url"]));
            }
            "Network.requestWillBeSent" => {
                self.requests.push(p["request"]["url"].as_str().unwrap_or("").to_owned());
            }
            _ => {}
        }
    }
}

/// Chromium's DevTools protocol over `--remote-debugging-pipe`: it reads commands on its
/// fd 3 and writes answers and events on its fd 4, each message JSON ending in a NUL. The
/// two fds are named pipes the shell that execs Chromium opens.
struct Devtools {
    child: Child,
    to: std::fs::File,
    from: mpsc::Receiver<Value>,
    deadline: Instant,
    next: u64,
    events: Vec<Value>,
    _dir: TempDir,
}

impl Devtools {
    fn start() -> Self {
        let dir = TempDir::new("chromium-devtools");
        let (to, from) = (dir.0.join("to-chromium"), dir.0.join("from-chromium"));
        for fifo in [&to, &from] {
            let ok = Command::new("mkfifo").arg(fifo).status().is_ok_and(|s| s.success());
            assert!(ok, "mkfifo {}", fifo.display());
        }
        let profile = dir.0.join("profile");
        let mut flags = chromium_flags(&profile);
        flags.extend(["--remote-debugging-pipe".to_owned(), "about:blank".to_owned()]);
        let child = Command::new("sh")
            .arg("-c")
            .arg("exec \"$0\" \"$@\" 3<\"$TO\" 4>\"$FROM\"")
            .arg(CHROMIUM)
            .args(&flags)
            .env("TO", &to)
            .env("FROM", &from)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{CHROMIUM} (run `cargo xtask setup`): {e}"));
        // Opened read-write, the pipe to Chromium opens at once whether it runs or not.
        let to = std::fs::OpenOptions::new().read(true).write(true).open(&to).expect("fifo");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let Ok(mut r) = std::fs::File::open(&from) else { return };
            let (mut buf, mut chunk) = (Vec::new(), [0u8; 65536]);
            while let Ok(n @ 1..) = r.read(&mut chunk) {
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|b| *b == 0) {
                    let msg: Vec<u8> = buf.drain(..=end).collect();
                    let Ok(v) = serde_json::from_slice(&msg[..end]) else { continue };
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        let deadline = Instant::now() + CHROMIUM_LIMIT;
        Self { child, to, from: rx, deadline, next: 0, events: Vec::new(), _dir: dir }
    }

    /// The next message, or a failure once the time is up.
    fn recv(&mut self) -> Value {
        let left = self.deadline.saturating_duration_since(Instant::now());
        match self.from.recv_timeout(left) {
            Ok(v) => v,
            Err(e) => {
                kill_group(&mut self.child);
                panic!("chromium's DevTools: nothing within {CHROMIUM_LIMIT:?} ({e}): killed");
            }
        }
    }

    /// Sends a command (to the page's session, if any) and waits for its answer, keeping
    /// the events that come before it.
    fn call(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        self.next += 1;
        let mut msg = serde_json::json!({"id": self.next, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = Value::from(s);
        }
        let mut bytes = serde_json::to_vec(&msg).expect("a command");
        bytes.push(0);
        self.to.write_all(&bytes).expect("a command to chromium");
        loop {
            let m = self.recv();
            if m["id"] == self.next {
                assert!(m["error"].is_null(), "chromium refused {method}: {m}");
                return m["result"].clone();
            }
            self.events.push(m);
        }
    }

    /// Waits for the event `method`, keeping the others.
    fn wait_event(&mut self, method: &str) {
        loop {
            let m = self.recv();
            let found = m["method"] == method;
            self.events.push(m);
            if found {
                return;
            }
        }
    }
}

impl Drop for Devtools {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// Loads `url` in headless Chromium with the console, the log and the network watched;
/// after its load event, waits `settle` for what comes late, then says what it saw.
fn check_page(url: &str, settle: Duration) -> PageCheck {
    let mut dt = Devtools::start();
    let target = dt.call("Target.createTarget", serde_json::json!({"url": "about:blank"}), None);
    let attached = dt.call(
        "Target.attachToTarget",
        serde_json::json!({"targetId": target["targetId"], "flatten": true}),
        None,
    );
    let session = attached["sessionId"].as_str().expect("a session").to_owned();
    for domain in ["Runtime", "Log", "Network", "Page"] {
        dt.call(&format!("{domain}.enable"), serde_json::json!({}), Some(&session));
    }
    let nav = dt.call("Page.navigate", serde_json::json!({"url": url}), Some(&session));
    assert!(nav["errorText"].is_null(), "chromium could not open {url}: {nav}");
    dt.wait_event("Page.loadEventFired");
    let until = Instant::now() + settle;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match dt.from.recv_timeout(left) {
            Ok(m) => dt.events.push(m),
            Err(_) => break,
        }
    }
    let mut check = PageCheck::default();
    for e in &dt.events {
        check.see(e);
    }
    check
}

/// The checker fails what it must: a page with a console error and a missing image.
#[test]
fn report_chromium_checker_sees_console_errors_and_failed_loads() {
    let dir = TempDir::new("chromium-check");
    let bad = dir.write(
        "bad.html",
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>bad</title></head><body>\
         <img src=\"missing.png\"><script>console.error('deliberate')</script></body></html>",
    );
    let check = check_page(&format!("file://{}", bad.display()), Duration::from_millis(500));
    let all = check.problems.join("\n");
    assert!(
        all.contains("console.\"error\": [{\"type\":\"string\",\"value\":\"deliberate\"}]"),
        "{check:?}"
    );
    assert!(all.contains("failed load: \"net::ERR_FILE_NOT_FOUND\""), "{check:?}");
    assert!(all.contains("log: \"Failed to load resource: net::ERR_FILE_NOT_FOUND\""), "{check:?}");
    assert!(check.requests.iter().any(|u| u.ends_with("/missing.png")), "{check:?}");
    let good = dir.write("good.html", "<!DOCTYPE html><title>good</title><p>fine</p>");
    let check = check_page(&format!("file://{}", good.display()), Duration::from_millis(500));
    assert!(check.problems.is_empty(), "{check:?}");
}

/// Every start tag of an HTML text with the attribute `attr`, each as its attributes
/// (`&amp;` and `&quot;` read back, as a DOM serializer writes them).
fn tags_with(html: &str, attr: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let mut attrs = BTreeMap::new();
        let name_end = rest.find(|c: char| c.is_whitespace() || c == '>').unwrap_or(rest.len());
        attrs.insert(String::new(), rest[..name_end].to_owned());
        rest = &rest[name_end..];
        loop {
            rest = rest.trim_start();
            if rest.is_empty() || rest.starts_with('>') || rest.starts_with("/>") {
                break;
            }
            let end = rest.find(|c: char| c == '=' || c == '>' || c.is_whitespace());
            let end = end.unwrap_or(rest.len());
            let key = rest[..end].to_owned();
            rest = &rest[end..];
            if let Some(v) = rest.strip_prefix("=\"") {
                let close = v.find('"').expect("a closing quote");
                let value = v[..close].replace("&quot;", "\"").replace("&amp;", "&");
                attrs.insert(key, value);
                rest = &v[close + 1..];
            } else {
                attrs.insert(key, String::new());
            }
        }
        if attrs.contains_key(attr) {
            out.push(attrs);
        }
    }
    out
}

/// A whole count from a `data-*` attribute.
fn count(a: &BTreeMap<String, String>, k: &str) -> u64 {
    a[k].parse().unwrap_or_else(|e| panic!("{k}={:?} in {a:?}: {e}", a.get(k)))
}

/// A JSON number (or `null`) from a `data-*` attribute.
fn figure(a: &BTreeMap<String, String>, k: &str) -> Value {
    match a[k].as_str() {
        "null" => Value::Null,
        v => serde_json::json!(v.parse::<f64>().unwrap_or_else(|e| panic!("{k}={v:?}: {e}"))),
    }
}

/// A JSON share as the page's attributes hold it (a fraction as f64, or null).
fn as_f64(v: &Value) -> Value {
    v.as_f64().map_or(Value::Null, |f| serde_json::json!(f))
}

/// The pairs of the matrix: every (client cell, server cell) of the page with its
/// (opened, bytes, violations), and whether it is marked a leak.
type Pairs = BTreeMap<(String, String), ((u64, u64, u64), bool)>;

fn dom_pairs(dom: &str) -> Pairs {
    tags_with(dom, "data-opened")
        .iter()
        .map(|a| {
            let figures =
                (count(a, "data-opened"), count(a, "data-bytes"), count(a, "data-violations"));
            let leak = a["class"].split(' ').any(|c| c == "leak");
            ((a["data-src"].clone(), a["data-dst"].clone()), (figures, leak))
        })
        .collect()
}

/// The JSON's pairs, as [`dom_pairs`]: each cell to itself (its containment's inside),
/// and to each cell it called.
fn json_pairs(v: &Value) -> Pairs {
    let mut pairs = Pairs::new();
    for c in v["cells"].as_array().unwrap() {
        let name = c["cell"].as_str().unwrap().to_owned();
        let inside = &c["containment"]["inside"];
        let figures =
            (inside["connections"].as_u64().unwrap(), inside["bytes"].as_u64().unwrap(), 0);
        pairs.insert((name.clone(), name.clone()), (figures, false));
        for d in c["cells"].as_array().unwrap() {
            let violations = d["violations"].as_u64().unwrap();
            let figures =
                (d["connections"].as_u64().unwrap(), d["bytes"].as_u64().unwrap(), violations);
            pairs.insert(
                (name.clone(), d["cell"].as_str().unwrap().to_owned()),
                (figures, violations > 0),
            );
        }
    }
    pairs
}

/// The page's containment, blast radius, outliers and rules against the JSON's.
fn assert_sections_match(dom: &str, v: &Value) {
    const SCOPES: [&str; 4] = ["inside", "global", "other_cells", "external"];
    let rows = tags_with(dom, "data-scope");
    let cells = v["cells"].as_array().unwrap();
    assert_eq!(rows.len(), 4 * cells.len(), "four scopes a cell");
    let totals: Vec<_> =
        tags_with(dom, "data-global").into_iter().filter(|a| a[""] == "tr").collect();
    for (c, (t, scopes)) in cells.iter().zip(totals.iter().zip(rows.chunks(4))) {
        assert_eq!(t["data-cell"], c["cell"].as_str().unwrap());
        assert_eq!(
            (count(t, "data-connections"), count(t, "data-bytes")),
            (c["connections"].as_u64().unwrap(), c["bytes"].as_u64().unwrap()),
            "{}",
            c["cell"]
        );
        for (a, scope) in scopes.iter().zip(SCOPES) {
            let s = &c["containment"][scope];
            assert_eq!(a["data-scope"], scope);
            assert_eq!(
                count(a, "data-connections"),
                s["connections"].as_u64().unwrap(),
                "{} {scope}",
                c["cell"]
            );
            assert_eq!(
                count(a, "data-bytes"),
                s["bytes"].as_u64().unwrap(),
                "{} {scope}",
                c["cell"]
            );
            assert_eq!(
                figure(a, "data-connections-share"),
                as_f64(&s["connections_share"]),
                "{} {scope}",
                c["cell"]
            );
            assert_eq!(
                figure(a, "data-bytes-share"),
                as_f64(&s["bytes_share"]),
                "{} {scope}",
                c["cell"]
            );
        }
    }
    // Each service's callers: one table row and one graph edge each, as the JSON's.
    let callers = |tag: &str| -> Vec<(String, String, u64, u64, Value, Value)> {
        tags_with(dom, "data-connections-share")
            .into_iter()
            .filter(|a| a[""] == tag && a.contains_key("data-service"))
            .map(|a| {
                (
                    a["data-service"].clone(),
                    a["data-cell"].clone(),
                    count(&a, "data-connections"),
                    count(&a, "data-bytes"),
                    figure(&a, "data-connections-share"),
                    figure(&a, "data-bytes-share"),
                )
            })
            .collect()
    };
    let mut want = Vec::new();
    for s in v["services"].as_array().unwrap() {
        let name = s["service"].as_str().unwrap();
        let mut of = |cell: &str, sh: &Value| {
            want.push((
                name.to_owned(),
                cell.to_owned(),
                sh["connections"].as_u64().unwrap(),
                sh["bytes"].as_u64().unwrap(),
                as_f64(&sh["connections_share"]),
                as_f64(&sh["bytes_share"]),
            ));
        };
        for d in s["dependents"].as_array().unwrap() {
            of(d["cell"].as_str().unwrap(), d);
        }
        if !s["external"].is_null() {
            of("external", &s["external"]);
        }
    }
    assert!(!want.is_empty(), "the exporter's services have callers");
    assert_eq!(callers("tr"), want, "the blast radius table");
    assert_eq!(callers("g"), want, "the blast radius graph's edges");
    let services: Vec<_> = tags_with(dom, "data-kind")
        .into_iter()
        .filter(|a| a[""] == "g" && a["data-kind"] == "service")
        .map(|a| (a["data-name"].clone(), count(&a, "data-connections"), count(&a, "data-bytes")))
        .collect();
    let want: Vec<_> = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["service"].as_str().unwrap().to_owned(),
                s["connections"].as_u64().unwrap(),
                s["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(services, want, "the graph's service nodes");
    // Outliers and rules.
    let outliers: Vec<Value> = tags_with(dom, "data-signal")
        .iter()
        .map(|a| serde_json::json!({
            "cell": a["data-cell"], "destination": {"kind": a["data-kind"], "name": a["data-destination"]},
            "signal": a["data-signal"], "value": figure(a, "data-value"), "peer_median": figure(a, "data-peer-median"),
            "peers": count(a, "data-peers"), "connects": count(a, "data-connects"),
        }))
        .collect();
    assert_eq!(Value::Array(outliers), v["outliers"], "the outliers");
    let rules: Vec<Value> = tags_with(dom, "data-expires")
        .iter()
        .zip(v["temporary_rules"].as_array().unwrap())
        .map(|(a, r)| {
            // The time left is counted from each report's own moment: seconds apart.
            let left = count(a, "data-expires-in-seconds");
            let json_left = r["expires_in_seconds"].as_u64().unwrap();
            assert!(
                left <= json_left && json_left - left <= 60,
                "{left} s left, {json_left} in the JSON"
            );
            serde_json::json!({
                "from": a["data-from"], "to": a["data-to"], "reason": a["data-reason"],
                "expires": a["data-expires"], "expires_in_seconds": json_left,
                "connections": count(a, "data-connections"), "bytes": count(a, "data-bytes"),
            })
        })
        .collect();
    assert_eq!(Value::Array(rules), v["temporary_rules"], "the temporary rules");
}

/// The page Chromium rendered: the PNG's size from its header, after its signature.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && &png[12..16] == b"IHDR", "not a PNG");
    let be = |i: usize| u32::from_be_bytes([png[i], png[i + 1], png[i + 2], png[i + 3]]);
    (be(16), be(20))
}

#[test]
fn report_html_renders_in_chromium_with_the_jsons_numbers() {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-html");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    println!("report-html: the page, its JSON, DOM and screenshot go to {}", out.display());

    let exporter = Exporter::serving(frozen);
    let prom = Prometheus::start(PromOpts { target: Some(exporter.port), ..PromOpts::default() });
    // The frozen counts are in, and are the latest sample of every series.
    let frozen_total = 100 * FROZEN_AT * 2;
    prom.wait_for("the frozen scrape", Duration::from_secs(60), || {
        let (_, r) = prom.query(&format!(
            "cellwatch_boundary_violations_total{{src_cell=\"cell-1\",dst_cell=\"cell-3\"}} == {frozen_total}"
        ));
        exporter.scrapes.load(Ordering::Relaxed) > FROZEN_AT + 1 && !r.is_empty()
    });
    let (code, json, err) = report(&prom.url(), &["--format", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, html, err) = report(&prom.url(), &["--format", "html"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
    std::fs::write(out.join("report.json"), &json).unwrap();
    let page = out.join("report.html");
    std::fs::write(&page, &html).unwrap();
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let v: Value = serde_json::from_str(&json).unwrap();

    // No console error, no failed load, and nothing loaded but the page itself.
    let check = check_page(&url, Duration::from_secs(1));
    assert!(check.problems.is_empty(), "chromium saw: {:#?}", check.problems);
    assert_eq!(check.requests, std::slice::from_ref(&url), "the page loads nothing else");

    let png = out.join("report.png");
    let (ok, _, err) = chromium(&[
        format!("--screenshot={}", png.display()),
        "--window-size=1400,2000".to_owned(),
        url.clone(),
    ]);
    assert!(ok, "chromium --screenshot failed: {err}");
    let shot =
        std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
    assert_eq!(png_size(&shot), (1400, 2000), "{}", png.display());
    // A blank page of that size compresses to a few KiB; this one has tables and a graph.
    assert!(shot.len() > 60_000, "{} is {} bytes: blank?", png.display(), shot.len());

    let (ok, dom, err) = chromium(&["--dump-dom".to_owned(), url.clone()]);
    assert!(ok && dom.contains("</html>"), "chromium --dump-dom failed: {err}");
    std::fs::write(out.join("dom.html"), &dom).unwrap();

    // Every pair of the matrix is the JSON's, and every pair the JSON has is on the page.
    let on_page = dom_pairs(&dom);
    let in_json = json_pairs(&v);
    for (pair, figures) in &in_json {
        assert_eq!(on_page.get(pair), Some(figures), "{pair:?}");
    }
    for (pair, figures) in &on_page {
        if !in_json.contains_key(pair) {
            assert_eq!(*figures, ((0, 0, 0), false), "{pair:?} is not in the JSON");
        }
    }
    // The two leaks are marked; the exporter's flows are there.
    let leaks: Vec<_> =
        on_page.iter().filter(|(_, (_, leak))| *leak).map(|(p, _)| p.clone()).collect();
    assert_eq!(
        leaks,
        [("cell-1".to_owned(), "cell-3".to_owned()), ("cell-3".to_owned(), "cell-2".to_owned())]
    );
    assert_eq!(on_page[&("cell-1".to_owned(), "cell-2".to_owned())].0.0, 2 * 100 * FROZEN_AT);
    assert_sections_match(&dom, &v);
    assert!(
        !v["outliers"].as_array().unwrap().is_empty()
            && !v["temporary_rules"].as_array().unwrap().is_empty()
    );
    println!("report-html: {} matches the JSON; screenshot {}", page.display(), png.display());
}
