//! The report from canned answers of Prometheus' query API, as JSON text: the answers
//! parsed, the model built, and its text, JSON and dot (which graphviz must draw); and
//! the same readings from one `/metrics`.
#![expect(
    clippy::too_many_lines,
    reason = "a test's canned answers are one table: it reads best whole, however long"
)]

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use serde_json::{Value, json};

use super::*;

/// An instant-vector answer as Prometheus writes it.
fn answer(series: &[(&[(&str, &str)], &str)]) -> String {
    let result: Vec<Value> = series
        .iter()
        .map(|(labels, v)| {
            let metric: serde_json::Map<String, Value> =
                labels.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
            json!({ "metric": metric, "value": [1_760_000_000.123, v] })
        })
        .collect();
    json!({ "status": "success", "data": { "resultType": "vector", "result": result } }).to_string()
}

type Canned<'a> = &'a [(Reading, &'a [(&'a [(&'a str, &'a str)], &'a str)])];

/// Answers for the families given; the others answer an empty vector.
fn answers(canned: Canned<'_>) -> Answers {
    Reading::ALL
        .iter()
        .map(|f| {
            let series = canned.iter().find(|(g, _)| g == f).map_or(&[][..], |(_, s)| s);
            (*f, parse_answer(&answer(series)).expect("a canned answer parses"))
        })
        .collect()
}

fn hour() -> Range {
    Range::parse("1h").unwrap()
}

/// The end of the range: the time of the queries, 2025-10-09T08:53:20Z.
const END: f64 = 1_760_000_000.0;

const CELLS: &[(&[(&str, &str)], &str)] = &[
    (&[("cell", "global"), ("global", "true")], "1"),
    (&[("cell", "cell-1"), ("global", "false")], "1"),
    (&[("cell", "cell-2"), ("global", "false")], "1"),
    (&[("cell", "cell-3"), ("global", "false")], "1"),
];
const SERVICES: &[(&[(&str, &str)], &str)] = &[
    (&[("service", "orders-db"), ("cell", "global")], "1"),
    (&[("service", "ledger"), ("cell", "global")], "1"),
];

/// Two cells call `orders-db` (in global), a third calls the global cell but not the
/// service; `ledger` has no caller. cell-1's connections: half inside, 40% to global,
/// 10% to cell-2, allowed for two days more by a temporary rule (and 150 of them
/// allowed in the range: the rule came in within it). A rule from cell-3 to cell-1 has
/// expired.
fn two_dependents() -> Report {
    Report::build(
        hour(),
        END,
        &answers(&[
            (Reading::Cells, CELLS),
            (Reading::Services, SERVICES),
            (
                Reading::ServiceOpened,
                &[
                    (&[("src_cell", "cell-1"), ("service", "orders-db")], "799.6"),
                    (&[("src_cell", "cell-2"), ("service", "orders-db")], "400"),
                    (&[("src_cell", "cell-3"), ("service", "orders-db")], "0"),
                ],
            ),
            (
                Reading::ServiceSent,
                &[
                    (&[("src_cell", "cell-1"), ("service", "orders-db")], "3000"),
                    (&[("src_cell", "cell-2"), ("service", "orders-db")], "1000"),
                ],
            ),
            (
                Reading::ServiceReceived,
                &[
                    (&[("src_cell", "cell-1"), ("service", "orders-db")], "3000"),
                    (&[("src_cell", "cell-2"), ("service", "orders-db")], "1000"),
                ],
            ),
            (
                Reading::PairOpened,
                &[
                    (&[("src_cell", "cell-1"), ("dst_cell", "cell-1")], "1000"),
                    (&[("src_cell", "cell-1"), ("dst_cell", "global")], "800"),
                    (&[("src_cell", "cell-1"), ("dst_cell", "cell-2")], "200"),
                    (&[("src_cell", "cell-2"), ("dst_cell", "global")], "400"),
                    (&[("src_cell", "cell-2"), ("dst_cell", "cell-2")], "400"),
                    (&[("src_cell", "cell-3"), ("dst_cell", "cell-3")], "300"),
                    (&[("src_cell", "cell-3"), ("dst_cell", "global")], "100"),
                    (&[("src_cell", "external"), ("dst_cell", "cell-1")], "50"),
                ],
            ),
            (
                Reading::PairSent,
                &[
                    (&[("src_cell", "cell-1"), ("dst_cell", "cell-1")], "1000"),
                    (&[("src_cell", "cell-1"), ("dst_cell", "global")], "3000"),
                ],
            ),
            (
                Reading::PairReceived,
                &[
                    (&[("src_cell", "cell-1"), ("dst_cell", "cell-1")], "1000"),
                    (&[("src_cell", "cell-1"), ("dst_cell", "global")], "3000"),
                ],
            ),
            (
                Reading::AllowRules,
                &[
                    (
                        &[("from", "cell-1"), ("to", "cell-2"), ("reason", "orders migration")],
                        "1760183000",
                    ),
                    (&[("from", "cell-3"), ("to", "cell-1"), ("reason", "old")], "1759990000"),
                ],
            ),
            (Reading::PairAllowed, &[(&[("src_cell", "cell-1"), ("dst_cell", "cell-2")], "150")]),
        ]),
    )
    .expect("a report")
}

#[test]
fn ranges() {
    assert_eq!(hour().seconds(), 3600);
    assert_eq!(hour().promql(), "3600s");
    assert_eq!(hour().to_string(), "1h");
    assert_eq!(Range::parse("90m").unwrap().to_string(), "90m");
    assert_eq!(Range::parse("120m").unwrap().to_string(), "2h");
    assert_eq!(Range::parse("7d").unwrap().to_string(), "1w");
    assert_eq!(Range::parse("60s").unwrap().seconds(), 60);
    assert_eq!(Range::parse("366d").unwrap().seconds(), 366 * 86_400);
    assert!(Range::parse("59s").unwrap_err().contains("outside"));
    assert!(Range::parse("367d").unwrap_err().contains("outside"));
    assert!(Range::parse("0h").unwrap_err().contains("outside"));
    assert!(Range::parse("99999999999999999w").unwrap_err().contains("outside"));
    assert!(Range::parse("1").unwrap_err().contains("needs a unit"));
    assert!(Range::parse("1y").unwrap_err().contains("needs a unit"));
    assert!(Range::parse("soon").unwrap_err().contains("not a range"));
    assert!(Range::parse("").unwrap_err().contains("not a range"));
}

#[test]
fn queries_count_each_connection_once_over_the_range() {
    let q = Reading::PairOpened.query(hour());
    assert_eq!(
        q,
        "sum by (src_cell, dst_cell) (\
         ((increase(cellwatch_connections_opened_total{direction=\"egress\"}[3600s]) \
         and cellwatch_connections_opened_total{direction=\"egress\"} offset 3600s) \
         or (cellwatch_connections_opened_total{direction=\"egress\"} \
         unless cellwatch_connections_opened_total{direction=\"egress\"} offset 3600s)) \
         or ((increase(cellwatch_connections_opened_total{direction=\"ingress\", src_cell=\"external\"}[3600s]) \
         and cellwatch_connections_opened_total{direction=\"ingress\", src_cell=\"external\"} offset 3600s) \
         or (cellwatch_connections_opened_total{direction=\"ingress\", src_cell=\"external\"} \
         unless cellwatch_connections_opened_total{direction=\"ingress\", src_cell=\"external\"} offset 3600s)))"
    );
    // The client's bytes: for an external client, what the server received is what it sent.
    let sent = Reading::ServiceSent.query(hour());
    assert!(sent.contains("cellwatch_service_bytes_sent_total{direction=\"egress\"}"), "{sent}");
    assert!(
        sent.contains(
            "cellwatch_service_bytes_received_total{direction=\"ingress\", src_cell=\"external\"}"
        ),
        "{sent}"
    );
    assert!(sent.starts_with("sum by (src_cell, service) ("), "{sent}");
    // Failures and latency are the client's only: no direction to choose.
    let failed = Reading::ServiceFailed.query(hour());
    assert!(!failed.contains("direction"), "{failed}");
    assert!(failed.contains("cellwatch_service_connections_failed_total"), "{failed}");
    let latency = Reading::PairLatency.query(hour());
    assert!(latency.starts_with("sum by (src_cell, dst_cell, le) ("), "{latency}");
    assert_eq!(
        Reading::Cells.query(hour()),
        "max by (cell, global) (last_over_time(cellwatch_cell_info[3600s]))"
    );
    let all: std::collections::BTreeSet<String> =
        Reading::ALL.iter().map(|f| f.query(hour())).collect();
    assert_eq!(all.len(), Reading::ALL.len(), "one query per family");
    let (now, ranged): (Vec<_>, Vec<_>) = all.iter().partition(|q| !q.contains('['));
    assert!(ranged.iter().all(|q| q.contains("[3600s]")), "{ranged:?}");
    // The rules in force: the deadlines as they are now, whatever the range.
    assert_eq!(now, ["max by (from, to, reason) (cellwatch_allow_rule_expiry_timestamp_seconds)"]);
    // Their flows' allowed connections, each once.
    let allowed = Reading::PairAllowed.query(hour());
    assert_eq!(allowed, q.replace("{direction=", "{verdict=\"allowed\", direction="));
}

#[test]
fn answers_parse_or_say_why_not() {
    let series = parse_answer(&answer(&[
        (&[("src_cell", "a"), ("dst_cell", "b")], "12.5"),
        (&[("le", "+Inf")], "+Inf"),
        (&[], "NaN"),
    ]))
    .unwrap();
    assert_eq!(series.len(), 3);
    assert_eq!(series[0].label("dst_cell"), "b");
    assert_eq!(series[0].label("service"), "");
    assert_eq!(series[0].value, 12.5);
    assert_eq!(series[1].value, f64::INFINITY);
    assert!(series[2].value.is_nan());

    let refused = r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:5: parse error"}"#;
    assert_eq!(
        parse_answer(refused),
        Err(AnswerError::Refused(
            "bad_data: invalid parameter \"query\": 1:5: parse error".to_owned()
        ))
    );
    assert!(matches!(parse_answer("<html>Grafana</html>"), Err(AnswerError::NotApi(_))));
    assert!(matches!(parse_answer(r#"{"status":"success"}"#), Err(AnswerError::NotApi(_))));
    let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
    assert_eq!(parse_answer(matrix), Err(AnswerError::NotVector("matrix".to_owned())));
    let bad_value = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"many"]}]}}"#;
    assert!(matches!(parse_answer(bad_value), Err(AnswerError::NotApi(m)) if m.contains("many")));
}

