//! `cellwatch drain-status` against a real Prometheus (Debian's `prometheus` package) on
//! a history written into its storage first (`promtool tsdb create-blocks-from
//! openmetrics`): the families the contract names for drained cells, 40 minutes of them
//! up to now. cell-b is drained and still in use (new connections over the window, and
//! processes holding connections open), cell-d is drained and empty, cell-e was never
//! drained. No agent and no root are needed.
use std::time::{SystemTime, UNIX_EPOCH};

use cellwatch_tests::{
    cellwatch, free_port,
    prometheus::{PromOpts, Prometheus},
};
use serde_json::{Value, json};

/// cell-b's drain's start, as the agents export it: 2023-11-14T22:13:20Z.
const CELL_B_START: u64 = 1_700_000_000;
/// The history's step, in seconds.
const STEP: usize = 15;

/// One family's samples in OpenMetrics: each series (labels, value at each time) at
/// every step from `from` to `to`.
fn family(
    om: &mut String,
    name: &str,
    kind: &str,
    series: &[(&str, &dyn Fn(u64) -> u64)],
    (from, to): (u64, u64),
) {
    let base = name.strip_suffix("_total").unwrap_or(name);
    om.push_str(&format!("# TYPE {base} {kind}\n"));
    let target = "job=\"cellwatch\"";
    for (labels, value) in series {
        for t in (from..=to).step_by(STEP) {
            om.push_str(&format!("{name}{{{labels},{target}}} {} {t}\n", value(t)));
        }
    }
}

/// 40 minutes of the drain families, up to `now`. cell-b: cell-a opened 3 connections
/// into it 150 s ago (seen on both sides), cell-c one 100 s ago, cell-a had 2 connects
/// refused; 5 connections are open, held by psql on node-1 (4) and java in a container on
/// node-2 (1). cell-d: drained two hours before, its counters flat, nothing open. cell-e:
/// counters, but no start.
fn history(now: u64) -> String {
    let span = (now - 40 * 60, now);
    let step = |at: u64, before: u64, after: u64| move |t: u64| if t < at { before } else { after };
    let mut om = String::new();
    let start_b = |_| CELL_B_START;
    let start_d = |_| CELL_B_START - 7200;
    family(
        &mut om,
        "cellwatch_drain_start_timestamp_seconds",
        "gauge",
        &[
            ("cell=\"cell-b\",instance=\"node-1\"", &start_b),
            ("cell=\"cell-d\",instance=\"node-1\"", &start_d),
        ],
        span,
    );
    let (a_new, c_new, flat) = (step(now - 150, 5, 8), step(now - 100, 2, 3), |_| 7);
    family(
        &mut om,
        "cellwatch_drain_connections_opened_total",
        "counter",
        &[
            (
                "cell=\"cell-b\",src_cell=\"cell-a\",direction=\"egress\",instance=\"node-1\"",
                &a_new,
            ),
            (
                "cell=\"cell-b\",src_cell=\"cell-a\",direction=\"ingress\",instance=\"node-3\"",
                &a_new,
            ),
            (
                "cell=\"cell-b\",src_cell=\"cell-c\",direction=\"egress\",instance=\"node-2\"",
                &c_new,
            ),
            ("cell=\"cell-d\",src_cell=\"cell-a\",direction=\"egress\",instance=\"node-1\"", &flat),
            (
                "cell=\"cell-e\",src_cell=\"cell-a\",direction=\"egress\",instance=\"node-1\"",
                &a_new,
            ),
        ],
        span,
    );
    let refused = step(now - 120, 0, 2);
    family(
        &mut om,
        "cellwatch_drain_connections_refused_total",
        "counter",
        &[("cell=\"cell-b\",src_cell=\"cell-a\",instance=\"node-1\"", &refused)],
        span,
    );
    let (four, one, zero) = (|_| 4, |_| 1, |_| 0);
    family(
        &mut om,
        "cellwatch_drain_connections_active",
        "gauge",
        &[
            ("cell=\"cell-b\",src_cell=\"cell-a\",direction=\"egress\",instance=\"node-1\"", &four),
            (
                "cell=\"cell-b\",src_cell=\"cell-a\",direction=\"ingress\",instance=\"node-3\"",
                &four,
            ),
            ("cell=\"cell-b\",src_cell=\"cell-c\",direction=\"egress\",instance=\"node-2\"", &one),
            ("cell=\"cell-d\",src_cell=\"cell-a\",direction=\"egress\",instance=\"node-1\"", &zero),
        ],
        span,
    );
    family(
        &mut om,
        "cellwatch_drain_holdouts",
        "gauge",
        &[
            (
                "cell=\"cell-b\",src_cell=\"cell-a\",comm=\"psql\",container=\"host\",instance=\"node-1\"",
                &four,
            ),
            (
                "cell=\"cell-b\",src_cell=\"cell-c\",comm=\"java\",container=\"3f2a9c81b0d4\",instance=\"node-2\"",
                &one,
            ),
            (
                "cell=\"cell-d\",src_cell=\"cell-a\",comm=\"psql\",container=\"host\",instance=\"node-1\"",
                &zero,
            ),
        ],
        span,
    );
    om + "# EOF\n"
}

