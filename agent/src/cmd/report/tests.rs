//! `report` against a fake Prometheus on loopback (`prometheus_api::fake`) that answers
//! each family's query with a canned answer of the query API: the queries reach it intact
//! and at one time, and each way Prometheus can fail is one sentence.
use std::collections::BTreeMap;

use agent_view::report::{Range, Reading};
use serde_json::{Value, json};

use super::*;
use crate::cmd::prometheus_api::fake::{Fake, Handler, dead_url, unexpected, vector};

fn hour() -> Range {
    Range::parse("1h").unwrap()
}

/// Answers each family's query for the last hour; anything else is a bad query.
fn canned() -> Handler {
    let by_query: BTreeMap<String, String> = Reading::ALL
        .iter()
        .map(|f| {
            let body = match f {
                Reading::Cells => vector(&[
                    (&[("cell", "global"), ("global", "true")], "1"),
                    (&[("cell", "cell-1"), ("global", "false")], "1"),
                    (&[("cell", "cell-2"), ("global", "false")], "1"),
                    (&[("cell", "cell-3"), ("global", "false")], "1"),
                ]),
                Reading::Services => {
                    vector(&[(&[("service", "orders-db"), ("cell", "global")], "1")])
                }
                Reading::ServiceOpened => vector(&[
                    (&[("src_cell", "cell-1"), ("service", "orders-db")], "30"),
                    (&[("src_cell", "cell-2"), ("service", "orders-db")], "10"),
                ]),
                Reading::PairOpened => vector(&[
                    (&[("src_cell", "cell-1"), ("dst_cell", "global")], "30"),
                    (&[("src_cell", "cell-2"), ("dst_cell", "global")], "10"),
                    (&[("src_cell", "cell-3"), ("dst_cell", "cell-3")], "10"),
                ]),
                // A temporary rule in force (until 2096) and one long expired.
                Reading::AllowRules => vector(&[
                    (&[("from", "cell-1"), ("to", "global"), ("reason", "move")], "4000000000"),
                    (&[("from", "cell-2"), ("to", "global"), ("reason", "old")], "1000"),
                ]),
                Reading::PairAllowed => {
                    vector(&[(&[("src_cell", "cell-1"), ("dst_cell", "global")], "25")])
                }
                _ => vector(&[]),
            };
            (f.query(hour()), body)
        })
        .collect();
    Box::new(move |q| by_query.get(q).map_or_else(|| unexpected(q), |body| (200, body.clone())))
}

