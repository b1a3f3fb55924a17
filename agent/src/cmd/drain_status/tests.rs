//! `drain-status` against a fake Prometheus on loopback (`prometheus_api::fake`): the
//! queries reach it intact and at one time, its answers make the status, and each way it
//! cannot tell is one sentence.
use std::collections::{BTreeMap, BTreeSet};

use agent_view::report::Range;
use serde_json::{Value, json};

use super::*;
use crate::cmd::prometheus_api::fake::{Fake, Handler, dead_url, unexpected, vector};

fn args(url: &str, cell: &str, format: DrainFormat) -> DrainStatusArgs {
    DrainStatusArgs {
        cell: cell.to_owned(),
        prometheus: url.to_owned(),
        window: Range::parse("5m").unwrap(),
        format,
    }
}

/// Answers each query about cell-b: drained an hour ago (from now), with what `busy`
/// says is in it; anything else is a bad query.
fn canned(busy: bool) -> Handler {
    let start = (prometheus_api::now() - 3600.0).to_string();
    let window = Range::parse("5m").unwrap();
    let by_query: BTreeMap<String, String> = Query::ALL
        .iter()
        .map(|q| {
            let body = match q {
                Query::Start => vector(&[(&[("cell", "cell-b")], &start)]),
                Query::Opened if busy => {
                    vector(&[(&[("src_cell", "cell-a"), ("direction", "egress")], "2.2")])
                }
                Query::Holdouts if busy => vector(&[(
                    &[
                        ("instance", "10.0.0.6:9473"),
                        ("src_cell", "cell-a"),
                        ("comm", "psql"),
                        ("container", "host"),
                    ],
                    "3",
                )]),
                Query::Active if busy => {
                    vector(&[(&[("src_cell", "cell-a"), ("direction", "egress")], "3")])
                }
                _ => vector(&[]),
            };
            (q.promql("cell-b", window), body)
        })
        .collect();
    Box::new(move |q| by_query.get(q).map_or_else(|| unexpected(q), |body| (200, body.clone())))
}

#[test]
fn every_query_is_asked_once_at_one_time() {
    let fake = Fake::start(canned(true));
    let (status, json) = render(&args(&fake.url, "cell-b", DrainFormat::Json)).expect("a status");
    assert!(!status.empty);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["new_connections"], json!([{"src_cell": "cell-a", "count": 2}]));
    assert_eq!(v["holdouts"][0]["comm"], "psql");
    assert_eq!((v["active"].as_u64(), v["empty"].as_bool()), (Some(3), Some(false)));

    let requests = fake.requests.lock().unwrap();
    assert!(requests.iter().all(|(path, _)| path == "/api/v1/query"), "{requests:?}");
    let queries: Vec<&str> = requests.iter().map(|(_, p)| p["query"].as_str()).collect();
    let window = Range::parse("5m").unwrap();
    let expected: Vec<String> = Query::ALL.iter().map(|q| q.promql("cell-b", window)).collect();
    assert_eq!(queries, expected, "the PromQL arrives as written");
    let times: BTreeSet<&str> = requests.iter().map(|(_, p)| p["time"].as_str()).collect();
    assert_eq!(times.len(), 1, "all at one time: {times:?}");
}

#[test]
fn an_empty_cell_in_text() {
    let fake = Fake::start(canned(false));
    let (status, text) = render(&args(&fake.url, "cell-b", DrainFormat::Text)).unwrap();
    assert!(status.empty);
    assert!(text.starts_with("cell-b drained since "), "{text}");
    assert!(text.contains(" (1h ago)\n"), "{text}");
    assert!(text.ends_with("\ncell-b is empty: no new connection over the last 5m, none open\n"));
}

#[test]
fn each_way_it_cannot_tell_is_one_sentence() {
    // A cell no agent drains.
    let fake = Fake::start(canned(false));
    let e = render(&args(&fake.url, "cell-c", DrainFormat::Text)).unwrap_err();
    assert!(matches!(e, DrainError::Api(ApiError::Refused { .. })), "cell-c's queries: {e}");
    let fake = Fake::start(Box::new(|_| (200, vector(&[]))));
    let e = render(&args(&fake.url, "cell-c", DrainFormat::Text)).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "Prometheus at {} has no cellwatch_drain_start_timestamp_seconds{{cell=\"cell-c\"}}: \
             cell-c is not drained, or no agent that drains it is scraped",
            fake.url
        )
    );

    // Nothing listens.
    let dead = dead_url();
    let e = render(&args(&dead, "cell-b", DrainFormat::Json)).unwrap_err();
    assert!(matches!(e, DrainError::Api(ApiError::Unreachable { .. })), "{e}");
    assert!(e.to_string().starts_with(&format!("cannot reach Prometheus at {dead}: ")), "{e}");
    assert!(!e.to_string().contains('\n'), "{e}");

    // Prometheus refuses, or something else answers.
    let fake = Fake::start(Box::new(|_| {
        let body = json!({"status": "error", "errorType": "execution", "error": "timed out"});
        (422, body.to_string())
    }));
    let e = render(&args(&fake.url, "cell-b", DrainFormat::Text)).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("Prometheus at {} refused a query (HTTP 422): execution: timed out", fake.url)
    );
    let fake = Fake::start(Box::new(|_| (200, "<html>Grafana</html>".to_owned())));
    let e = render(&args(&fake.url, "cell-b", DrainFormat::Text)).unwrap_err();
    assert!(matches!(e, DrainError::Api(ApiError::NotPrometheus { status: 200, .. })), "{e}");

    let e = render(&args("https://prometheus:9090", "cell-b", DrainFormat::Text)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "`https://prometheus:9090` is not a Prometheus URL: only plain http:// is spoken (e.g. \
         --prometheus http://prometheus:9090)"
    );
}
