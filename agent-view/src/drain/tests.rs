//! Unit tests of `drain`: the queries as written, and the status from canned answers of
//! Prometheus' query API (empty, not empty, not drained) as text and JSON.

use serde_json::{Value, json};

use super::*;
use crate::report::parse_answer;

/// The time of the queries: 2026-12-01T12:05:00Z, two hours and five minutes into the
/// drain.
const NOW: f64 = 1_796_126_700.0;
/// The drain's start: 2026-12-01T10:00:00Z.
const START: &str = "1796119200";

fn window() -> Range {
    Range::parse("5m").unwrap()
}

/// A query's canned series: (labels, value).
type Canned<'a> = &'a [(&'a [(&'a str, &'a str)], &'a str)];

/// Answers for the queries given, as Prometheus writes them; the others answer nothing.
fn answers(canned: &[(Query, Canned<'_>)]) -> Answers {
    Query::ALL
        .iter()
        .map(|q| {
            let series = canned.iter().find(|(c, _)| c == q).map_or(&[][..], |(_, s)| s);
            let result: Vec<Value> = series
                .iter()
                .map(|(labels, v)| {
                    let metric: serde_json::Map<String, Value> =
                        labels.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
                    json!({ "metric": metric, "value": [NOW, v] })
                })
                .collect();
            let body =
                json!({"status": "success", "data": {"resultType": "vector", "result": result}});
            (*q, parse_answer(&body.to_string()).expect("a canned answer parses"))
        })
        .collect()
}

/// cell-b's drain's start.
const DRAINED: (Query, Canned<'static>) = (Query::Start, &[(&[("cell", "cell-b")], START)]);

/// cell-b, drained: cell-a opened 3 connections into it over the window (both sides
/// seen), cell-c one (its client side only), external clients 0.4 (extrapolation, not a
/// connection); 2 refused; 12 open, held by two processes (10 and 1) and one more not
/// named.
fn busy() -> Status {
    Status::build(
        "cell-b",
        window(),
        NOW,
        &answers(&[
            DRAINED,
            (
                Query::Opened,
                &[
                    (&[("src_cell", "cell-a"), ("direction", "egress")], "3.2"),
                    (&[("src_cell", "cell-a"), ("direction", "ingress")], "2.9"),
                    (&[("src_cell", "cell-c"), ("direction", "egress")], "1.07"),
                    (&[("src_cell", "external"), ("direction", "ingress")], "0.4"),
                ],
            ),
            (Query::Refused, &[(&[("src_cell", "cell-a")], "2")]),
            (
                Query::Holdouts,
                &[
                    (
                        &[
                            ("instance", "10.0.0.5:9473"),
                            ("src_cell", "cell-c"),
                            ("comm", "java"),
                            ("container", "host"),
                        ],
                        "1",
                    ),
                    (
                        &[
                            ("instance", "10.0.0.6:9473"),
                            ("src_cell", "cell-a"),
                            ("comm", "psql\u{1b}[2J"),
                            ("container", "3f2a9c81b0d4"),
                        ],
                        "10",
                    ),
                ],
            ),
            (
                Query::Active,
                &[
                    (&[("src_cell", "cell-a"), ("direction", "egress")], "10"),
                    (&[("src_cell", "cell-a"), ("direction", "ingress")], "10"),
                    (&[("src_cell", "cell-c"), ("direction", "egress")], "2"),
                ],
            ),
        ]),
    )
    .expect("a status")
}

#[test]
fn cell_names_are_the_configs() {
    assert_eq!(cell_name("cell-b"), Ok("cell-b".to_owned()));
    assert_eq!(cell_name("b2"), Ok("b2".to_owned()));
    for bad in ["", "-b", "b-", "Cell-B", "b\"}", "b.c", &"a".repeat(64)] {
        let e = cell_name(bad).unwrap_err();
        assert!(e.contains("is not a cell name"), "{bad}: {e}");
    }
    assert!(cell_name("a\u{1b}").unwrap_err().starts_with("`a\\u{1b}`"));
}

#[test]
fn queries_as_written() {
    let q = |query: Query| query.promql("cell-b", window());
    assert_eq!(
        q(Query::Start),
        "min by (cell) (cellwatch_drain_start_timestamp_seconds{cell=\"cell-b\"})"
    );
    let opened = "cellwatch_drain_connections_opened_total{cell=\"cell-b\",src_cell!=\"cell-b\"}";
    assert_eq!(
        q(Query::Opened),
        format!(
            "sum by (src_cell, direction) ((increase({opened}[300s]) and {opened} offset 300s) \
             or ({opened} unless {opened} offset 300s))"
        )
    );
    assert!(q(Query::Refused).starts_with(
        "sum by (src_cell) ((increase(cellwatch_drain_connections_refused_total{cell=\"cell-b\",src_cell!=\"cell-b\"}[300s])"
    ));
    assert_eq!(
        q(Query::Holdouts),
        "sum by (instance, src_cell, comm, container) (cellwatch_drain_holdouts{cell=\"cell-b\",src_cell!=\"cell-b\"}) > 0"
    );
    assert_eq!(
        q(Query::Active),
        "sum by (src_cell, direction) (cellwatch_drain_connections_active{cell=\"cell-b\",src_cell!=\"cell-b\"})"
    );
}

#[test]
fn a_cell_still_in_use_is_not_empty() {
    let s = busy();
    assert!(!s.empty);
    assert_eq!(s.drained_since, "2026-12-01T10:00:00Z");
    assert_eq!(s.age_seconds, 7500);
    // The larger side per client cell, rounded; 0.4 is no connection.
    let new: Vec<(&str, u64)> =
        s.new_connections.iter().map(|c| (c.src_cell.as_str(), c.count)).collect();
    assert_eq!(new, [("cell-a", 3), ("cell-c", 1)]);
    assert_eq!(s.refused, [Count { src_cell: "cell-a".to_owned(), count: 2 }]);
    // Both sides of cell-a's 10 are one 10.
    assert_eq!(s.active, 12);
    let held: Vec<(&str, u64)> =
        s.holdouts.iter().map(|h| (h.instance.as_str(), h.connections)).collect();
    assert_eq!(held, [("10.0.0.6:9473", 10), ("10.0.0.5:9473", 1)], "most first");
}

#[test]
fn nothing_new_and_nothing_open_is_empty() {
    let flat = answers(&[
        DRAINED,
        (Query::Opened, &[(&[("src_cell", "cell-a"), ("direction", "egress")], "0")]),
        (Query::Active, &[(&[("src_cell", "cell-a"), ("direction", "egress")], "0")]),
    ]);
    let s = Status::build("cell-b", window(), NOW, &flat).unwrap();
    assert!(s.empty, "{s:?}");
    assert!(s.new_connections.is_empty() && s.holdouts.is_empty() && s.active == 0);
    assert_eq!(s.verdict(), "cell-b is empty: no new connection over the last 5m, none open");
    // Open connections alone, or one process holding some, are not empty.
    let open = answers(&[DRAINED, (Query::Active, &[(&[("src_cell", "cell-a")], "1")])]);
    let s = Status::build("cell-b", window(), NOW, &open).unwrap();
    assert_eq!(s.verdict(), "cell-b is not empty: 1 connection open");
    let held = answers(&[
        DRAINED,
        (
            Query::Holdouts,
            &[(&[("instance", "n"), ("src_cell", "a"), ("comm", "c"), ("container", "host")], "1")],
        ),
    ]);
    let s = Status::build("cell-b", window(), NOW, &held).unwrap();
    assert!(!s.empty);
    assert_eq!(s.verdict(), "cell-b is not empty: 0 connections open (1 process holding them)");
}

#[test]
fn a_cell_without_a_start_is_not_drained() {
    let e = Status::build("cell-b", window(), NOW, &answers(&[])).unwrap_err();
    assert_eq!(e, NotDrained { cell: "cell-b".to_owned() });
    assert_eq!(
        e.to_string(),
        "no cellwatch_drain_start_timestamp_seconds{cell=\"cell-b\"}: cell-b is not drained, or \
         no agent that drains it is scraped"
    );
    // A start that is no number is none either.
    let nan = answers(&[(Query::Start, &[(&[("cell", "cell-b")], "NaN")])]);
    assert!(Status::build("cell-b", window(), NOW, &nan).is_err());
}

#[test]
fn the_text_for_people() {
    let text = busy().text();
    let expected = "\
cell-b drained since 2026-12-01T10:00:00Z (2h 5m ago)

NEW CONNECTIONS into cell-b over the last 5m, by client cell
  SRC CELL  CONNECTIONS
  cell-a              3
  cell-c              1

REFUSED connects (drain: refuse) into cell-b over the last 5m, by client cell
  SRC CELL  CONNECTIONS
  cell-a              2

OPEN CONNECTIONS into cell-b: 12; the client processes holding them
  NODE           PROCESS        CONTAINER     SRC CELL  CONNECTIONS
  10.0.0.6:9473  psql\\u{1b}[2J  3f2a9c81b0d4  cell-a             10
  10.0.0.5:9473  java           host          cell-c              1
  (and 1 not named: each agent names its 20 busiest client processes, on its own node)

cell-b is not empty: 4 new connections over the last 5m, 12 connections open (2 processes holding them)
";
    assert_eq!(text, expected, "got:\n{text}");

    let empty = Status::build("cell-b", window(), NOW, &answers(&[DRAINED])).unwrap().text();
    let expected = "\
cell-b drained since 2026-12-01T10:00:00Z (2h 5m ago)

NEW CONNECTIONS into cell-b over the last 5m, by client cell
  (none)

OPEN CONNECTIONS into cell-b: 0; the client processes holding them
  (none)

cell-b is empty: no new connection over the last 5m, none open
";
    assert_eq!(empty, expected, "got:\n{empty}");
    // A drain whose start is still ahead.
    let soon =
        Status::build("cell-b", window(), NOW - 7500.0 - 60.0, &answers(&[DRAINED])).unwrap();
    assert!(soon.text().starts_with("cell-b drained since 2026-12-01T10:00:00Z (in 1m)\n"));
}

#[test]
fn the_json_for_scripts() {
    let v: Value = serde_json::from_str(&busy().json().unwrap()).unwrap();
    assert_eq!(
        v,
        json!({
            "cell": "cell-b",
            "drained_since": "2026-12-01T10:00:00Z",
            "window_seconds": 300,
            "new_connections": [
                {"src_cell": "cell-a", "count": 3},
                {"src_cell": "cell-c", "count": 1}
            ],
            "refused": [{"src_cell": "cell-a", "count": 2}],
            "holdouts": [
                {"instance": "10.0.0.6:9473", "comm": "psql\u{1b}[2J", "container": "3f2a9c81b0d4",
                 "src_cell": "cell-a", "connections": 10},
                {"instance": "10.0.0.5:9473", "comm": "java", "container": "host",
                 "src_cell": "cell-c", "connections": 1}
            ],
            "active": 12,
            "empty": false
        })
    );
}