#[test]
fn every_family_is_asked_once_at_one_time() {
    let fake = Fake::start(canned());
    let json = render(&fake.url, hour(), ReportFormat::Json).expect("a report");
    let v: Value = serde_json::from_str(&json).unwrap();
    let db = &v["services"][0];
    assert_eq!(db["service"], "orders-db");
    let dependents: Vec<&str> =
        db["dependents"].as_array().unwrap().iter().map(|d| d["cell"].as_str().unwrap()).collect();
    assert_eq!(dependents, ["cell-1", "cell-2"]);
    assert_eq!(db["dependents"][0]["connections_share"], 0.75);
    let rules = v["temporary_rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "the rule in force only: {rules:?}");
    assert_eq!(
        (rules[0]["from"].as_str(), rules[0]["reason"].as_str()),
        (Some("cell-1"), Some("move"))
    );
    assert_eq!(rules[0]["expires"], "2096-10-02T07:06:40Z");
    assert_eq!((rules[0]["connections"].as_u64(), rules[0]["bytes"].as_u64()), (Some(25), Some(0)));

    let requests = fake.requests.lock().unwrap();
    assert_eq!(requests.len(), Reading::ALL.len());
    assert!(requests.iter().all(|(path, _)| path == "/api/v1/query"), "{requests:?}");
    let queries: Vec<&str> = requests.iter().map(|(_, p)| p["query"].as_str()).collect();
    let expected: Vec<String> = Reading::ALL.iter().map(|f| f.query(hour())).collect();
    assert_eq!(queries, expected, "the PromQL arrives as written");
    let times: std::collections::BTreeSet<&str> =
        requests.iter().map(|(_, p)| p["time"].as_str()).collect();
    assert_eq!(times.len(), 1, "all at one time: {times:?}");
}

#[test]
fn text_dot_and_html_too() {
    let fake = Fake::start(canned());
    let text = render(&format!("{}/", fake.url), hour(), ReportFormat::Text).unwrap();
    assert!(text.starts_with(&format!("cellwatch report  {}  the last 1h", fake.url)), "{text}");
    assert!(
        text.contains("  orders-db (in global, a global cell): 2 cells, 40 connections, 0 B\n"),
        "{text}"
    );
    let dot = render(&fake.url, hour(), ReportFormat::Dot).unwrap();
    assert!(dot.contains("\"cell:cell-1\" -> \"service:orders-db\""), "{dot}");
    let html = render(&fake.url, hour(), ReportFormat::Html).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>\n") && html.ends_with("</html>\n"), "{html}");
    assert!(html.contains(&format!("data-source=\"{}\"", fake.url)), "{html}");
    assert!(html.contains("data-src=\"cell-1\" data-dst=\"global\" data-opened=\"30\""), "{html}");
}

#[test]
fn a_path_prefix_is_kept() {
    let fake = Fake::start(canned());
    render(&format!("{}/prometheus/", fake.url), hour(), ReportFormat::Text).expect("a report");
    let requests = fake.requests.lock().unwrap();
    assert!(requests.iter().all(|(path, _)| path == "/prometheus/api/v1/query"), "{requests:?}");
}

#[test]
fn each_failure_is_one_sentence() {
    // Nothing listens.
    let dead = dead_url();
    let e = render(&dead, hour(), ReportFormat::Text).unwrap_err();
    assert!(matches!(e, ReportError::Api(ApiError::Unreachable { .. })), "{e}");
    assert!(e.to_string().starts_with(&format!("cannot reach Prometheus at {dead}: ")), "{e}");
    assert!(!e.to_string().contains('\n'), "{e}");

    // Prometheus refuses the query.
    let fake = Fake::start(Box::new(|_| {
        (
            422,
            json!({"status": "error", "errorType": "execution", "error": "query timed out"})
                .to_string(),
        )
    }));
    let e = render(&fake.url, hour(), ReportFormat::Text).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "Prometheus at {} refused a query (HTTP 422): execution: query timed out",
            fake.url
        )
    );

    // Something else answers there.
    let fake = Fake::start(Box::new(|_| (200, "<html>Grafana</html>".to_owned())));
    let e = render(&fake.url, hour(), ReportFormat::Json).unwrap_err();
    assert!(matches!(e, ReportError::Api(ApiError::NotPrometheus { status: 200, .. })), "{e}");
    assert!(e.to_string().contains("does not answer as Prometheus' query API"), "{e}");

    // Prometheus answers, with nothing of cellwatch's.
    let fake = Fake::start(Box::new(|_| (200, vector(&[]))));
    let e = render(&fake.url, hour(), ReportFormat::Dot).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "Prometheus at {} has no cellwatch data over the last 1h (no cellwatch_cell_info, \
             cellwatch_connections_opened_total, cellwatch_service_connections_opened_total or \
             cellwatch_udp_service_flows_opened_total series): does it scrape the agents?",
            fake.url
        )
    );

    for (url, why) in [
        ("https://prometheus:9090", "only plain http:// is spoken"),
        ("http://:9090", "no host"),
        ("http://prometheus:http", "`http` is not a port"),
        ("http://no-such-host.invalid:9090", "`no-such-host.invalid` does not resolve"),
    ] {
        let e = render(url, hour(), ReportFormat::Text).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "`{url}` is not a Prometheus URL: {why} (e.g. --prometheus http://prometheus:9090)"
            )
        );
    }
}