#[test]
fn no_cellwatch_data_is_an_error() {
    let err = Report::build(hour(), END, &answers(&[])).unwrap_err();
    assert_eq!(err, NoData(hour()));
    assert!(err.to_string().starts_with("no cellwatch data over the last 1h"), "{err}");
    // Series of other families alone (latency without any opened) are no report either.
    let err = Report::build(
        hour(),
        END,
        &answers(&[(
            Reading::PairLatency,
            &[(&[("src_cell", "a"), ("dst_cell", "b"), ("le", "+Inf")], "3")],
        )]),
    );
    assert!(err.is_err());
    // The cell map alone is a report: cells that called nothing.
    let r = Report::build(hour(), END, &answers(&[(Reading::Cells, CELLS)])).unwrap();
    assert_eq!(r.cells.len(), 4);
    assert!(r.cells.iter().all(|c| c.connections == 0 && c.services.is_empty()));
    assert_eq!(r.cell("cell-1").unwrap().containment.inside.connections_share, None);
    assert!(r.services.is_empty() && r.outliers.is_empty() && r.notes.is_empty());
}

#[test]
fn a_service_with_two_dependent_cells() {
    let r = two_dependents();
    assert_eq!(r.range, "1h");
    assert_eq!(r.range_seconds, 3600);
    let names: Vec<&str> = r.cells.iter().map(|c| c.cell.as_str()).collect();
    assert_eq!(names, ["cell-1", "cell-2", "cell-3", "global"], "external is no cell");

    let db = r.service("orders-db").unwrap();
    assert_eq!((db.cell.as_deref(), db.global), (Some("global"), true));
    let dependents: Vec<&str> = db.dependents.iter().map(|d| d.cell.as_str()).collect();
    assert_eq!(dependents, ["cell-1", "cell-2"], "cell-3 opened nothing to it in the range");
    assert_eq!((db.connections, db.bytes), (1200, 8000));
    let c1 = &db.dependents[0].share;
    assert_eq!((c1.connections, c1.bytes), (800, 6000), "rounded: 799.6 is 800");
    assert!((c1.connections_share.unwrap() - 799.6 / 1199.6).abs() < 1e-12);
    assert_eq!(c1.bytes_share, Some(0.75));
    assert_eq!(db.dependents[1].share.bytes_share, Some(0.25));
    assert_eq!(db.external, None);

    let ledger = r.service("ledger").unwrap();
    assert!(ledger.dependents.is_empty() && ledger.connections == 0);

    let cell1 = r.cell("cell-1").unwrap();
    assert_eq!((cell1.connections, cell1.bytes), (2000, 8000));
    let k = &cell1.containment;
    assert_eq!(k.inside.connections_share, Some(0.5));
    assert_eq!(k.global.connections_share, Some(0.4));
    assert_eq!(k.other_cells.connections_share, Some(0.1));
    assert_eq!(k.external.connections_share, Some(0.0));
    assert_eq!(k.inside.bytes_share, Some(0.25));
    assert_eq!(k.global.bytes_share, Some(0.75));
    assert_eq!(k.other_cells.bytes_share, Some(0.0));
    let deps: Vec<(&str, Option<&str>)> =
        cell1.services.iter().map(|s| (s.service.as_str(), s.cell.as_deref())).collect();
    assert_eq!(deps, [("orders-db", Some("global"))]);
    let cells: Vec<(&str, bool)> =
        cell1.cells.iter().map(|c| (c.cell.as_str(), c.global)).collect();
    assert_eq!(cells, [("cell-2", false), ("global", true)]);

    let cell3 = r.cell("cell-3").unwrap();
    assert!(cell3.services.is_empty());
    assert_eq!(cell3.containment.inside.connections_share, Some(0.75));
    let g = r.cell("global").unwrap();
    assert!(g.global && g.connections == 0 && g.cells.is_empty());
    assert!(r.outliers.is_empty(), "{:?}", r.outliers);
}