/// `cellwatch drain-status CELL --prometheus URL ARGS...`: (exit code, stdout, stderr).
fn drain_status(cell: &str, url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["drain-status", cell, "--prometheus", url];
    all.extend(args);
    let (status, out, err) = cellwatch(&[], &all);
    (status.code(), out, err)
}

#[test]
fn drain_status_reads_a_real_prometheus() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    let prom = Prometheus::start(PromOpts { history: Some(&history(now)), ..PromOpts::default() });
    let url = prom.url();

    // cell-b is still in use: exit 1, and why.
    let (code, text, err) = drain_status("cell-b", &url, &[]);
    assert_eq!(code, Some(1), "{text}{err}\n{}", prom.log());
    assert!(err.is_empty(), "{err}");
    let (first, rest) = text.split_once('\n').unwrap();
    assert!(first.starts_with("cell-b drained since 2023-11-14T22:13:20Z ("), "{text}");
    assert!(first.ends_with(" ago)"), "{text}");
    let expected = "
NEW CONNECTIONS into cell-b over the last 5m, by client cell
  SRC CELL  CONNECTIONS
  cell-a              3
  cell-c              1

REFUSED connects (drain: refuse) into cell-b over the last 5m, by client cell
  SRC CELL  CONNECTIONS
  cell-a              2

OPEN CONNECTIONS into cell-b: 5; the client processes holding them
  NODE    PROCESS  CONTAINER     SRC CELL  CONNECTIONS
  node-1  psql     host          cell-a              4
  node-2  java     3f2a9c81b0d4  cell-c              1

cell-b is not empty: 4 new connections over the last 5m, 5 connections open (2 processes holding them)
";
    assert_eq!(rest, expected, "got:\n{text}");

    let (code, out, err) = drain_status("cell-b", &url, &["--format", "json"]);
    assert_eq!(code, Some(1), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}:\n{out}"));
    assert_eq!(
        v,
        json!({
            "cell": "cell-b",
            "drained_since": "2023-11-14T22:13:20Z",
            "window_seconds": 300,
            "new_connections": [{"src_cell": "cell-a", "count": 3}, {"src_cell": "cell-c", "count": 1}],
            "refused": [{"src_cell": "cell-a", "count": 2}],
            "holdouts": [
                {"instance": "node-1", "comm": "psql", "container": "host", "src_cell": "cell-a", "connections": 4},
                {"instance": "node-2", "comm": "java", "container": "3f2a9c81b0d4", "src_cell": "cell-c", "connections": 1}
            ],
            "active": 5,
            "empty": false
        })
    );

    // A window that ends before the new connections: they are not new in it... but the
    // connections are still open.
    let (code, out, _) = drain_status("cell-b", &url, &["--window", "1m", "--format", "json"]);
    assert_eq!(code, Some(1), "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["new_connections"], json!([]), "{out}");
    assert_eq!(v["active"], 5);

    // cell-d: flat counters, nothing open: empty, exit 0.
    let (code, text, err) = drain_status("cell-d", &url, &[]);
    assert_eq!(code, Some(0), "{text}{err}");
    assert!(
        text.contains(
            "\nOPEN CONNECTIONS into cell-d: 0; the client processes holding them\n  (none)\n"
        ),
        "{text}"
    );
    assert!(
        text.ends_with("\ncell-d is empty: no new connection over the last 5m, none open\n"),
        "{text}"
    );
    let (code, out, _) = drain_status("cell-d", &url, &["--format", "json"]);
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["empty"].as_bool(), v["active"].as_u64()), (Some(true), Some(0)), "{out}");

    // cell-e was never drained: it cannot tell, exit 2 and one sentence.
    let (code, out, err) = drain_status("cell-e", &url, &[]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(
        err,
        format!(
            "cellwatch: Prometheus at {url} has no \
             cellwatch_drain_start_timestamp_seconds{{cell=\"cell-e\"}}: cell-e is not drained, \
             or no agent that drains it is scraped\n"
        )
    );
}

#[test]
fn drain_status_cannot_tell_without_prometheus() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    for format in ["text", "json"] {
        let (code, out, err) = drain_status("cell-b", &dead, &["--format", format]);
        assert_eq!(code, Some(2), "{out}{err}");
        assert!(out.is_empty(), "{out}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!("cellwatch: cannot reach Prometheus at {dead}: ")),
            "{err}"
        );
    }
    // A name that is no cell's never reaches a query.
    let (code, out, err) = drain_status("cell-b\"}", &dead, &[]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("is not a cell name"), "{err}");
}