#[test]
fn clients_in_no_cell_are_apart() {
    let r = Report::build(
        hour(),
        END,
        &answers(&[
            (Reading::Cells, CELLS),
            (Reading::Services, SERVICES),
            (
                Reading::ServiceOpened,
                &[
                    (&[("src_cell", "cell-1"), ("service", "orders-db")], "30"),
                    (&[("src_cell", "external"), ("service", "orders-db")], "10"),
                ],
            ),
            (Reading::PairOpened, &[(&[("src_cell", "cell-1"), ("dst_cell", "external")], "5")]),
        ]),
    )
    .unwrap();
    let db = r.service("orders-db").unwrap();
    assert_eq!(db.dependents.len(), 1);
    assert_eq!(db.dependents[0].share.connections_share, Some(0.75));
    let ext = db.external.as_ref().unwrap();
    assert_eq!((ext.connections, ext.connections_share), (10, Some(0.25)));
    assert!(r.cell(EXTERNAL).is_none());
    let cell1 = r.cell("cell-1").unwrap();
    assert_eq!(cell1.containment.external.connections_share, Some(1.0));
    assert_eq!(cell1.cells[0].cell, EXTERNAL);
}

#[test]
fn without_the_cell_map_global_cells_are_unknown() {
    let r = Report::build(
        hour(),
        END,
        &answers(&[(
            Reading::PairOpened,
            &[
                (&[("src_cell", "cell-1"), ("dst_cell", "global")], "10"),
                (&[("src_cell", "cell-1"), ("dst_cell", "cell-1")], "10"),
            ],
        )]),
    )
    .unwrap();
    assert_eq!(r.notes.len(), 1, "{:?}", r.notes);
    assert!(r.notes[0].contains("cellwatch_cell_info"));
    let k = &r.cell("cell-1").unwrap().containment;
    assert_eq!(
        (k.inside.connections_share, k.other_cells.connections_share),
        (Some(0.5), Some(0.5))
    );
}

#[test]
fn outliers_as_the_alert_finds_them() {
    // At least 0.2 connects a second over an hour: 720.
    let r = Report::build(
        hour(),
        END,
        &answers(&[
            (Reading::Cells, CELLS),
            (
                Reading::ServiceOpened,
                &[
                    // orders-db: cell-1 fails 30%, its peers 0%, 0% and 2%.
                    (&[("src_cell", "cell-1"), ("service", "orders-db")], "700"),
                    (&[("src_cell", "cell-2"), ("service", "orders-db")], "1000"),
                    (&[("src_cell", "cell-3"), ("service", "orders-db")], "1000"),
                    (&[("src_cell", "cell-4"), ("service", "orders-db")], "980"),
                    // ledger: everyone fails 30%.
                    (&[("src_cell", "cell-1"), ("service", "ledger")], "700"),
                    (&[("src_cell", "cell-2"), ("service", "ledger")], "700"),
                    (&[("src_cell", "cell-3"), ("service", "ledger")], "700"),
                    // cache: cell-1 fails half of too few connects.
                    (&[("src_cell", "cell-1"), ("service", "cache")], "100"),
                    (&[("src_cell", "cell-2"), ("service", "cache")], "1000"),
                    // queue: two cells, 40% and 0%.
                    (&[("src_cell", "cell-1"), ("service", "queue")], "600"),
                    (&[("src_cell", "cell-2"), ("service", "queue")], "1000"),
                    // Clients in no cell are never compared.
                    (&[("src_cell", "external"), ("service", "queue")], "1000"),
                ],
            ),
            (
                Reading::ServiceFailed,
                &[
                    (&[("src_cell", "cell-1"), ("service", "orders-db")], "300"),
                    (&[("src_cell", "cell-3"), ("service", "orders-db")], "0"),
                    (&[("src_cell", "cell-4"), ("service", "orders-db")], "20"),
                    (&[("src_cell", "cell-1"), ("service", "ledger")], "300"),
                    (&[("src_cell", "cell-2"), ("service", "ledger")], "300"),
                    (&[("src_cell", "cell-3"), ("service", "ledger")], "300"),
                    (&[("src_cell", "cell-1"), ("service", "cache")], "100"),
                    (&[("src_cell", "cell-1"), ("service", "queue")], "400"),
                ],
            ),
            (
                Reading::PairOpened,
                &[
                    (&[("src_cell", "cell-1"), ("dst_cell", "global")], "1000"),
                    (&[("src_cell", "cell-2"), ("dst_cell", "global")], "1000"),
                    (&[("src_cell", "cell-3"), ("dst_cell", "global")], "1000"),
                    (&[("src_cell", "cell-4"), ("dst_cell", "global")], "100"),
                ],
            ),
            (
                Reading::PairLatency,
                &[
                    // cell-1: every connect between 262 and 524 ms.
                    (&[("src_cell", "cell-1"), ("dst_cell", "global"), ("le", "0.001024")], "0"),
                    (&[("src_cell", "cell-1"), ("dst_cell", "global"), ("le", "0.262144")], "0"),
                    (&[("src_cell", "cell-1"), ("dst_cell", "global"), ("le", "0.524288")], "1000"),
                    (&[("src_cell", "cell-1"), ("dst_cell", "global"), ("le", "+Inf")], "1000"),
                    // cell-2, cell-3: under a millisecond.
                    (&[("src_cell", "cell-2"), ("dst_cell", "global"), ("le", "0.001024")], "1000"),
                    (&[("src_cell", "cell-2"), ("dst_cell", "global"), ("le", "+Inf")], "1000"),
                    (&[("src_cell", "cell-3"), ("dst_cell", "global"), ("le", "0.001024")], "1000"),
                    (&[("src_cell", "cell-3"), ("dst_cell", "global"), ("le", "+Inf")], "1000"),
                    // cell-4: as slow as cell-1, with too few connects.
                    (&[("src_cell", "cell-4"), ("dst_cell", "global"), ("le", "0.524288")], "100"),
                    (&[("src_cell", "cell-4"), ("dst_cell", "global"), ("le", "+Inf")], "100"),
                ],
            ),
        ]),
    )
    .unwrap();
    let found: Vec<(&str, &Destination, Signal, usize)> =
        r.outliers.iter().map(|o| (o.cell.as_str(), &o.destination, o.signal, o.peers)).collect();
    assert_eq!(
        found,
        [
            ("cell-1", &Destination::Service("orders-db".to_owned()), Signal::ConnectFailures, 3),
            ("cell-1", &Destination::Service("queue".to_owned()), Signal::ConnectFailures, 1),
            ("cell-1", &Destination::Cell("global".to_owned()), Signal::ConnectP99, 2),
        ]
    );
    let db = &r.outliers[0];
    assert_eq!((db.value, db.peer_median, db.connects), (0.3, 0.0, 1000));
    assert_eq!((r.outliers[1].value, r.outliers[1].peer_median), (0.4, 0.0));
    // histogram_quantile's figure, as the promtool test's alert says: 521.7ms.
    let p99 = &r.outliers[2];
    assert!((p99.value - 0.521_666_56).abs() < 1e-9, "{}", p99.value);
    assert!((p99.peer_median - 0.001_013_76).abs() < 1e-9, "{}", p99.peer_median);
    assert_eq!(
        p99.line(),
        "cell-1 -> cell global: connect p99 522ms; the other 2 cells' median 1.01ms (1000 connects)"
    );
    assert_eq!(
        r.outliers[1].line(),
        "cell-1 -> service queue: 40.0% of connects failed; the other cell's 0.0% (1000 connects)"
    );
}

#[test]
fn the_median_is_promql_s() {
    assert_eq!(median(&mut []), None);
    assert_eq!(median(&mut [3.0]), Some(3.0));
    assert_eq!(median(&mut [4.0, 1.0]), Some(2.5));
    assert_eq!(median(&mut [9.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(&mut [9.0, 1.0, 2.0, 3.0]), Some(2.5));
}

#[test]
fn the_text_for_people() {
    let text = two_dependents().text("http://prometheus:9090");
    let expected = "\
cellwatch report  http://prometheus:9090  the last 1h  cells: 4 (1 global)  services: 2

BLAST RADIUS of each service: the cells that called it, and their share of its connections and bytes
  ledger (in global, a global cell): no caller
  orders-db (in global, a global cell): 2 cells, 1200 connections, 7.8 KiB
    CELL    CONNECTIONS  SHARE    BYTES  SHARE
    cell-1          800  66.7%  5.9 KiB  75.0%
    cell-2          400  33.3%  2.0 KiB  25.0%

DEPENDENCIES of each cell: the services and the other cells its clients called
  CELL    SERVICES               GLOBAL CELLS  OTHER CELLS
  cell-1  orders-db (in global)  global        cell-2
  cell-2  orders-db (in global)  global        -
  cell-3  -                      global        -
  global  -                      -             -

CONTAINMENT of each cell: where its clients' connections and bytes went
  CELL    CONNECTIONS  INSIDE  GLOBAL  OTHER CELLS  EXTERNAL    BYTES  INSIDE  GLOBAL  OTHER CELLS  EXTERNAL
  cell-1         2000   50.0%   40.0%        10.0%      0.0%  7.8 KiB   25.0%   75.0%         0.0%      0.0%
  cell-2          800   50.0%   50.0%         0.0%      0.0%      0 B       -       -            -         -
  cell-3          400   75.0%   25.0%         0.0%      0.0%      0 B       -       -            -         -
  global            0       -       -            -         -      0 B       -       -            -         -

OUTLIERS: cells more than 3x the median of the other cells calling the same destination
  (failures above 5.0%, connect p99 above 50.0ms; cells with at least 0.2 connects/s to it)
  (none)

TEMPORARY ALLOW RULES in force: each one's deadline, and what its flow carried over the last 1h
  FROM    TO      DEADLINE               LEFT  CONNECTIONS  BYTES  REASON
  cell-1  cell-2  2025-10-11T11:43:20Z  2d 2h          150    0 B  orders migration
";
    assert_eq!(text, expected, "got:\n{text}");
}

#[test]
fn the_json_for_scripts() {
    let r = two_dependents();
    let v: Value = serde_json::from_str(&r.json().unwrap()).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["cells", "notes", "outliers", "range", "range_seconds", "services", "temporary_rules"]
    );
    assert_eq!(
        v["temporary_rules"],
        json!([{
            "from": "cell-1",
            "to": "cell-2",
            "reason": "orders migration",
            "expires": "2025-10-11T11:43:20Z",
            "expires_in_seconds": 183_000,
            "connections": 150,
            "bytes": 0
        }])
    );
    let db =
        v["services"].as_array().unwrap().iter().find(|s| s["service"] == "orders-db").unwrap();
    assert_eq!(db["cell"], "global");
    assert_eq!(db["global"], true);
    assert_eq!(db["external"], Value::Null);
    let dependents: Vec<&str> =
        db["dependents"].as_array().unwrap().iter().map(|d| d["cell"].as_str().unwrap()).collect();
    assert_eq!(dependents, ["cell-1", "cell-2"]);
    assert_eq!(db["dependents"][1]["connections"], 400);
    assert_eq!(db["dependents"][1]["bytes_share"], 0.25);
    let cell1 = &v["cells"][0];
    assert_eq!(cell1["cell"], "cell-1");
    assert_eq!(cell1["containment"]["inside"]["connections_share"], 0.5);
    assert_eq!(cell1["services"][0]["service"], "orders-db");
    assert_eq!(
        cell1["cells"][1],
        json!({"cell": "global", "global": true, "connections": 800, "bytes": 6000, "violations": 0})
    );
    assert_eq!(v["cells"][3]["containment"]["inside"]["connections_share"], Value::Null);
    let o = Outlier {
        cell: "cell-1".to_owned(),
        destination: Destination::Service("orders-db".to_owned()),
        signal: Signal::ConnectP99,
        value: 0.5,
        peer_median: 0.001,
        peers: 3,
        connects: 1000,
    };
    assert_eq!(
        serde_json::to_value(&o).unwrap(),
        json!({
            "cell": "cell-1",
            "destination": {"kind": "service", "name": "orders-db"},
            "signal": "connect_p99",
            "value": 0.5,
            "peer_median": 0.001,
            "peers": 3,
            "connects": 1000
        })
    );
}

#[test]
fn the_dot_graph() {
    let dot = two_dependents().dot();
    assert!(dot.starts_with("digraph cellwatch {\n") && dot.ends_with("}\n"), "{dot}");
    // The services in the global cell's box, with the global cell.
    let cluster = dot.split("subgraph \"cluster:global\" {").nth(1).expect("global's box");
    let cluster = cluster.split("\n  }").next().unwrap();
    assert!(cluster.contains("\"service:orders-db\" [label=\"orders-db\", shape=cylinder];"));
    assert!(cluster.contains("\"service:ledger\""));
    assert!(cluster.contains("\"cell:global\" [label=\"global\\n(global)\""));
    assert!(dot.contains("\"cell:cell-1\" [label=\"cell-1\\n50.0% inside\", shape=box"));
    // Edges: cell -> service and cell -> cell, the busiest the widest.
    let edges: Vec<&str> = dot.lines().filter(|l| l.contains(" -> ")).collect();
    assert_eq!(edges.len(), 6, "{dot}");
    assert!(dot.contains(
        "  \"cell:cell-1\" -> \"cell:global\" [label=\"800 conn\\n5.9 KiB\", penwidth=5.00, weight=11];"
    ));
    assert!(dot.contains(
        "  \"cell:cell-2\" -> \"service:orders-db\" [label=\"400 conn\\n2.0 KiB\", penwidth=3.00, weight=6];"
    ));
    assert!(!dot.contains("\"cell:cell-3\" -> \"service:orders-db\""), "no traffic, no edge");
    assert!(!dot.contains("\"cell:cell-1\" -> \"cell:cell-1\""), "in-cell traffic is in the node");
    assert!(!dot.contains("cell:external"));
}

#[test]
fn dot_quotes_what_it_must() {
    assert_eq!(render::quote("orders-db"), "\"orders-db\"");
    assert_eq!(render::quote("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
}

/// Graphviz draws the graph: every node and edge is in the SVG.
#[test]
fn graphviz_renders_the_dot_graph() {
    let mut r = two_dependents();
    // An outlier and a name dot would choke on unquoted.
    r.outliers.push(Outlier {
        cell: "cell-2".to_owned(),
        destination: Destination::Service("orders-db".to_owned()),
        signal: Signal::ConnectFailures,
        value: 0.4,
        peer_median: 0.0,
        peers: 1,
        connects: 900,
    });
    r.services[0].service = "odd \"name\" \\ here".to_owned();
    let dot = r.dot();
    let svg = render_svg(&dot);
    assert!(svg.contains("<svg"), "{svg}");
    let titles = svg.matches("<title>").count();
    let nodes = dot.lines().filter(|l| l.contains("shape=")).count();
    let edges = dot.lines().filter(|l| l.contains(" -> ")).count();
    // One title per node, per edge, per cluster and for the graph.
    let clusters = dot.matches("subgraph ").count();
    assert_eq!(titles, nodes + edges + clusters + 1, "{svg}");
    assert_eq!(svg.matches("class=\"edge\"").count(), edges);
    // Graphviz writes `-` as `&#45;` in SVG text.
    let drawn = svg.replace("&#45;", "-");
    for name in ["cell-1", "cell-2", "cell-3", "orders-db", "odd &quot;name&quot; \\ here"] {
        assert!(drawn.contains(&format!(">{name}</text>")), "{name} is not drawn:\n{svg}");
    }
    assert!(svg.contains("outlier: 40.0% failed"), "{svg}");
    assert!(svg.contains("stroke=\"red\""), "the outlier's edge is red:\n{svg}");
}

fn render_svg(dot: &str) -> String {
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "graphviz's `dot` is needed (apt-get install graphviz, or cargo xtask setup): {e}"
            )
        });
    child.stdin.take().unwrap().write_all(dot.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "dot refused the graph ({}): {}\n{dot}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const METRICS: &str = r#"
cellwatch_cell_info{cell="global",global="true"} 1
cellwatch_service_info{service="ledger",cell="global"} 1
cellwatch_connections_opened_total{src_cell="cell-1",dst_cell="cell-2",direction="egress",verdict="allowed"} 3
cellwatch_connections_opened_total{src_cell="cell-1",dst_cell="cell-2",direction="egress",verdict="violation"} 2
cellwatch_connections_opened_total{src_cell="cell-1",dst_cell="cell-2",direction="ingress",verdict="allowed"} 5
cellwatch_connections_opened_total{src_cell="external",dst_cell="cell-2",direction="ingress",verdict="allowed"} 4
cellwatch_connections_failed_total{src_cell="cell-1",dst_cell="cell-2",reason="refused"} 1
cellwatch_connections_failed_total{src_cell="cell-1",dst_cell="cell-2",reason="reset"} 2
cellwatch_bytes_sent_total{src_cell="cell-1",dst_cell="cell-2",direction="egress"} 10
cellwatch_bytes_received_total{src_cell="cell-1",dst_cell="cell-2",direction="egress"} 20
cellwatch_bytes_sent_total{src_cell="cell-1",dst_cell="cell-2",direction="ingress"} 20
cellwatch_bytes_sent_total{src_cell="external",dst_cell="cell-2",direction="ingress"} 7
cellwatch_bytes_received_total{src_cell="external",dst_cell="cell-2",direction="ingress"} 9
cellwatch_connect_latency_seconds_bucket{src_cell="cell-1",dst_cell="cell-2",le="0.001"} 2
cellwatch_connect_latency_seconds_bucket{src_cell="cell-1",dst_cell="cell-2",le="+Inf"} 3
cellwatch_service_connections_opened_total{src_cell="cell-1",service="ledger",direction="egress",verdict="allowed"} 6
cellwatch_service_connections_opened_total{src_cell="cell-1",service="ledger",direction="ingress",verdict="allowed"} 6
cellwatch_service_connections_opened_total{src_cell="cell-2",service="ledger",direction="egress",verdict="allowed"} 2
cellwatch_allow_rule_expiry_timestamp_seconds{from="cell-1",to="cell-2",reason="migration"} 1760086400
cellwatch_boundary_violations_total{src_cell="cell-1",dst_cell="cell-2",direction="egress"} 4
cellwatch_boundary_violations_total{src_cell="cell-1",dst_cell="cell-2",direction="ingress"} 4
"#;

/// The value of `reading`'s series with these labels.
fn value(answers: &Answers, reading: Reading, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> =
        labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    answers.get(&reading)?.iter().find(|s| s.labels == want).map(|s| s.value)
}

#[test]
fn one_metrics_read_as_each_query_sums_it() {
    let a = answers_of(&agent_core::promtext::parse(METRICS));
    let pair = |src| [("src_cell", src), ("dst_cell", "cell-2")];
    assert_eq!(value(&a, Reading::Cells, &[("cell", "global"), ("global", "true")]), Some(1.0));
    // Each connection once: the server's side only for the external client.
    assert_eq!(value(&a, Reading::PairOpened, &pair("cell-1")), Some(5.0));
    assert_eq!(value(&a, Reading::PairOpened, &pair("external")), Some(4.0));
    assert_eq!(value(&a, Reading::PairFailed, &pair("cell-1")), Some(3.0));
    // The client's bytes: an external client's sent are its server's received.
    assert_eq!(value(&a, Reading::PairSent, &pair("cell-1")), Some(10.0));
    assert_eq!(value(&a, Reading::PairReceived, &pair("cell-1")), Some(20.0));
    assert_eq!(value(&a, Reading::PairSent, &pair("external")), Some(9.0));
    assert_eq!(value(&a, Reading::PairReceived, &pair("external")), Some(7.0));
    let le = [("src_cell", "cell-1"), ("dst_cell", "cell-2"), ("le", "+Inf")];
    assert_eq!(value(&a, Reading::PairLatency, &le), Some(3.0));
    assert!(!a.contains_key(&Reading::ServiceSent));
    // The allowed ones only, each once; a rule's deadline as it is.
    assert_eq!(value(&a, Reading::PairAllowed, &pair("cell-1")), Some(3.0));
    assert_eq!(value(&a, Reading::PairAllowed, &pair("external")), Some(4.0));
    let rule = [("from", "cell-1"), ("to", "cell-2"), ("reason", "migration")];
    assert_eq!(value(&a, Reading::AllowRules, &rule), Some(1_760_086_400.0));
    // Violations, each once: the client's side.
    assert_eq!(value(&a, Reading::PairViolations, &pair("cell-1")), Some(4.0));
    // The blast radius from them is the report's.
    let radii = blast_radii(&a);
    let report = Report::build(hour(), END, &a).unwrap();
    assert_eq!(radii, report.services);
    let ledger = &radii[0];
    assert_eq!((ledger.service.as_str(), ledger.connections), ("ledger", 8));
    let callers: Vec<_> =
        ledger.dependents.iter().map(|d| (d.cell.as_str(), d.share.connections)).collect();
    assert_eq!(callers, [("cell-1", 6), ("cell-2", 2)]);
}

/// The rules whose deadline is after the end of the range, soonest first, each with the
/// allowed connections and the bytes of its flow; the others are left out.
#[test]
fn temporary_rules_in_force() {
    const RULES: &[(&[(&str, &str)], &str)] = &[
        (&[("from", "cell-1"), ("to", "cell-2"), ("reason", "orders migration")], "1760183000.7"),
        (&[("from", "cell-1"), ("to", "cell-2"), ("reason", "")], "1760000060"),
        (&[("from", "cell-2"), ("to", "cell-1"), ("reason", "expired")], "1759999999"),
        (&[("from", "cell-2"), ("to", "cell-3"), ("reason", "at the end")], "1760000000"),
        (&[("from", "cell-3"), ("to", "cell-1"), ("reason", "no deadline")], "NaN"),
    ];
    let pair = [("src_cell", "cell-1"), ("dst_cell", "cell-2")];
    let r = Report::build(
        hour(),
        END,
        &answers(&[
            (Reading::Cells, CELLS),
            (Reading::PairOpened, &[(&pair, "300")]),
            (Reading::PairAllowed, &[(&pair, "249.6")]),
            (Reading::PairSent, &[(&pair, "1000")]),
            (Reading::PairReceived, &[(&pair, "3000")]),
            (Reading::AllowRules, RULES),
        ]),
    )
    .unwrap();
    let got: Vec<(&str, &str, &str, u64, u64, u64)> = r
        .temporary_rules
        .iter()
        .map(|t| {
            let (from, to, reason) = (t.from.as_str(), t.to.as_str(), t.reason.as_str());
            (from, to, reason, t.expires_in_seconds, t.connections, t.bytes)
        })
        .collect();
    assert_eq!(
        got,
        [
            ("cell-1", "cell-2", "", 60, 250, 4000),
            ("cell-1", "cell-2", "orders migration", 183_000, 250, 4000)
        ]
    );
    assert_eq!(r.temporary_rules[1].expires, "2025-10-11T11:43:20Z");
    let text = r.text("http://prometheus:9090");
    let section = text.split("TEMPORARY ALLOW RULES").nth(1).unwrap();
    assert!(
        section
            .contains("  cell-1  cell-2  2025-10-09T08:54:20Z     1m          250  3.9 KiB  -\n"),
        "{text}"
    );
    // None in force: a line says so.
    let none = two_dependents_without_rules().text("p");
    assert!(none.ends_with("(none: no allow rule with an `until:` still ahead)\n"), "{none}");
    // The dot graph is the dependencies' alone.
    assert_eq!(two_dependents().dot(), two_dependents_without_rules().dot());
}

/// Each pair's boundary violations, read as each connection once, make it a leak in the
/// model; a pair with violations alone (refused or denied connects) is a dependency too.
#[test]
fn violations_mark_the_leaking_pairs() {
    let q = Reading::PairViolations.query(hour());
    assert_eq!(
        q,
        Reading::PairOpened
            .query(hour())
            .replace("cellwatch_connections_opened_total", "cellwatch_boundary_violations_total")
    );
    let r = Report::build(
        hour(),
        END,
        &answers(&[
            (Reading::Cells, CELLS),
            (
                Reading::PairOpened,
                &[
                    (&[("src_cell", "cell-3"), ("dst_cell", "cell-2")], "14"),
                    (&[("src_cell", "cell-3"), ("dst_cell", "global")], "10"),
                ],
            ),
            (
                Reading::PairViolations,
                &[
                    (&[("src_cell", "cell-3"), ("dst_cell", "cell-2")], "14"),
                    (&[("src_cell", "cell-1"), ("dst_cell", "cell-3")], "5.6"),
                ],
            ),
        ]),
    )
    .unwrap();
    let deps = |c: &str| -> Vec<(String, u64, u64)> {
        r.cell(c)
            .unwrap()
            .cells
            .iter()
            .map(|d| (d.cell.clone(), d.connections, d.violations))
            .collect()
    };
    assert_eq!(deps("cell-3"), [("cell-2".to_owned(), 14, 14), ("global".to_owned(), 10, 0)]);
    assert_eq!(deps("cell-1"), [("cell-3".to_owned(), 0, 6)]);
    let v: Value = serde_json::from_str(&r.json().unwrap()).unwrap();
    assert_eq!(
        v["cells"][0]["cells"][0],
        json!({"cell": "cell-3", "global": false, "connections": 0, "bytes": 0, "violations": 6})
    );
}

/// [`two_dependents`] with no rule in force.
fn two_dependents_without_rules() -> Report {
    let mut r = two_dependents();
    r.temporary_rules.clear();
    r
}

/// A native histogram series: labels, count, buckets as (lower, upper, count).
type NativeSeries<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a [(&'a str, &'a str, &'a str)]);

/// An instant-vector answer of native histograms, as Prometheus writes them: per series,
/// its labels, count and buckets (`[boundaries, lower, upper, count]`).
fn native_answer(series: &[NativeSeries<'_>]) -> String {
    let result: Vec<Value> = series
        .iter()
        .map(|(labels, count, buckets)| {
            let metric: serde_json::Map<String, Value> =
                labels.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
            let buckets: Vec<Value> = buckets
                .iter()
                .map(|(lower, upper, n)| {
                    let rule = if lower.starts_with('-') { 3 } else { 0 };
                    json!([rule, lower, upper, n])
                })
                .collect();
            let h = json!({ "count": count, "sum": "1", "buckets": buckets });
            json!({ "metric": metric, "histogram": [1_760_000_000.123, h] })
        })
        .collect();
    json!({ "status": "success", "data": { "resultType": "vector", "result": result } }).to_string()
}

#[test]
fn native_histograms_are_read_as_cumulative_buckets() {
    let series = parse_answer(&native_answer(&[(
        &[("src_cell", "a"), ("dst_cell", "b")],
        "100",
        // The zero bucket, then two buckets with a gap between them (sparse).
        &[("-1e-12", "1e-12", "10"), ("0.25", "0.5", "60"), ("1", "2", "30")],
    )]))
    .unwrap();
    let read: Vec<(&str, f64)> = series.iter().map(|s| (s.label("le"), s.value)).collect();
    assert_eq!(
        read,
        [
            ("0.000000000001", 10.0),
            ("0.25", 10.0),
            ("0.5", 70.0),
            ("1", 70.0),
            ("2", 100.0),
            ("+Inf", 100.0)
        ]
    );
    assert!(series.iter().all(|s| s.label("dst_cell") == "b"));
    let no_value =
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{}}]}}"#;
    assert!(matches!(parse_answer(no_value), Err(AnswerError::NotApi(_))));
}

#[test]
fn a_latency_outlier_from_native_histograms_read_before_classic_buckets() {
    let opened: Vec<(&[(&str, &str)], &str)> = vec![
        (&[("src_cell", "cell-1"), ("dst_cell", "global")], "1000"),
        (&[("src_cell", "cell-2"), ("dst_cell", "global")], "1000"),
        (&[("src_cell", "cell-3"), ("dst_cell", "global")], "1000"),
    ];
    let mut a = answers(&[
        (Reading::Cells, CELLS),
        (Reading::PairOpened, &opened),
        // cell-3 also has classic buckets (a store part-way to native histograms), which
        // say seconds: its native histogram is read, as the recording rules read it, and
        // the two are not added.
        (
            Reading::PairLatency,
            &[
                (&[("src_cell", "cell-3"), ("dst_cell", "global"), ("le", "2.097152")], "1000"),
                (&[("src_cell", "cell-3"), ("dst_cell", "global"), ("le", "+Inf")], "1000"),
            ],
        ),
    ]);
    let native = native_answer(&[
        // cell-1: every connect between 250 and 500 ms.
        (&[("src_cell", "cell-1"), ("dst_cell", "global")], "1000", &[("0.25", "0.5", "1000")]),
        // cell-2: under a millisecond.
        (
            &[("src_cell", "cell-2"), ("dst_cell", "global")],
            "1000",
            &[("0.00048828125", "0.0009765625", "1000")],
        ),
        // cell-3: as cell-2.
        (
            &[("src_cell", "cell-3"), ("dst_cell", "global")],
            "1000",
            &[("0.00048828125", "0.0009765625", "1000")],
        ),
    ]);
    a.insert(Reading::PairLatencyNative, parse_answer(&native).unwrap());
    let r = Report::build(hour(), END, &a).unwrap();
    let p99: Vec<(&str, f64, f64)> = r
        .outliers
        .iter()
        .filter(|o| o.signal == Signal::ConnectP99)
        .map(|o| (o.cell.as_str(), o.value, o.peer_median))
        .collect();
    // Interpolated within the native bucket: 250 ms + 250 ms * 990 / 1000. The peers,
    // cell-2 and cell-3 natively: 0.49 ms + 0.49 ms * 0.99.
    let peers = 0.000_488_281_25 * 1.99;
    assert_eq!(p99.len(), 1, "{:?}", r.outliers);
    assert_eq!(p99[0].0, "cell-1");
    assert!((p99[0].1 - 0.4975).abs() < 1e-9, "{p99:?}");
    assert!((p99[0].2 - peers).abs() < 1e-9, "{p99:?} against {peers}");
}

/// The catalog of [`udp_services`]: the resolver `dns` and `orders-db` in global.
const UDP_SERVICES: &[(&[(&str, &str)], &str)] = &[
    (&[("service", "dns"), ("cell", "global")], "1"),
    (&[("service", "orders-db"), ("cell", "global")], "1"),
];

/// The resolver `dns` (a UDP service in global) answers cell-1's 300 flows and cell-2's
/// 100 (no connection, and no bytes: the service families of bytes are TCP's); cell-1
/// calls `orders-db` over TCP. The cells call the global cell over TCP only.
fn udp_services() -> Report {
    Report::build(
        hour(),
        END,
        &answers(&[
            (Reading::Cells, CELLS),
            (Reading::Services, UDP_SERVICES),
            (
                Reading::ServiceFlowsOpened,
                &[
                    (&[("src_cell", "cell-1"), ("service", "dns")], "299.8"),
                    (&[("src_cell", "cell-2"), ("service", "dns")], "100"),
                    (&[("src_cell", "cell-3"), ("service", "dns")], "0"),
                ],
            ),
            (
                Reading::ServiceOpened,
                &[(&[("src_cell", "cell-1"), ("service", "orders-db")], "50")],
            ),
            (Reading::PairOpened, &[(&[("src_cell", "cell-1"), ("dst_cell", "global")], "50")]),
        ]),
    )
    .expect("a report")
}

#[test]
fn udp_flows_are_read_as_the_connections_are() {
    let tcp = Reading::ServiceOpened.query(hour());
    assert_eq!(
        Reading::ServiceFlowsOpened.query(hour()),
        tcp.replace(
            "cellwatch_service_connections_opened_total",
            "cellwatch_udp_service_flows_opened_total"
        )
    );
    // UDP flows alone are a report.
    let only = answers(&[(
        Reading::ServiceFlowsOpened,
        &[(&[("src_cell", "cell-1"), ("service", "dns")], "3")],
    )]);
    let r = Report::build(hour(), END, &only).expect("a report of UDP flows");
    assert_eq!(r.service("dns").unwrap().dependents[0].cell, "cell-1");
    assert!(NoData(hour()).to_string().contains("cellwatch_udp_service_flows_opened_total"));
}

/// A UDP-only service has its blast radius, in every output, its connections its flows.
#[test]
fn a_udp_service_has_its_blast_radius() {
    let r = udp_services();
    let dns = r.service("dns").unwrap();
    assert_eq!((dns.cell.as_deref(), dns.global), (Some("global"), true));
    let dependents: Vec<(&str, u64)> =
        dns.dependents.iter().map(|d| (d.cell.as_str(), d.share.connections)).collect();
    assert_eq!(dependents, [("cell-1", 300), ("cell-2", 100)], "cell-3 opened no flow");
    assert_eq!((dns.connections, dns.flows, dns.bytes), (400, 400, 0));
    assert!((dns.dependents[0].share.connections_share.unwrap() - 299.8 / 399.8).abs() < 1e-12);
    assert_eq!(dns.dependents[1].share.bytes_share, None);
    assert_eq!(dns.calls(), Calls::Flows);
    let db = r.service("orders-db").unwrap();
    assert_eq!((db.connections, db.flows, db.calls()), (50, 0, Calls::Connections));
    // A dependency of each calling cell, as the TCP service is.
    let deps = |c: &str| -> Vec<(String, u64, u64)> {
        let services = &r.cell(c).unwrap().services;
        services.iter().map(|s| (s.service.clone(), s.connections, s.flows)).collect()
    };
    assert_eq!(deps("cell-1"), [("dns".to_owned(), 300, 300), ("orders-db".to_owned(), 50, 0)]);
    assert_eq!(deps("cell-2"), [("dns".to_owned(), 100, 100)]);
    assert!(deps("cell-3").is_empty());
    // UDP flows are no connects: no outlier among them.
    assert!(r.outliers.is_empty(), "{:?}", r.outliers);

    let text = r.text("p");
    let blast = text.split("\nDEPENDENCIES").next().unwrap();
    assert!(
        blast.contains(
            "  dns (in global, a global cell): 2 cells, 400 UDP flows, 0 B\n\
             \x20   CELL    FLOWS  SHARE  BYTES  SHARE\n\
             \x20   cell-1    300  75.0%    0 B      -\n\
             \x20   cell-2    100  25.0%    0 B      -\n"
        ),
        "{text}"
    );
    assert!(
        blast.contains("  orders-db (in global, a global cell): 1 cell, 50 connections, 0 B\n")
    );
    // The pairs are TCP's: cell-2's flows to the service in global make no pair.
    assert!(text.contains("\n  cell-2  dns (in global)                         -             -\n"));

    let v: Value = serde_json::from_str(&r.json().unwrap()).unwrap();
    let dns = v["services"].as_array().unwrap().iter().find(|s| s["service"] == "dns").unwrap();
    assert_eq!((&dns["connections"], &dns["flows"]), (&json!(400), &json!(400)));
    assert_eq!(dns["dependents"][1]["cell"], "cell-2");
    assert_eq!(dns["dependents"][1]["connections"], 100);
    assert_eq!(
        v["cells"][1]["services"][0],
        json!({"service": "dns", "cell": "global", "connections": 100, "flows": 100, "bytes": 0})
    );

    let dot = r.dot();
    assert!(dot.contains("\"cell:cell-2\" -> \"service:dns\" [label=\"100 flows\\n0 B\""));
    assert!(dot.contains("\"cell:cell-1\" -> \"service:orders-db\" [label=\"50 conn\\n0 B\""));
    let svg = render_svg(&dot);
    assert!(svg.replace("&#45;", "-").contains(">dns</text>"), "{svg}");

    let html = r.html("p");
    let node = "data-name=\"dns\" data-cell=\"global\" data-global=\"true\" \
                data-connections=\"400\" data-flows=\"400\" data-bytes=\"0\">";
    assert!(html.contains(node), "{html}");
    assert!(html.contains(">100 flows · 25.0%</text>"), "{html}");
    assert!(html.contains("<th class=\"num\">Connections / UDP flows</th>"), "{html}");
}

/// A service that both TCP connections and UDP flows reach: its blast radius is the cells
/// that opened either, each with both counted, and the outliers still compare connects.
#[test]
fn connections_and_flows_to_one_service_are_added() {
    let r = Report::build(
        hour(),
        END,
        &answers(&[
            (Reading::Cells, CELLS),
            (Reading::Services, UDP_SERVICES),
            (
                Reading::ServiceOpened,
                &[
                    (&[("src_cell", "cell-1"), ("service", "dns")], "200"),
                    (&[("src_cell", "cell-3"), ("service", "dns")], "100"),
                ],
            ),
            (
                Reading::ServiceFlowsOpened,
                &[
                    (&[("src_cell", "cell-1"), ("service", "dns")], "100"),
                    (&[("src_cell", "cell-2"), ("service", "dns")], "500"),
                    (&[("src_cell", "external"), ("service", "dns")], "100"),
                ],
            ),
            (Reading::ServiceFailed, &[(&[("src_cell", "cell-1"), ("service", "dns")], "50")]),
        ]),
    )
    .unwrap();
    let dns = r.service("dns").unwrap();
    let dependents: Vec<(&str, u64, Option<f64>)> = dns
        .dependents
        .iter()
        .map(|d| (d.cell.as_str(), d.share.connections, d.share.connections_share))
        .collect();
    assert_eq!(
        dependents,
        [("cell-2", 500, Some(0.5)), ("cell-1", 300, Some(0.3)), ("cell-3", 100, Some(0.1))],
        "TCP only, UDP only, and both"
    );
    let ext = dns.external.as_ref().unwrap();
    assert_eq!((ext.connections, ext.connections_share), (100, Some(0.1)));
    assert_eq!((dns.connections, dns.flows, dns.calls()), (1000, 700, Calls::Both));
    let cell1 = &r.cell("cell-1").unwrap().services[0];
    assert_eq!((cell1.connections, cell1.flows, cell1.calls()), (300, 100, Calls::Both));
    assert!(r.cell("cell-2").unwrap().services[0].calls() == Calls::Flows);
    let text = r.text("p");
    assert!(
        text.contains(
            "  dns (in global, a global cell): 3 cells, 1000 connections and UDP flows, 0 B\n\
             \x20   CELL        CONNS+FLOWS  SHARE  BYTES  SHARE\n\
             \x20   cell-2              500  50.0%    0 B      -\n\
             \x20   cell-1              300  30.0%    0 B      -\n\
             \x20   cell-3              100  10.0%    0 B      -\n\
             \x20   (external)          100  10.0%    0 B      -\n"
        ),
        "{text}"
    );
    assert!(r.dot().contains("\"cell:cell-1\" -> \"service:dns\" [label=\"300 conn+flows\\n0 B\""));
    // cell-1's connects are its 200 opened and 50 failed: its flows are none of them.
    let a = answers(&[
        (Reading::ServiceOpened, &[(&[("src_cell", "cell-1"), ("service", "dns")], "200")]),
        (Reading::ServiceFlowsOpened, &[(&[("src_cell", "cell-1"), ("service", "dns")], "100")]),
        (Reading::ServiceFailed, &[(&[("src_cell", "cell-1"), ("service", "dns")], "50")]),
    ]);
    let t = flows(&a, &super::SERVICES);
    let traffic = &t[&("cell-1".to_owned(), "dns".to_owned())];
    assert_eq!((traffic.calls(), traffic.connects()), (300.0, 250.0));
}

/// One `/metrics` with a UDP service: its flows each once (the client's side, and the
/// server's for a client in no cell), and the demo's blast radius has it.
#[test]
fn one_metrics_with_a_udp_service() {
    const UDP: &str = r#"
cellwatch_cell_info{cell="global",global="true"} 1
cellwatch_service_info{service="dns",cell="global"} 1
cellwatch_udp_service_flows_opened_total{src_cell="cell-a",service="dns",direction="egress",verdict="allowed"} 6
cellwatch_udp_service_flows_opened_total{src_cell="cell-a",service="dns",direction="egress",verdict="violation"} 1
cellwatch_udp_service_flows_opened_total{src_cell="cell-a",service="dns",direction="ingress",verdict="allowed"} 7
cellwatch_udp_service_flows_opened_total{src_cell="cell-b",service="dns",direction="egress",verdict="allowed"} 3
cellwatch_udp_service_flows_opened_total{src_cell="cell-b",service="dns",direction="ingress",verdict="allowed"} 3
cellwatch_udp_service_flows_opened_total{src_cell="external",service="dns",direction="ingress",verdict="allowed"} 4
cellwatch_dns_queries_total{src_cell="cell-a",service="dns",rcode="NOERROR"} 40
"#;
    let a = answers_of(&agent_core::promtext::parse(UDP));
    let svc = |src| [("src_cell", src), ("service", "dns")];
    assert_eq!(value(&a, Reading::ServiceFlowsOpened, &svc("cell-a")), Some(7.0));
    assert_eq!(value(&a, Reading::ServiceFlowsOpened, &svc("cell-b")), Some(3.0));
    assert_eq!(value(&a, Reading::ServiceFlowsOpened, &svc("external")), Some(4.0));
    assert!(!a.contains_key(&Reading::ServiceOpened), "no TCP: {a:?}");
    let radii = blast_radii(&a);
    assert_eq!(radii, Report::build(hour(), END, &a).unwrap().services);
    let dns = &radii[0];
    assert_eq!((dns.service.as_str(), dns.connections, dns.flows), ("dns", 14, 14));
    let callers: Vec<_> =
        dns.dependents.iter().map(|d| (d.cell.as_str(), d.share.connections)).collect();
    assert_eq!(callers, [("cell-a", 7), ("cell-b", 3)]);
    assert_eq!(dns.external.as_ref().map(|e| e.connections), Some(4));
}
