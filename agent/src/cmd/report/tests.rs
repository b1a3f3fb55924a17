//! `report` against a fake Prometheus on loopback that answers each family's query (as
//! it arrives, URL-decoded) with a canned answer of the query API: the queries reach it
//! intact and at one time, and each way Prometheus can fail is one sentence.
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpListener,
    sync::{Arc, Mutex},
    thread,
};

use agent_view::report::{Range, Reading};
use serde_json::{Value, json};

use super::*;

/// What the fake answers a query with: (status, body).
type Handler = Box<dyn Fn(&str) -> (u16, String) + Send>;

/// A request's path and its query-string parameters, decoded.
type Request = (String, BTreeMap<String, String>);

/// A fake Prometheus; each request it got.
struct Fake {
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Fake {
    fn start(answer: Handler) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(n @ 1..) => raw.extend_from_slice(&buf[..n]),
                        _ => break,
                    }
                }
                let head = String::from_utf8_lossy(&raw).into_owned();
                let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                let params: BTreeMap<String, String> = query
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), decode(v)))
                    .collect();
                let (status, body) = answer(params.get("query").map_or("", String::as_str));
                seen.lock().unwrap().push((path.to_owned(), params));
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\r\n{body}"
                );
            }
        });
        Self { url, requests }
    }
}

fn decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn vector(series: &[(&[(&str, &str)], &str)]) -> String {
    let result: Vec<Value> = series
        .iter()
        .map(|(labels, v)| {
            let metric: serde_json::Map<String, Value> =
                labels.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
            json!({ "metric": metric, "value": [1_760_000_000.0, v] })
        })
        .collect();
    json!({"status": "success", "data": {"resultType": "vector", "result": result}}).to_string()
}

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
                _ => vector(&[]),
            };
            (f.query(hour()), body)
        })
        .collect();
    Box::new(move |q| {
        match by_query.get(q) {
        Some(body) => (200, body.clone()),
        None => (
            400,
            json!({"status": "error", "errorType": "bad_data", "error": format!("unexpected query {q}")})
                .to_string(),
        ),
    }
    })
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
fn text_and_dot_too() {
    let fake = Fake::start(canned());
    let text = render(&format!("{}/", fake.url), hour(), ReportFormat::Text).unwrap();
    assert!(text.starts_with(&format!("cellwatch report  {}  the last 1h", fake.url)), "{text}");
    assert!(
        text.contains("  orders-db (in global, a global cell): 2 cells, 40 connections, 0 B\n"),
        "{text}"
    );
    let dot = render(&fake.url, hour(), ReportFormat::Dot).unwrap();
    assert!(dot.contains("\"cell:cell-1\" -> \"service:orders-db\""), "{dot}");
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
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let e = render(&dead, hour(), ReportFormat::Text).unwrap_err();
    assert!(matches!(e, ReportError::Unreachable { .. }), "{e}");
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
    assert!(matches!(e, ReportError::NotPrometheus { status: 200, .. }), "{e}");
    assert!(e.to_string().contains("does not answer as Prometheus' query API"), "{e}");

    // Prometheus answers, with nothing of cellwatch's.
    let fake = Fake::start(Box::new(|_| (200, vector(&[]))));
    let e = render(&fake.url, hour(), ReportFormat::Dot).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "Prometheus at {} has no cellwatch data over the last 1h (no cellwatch_cell_info, \
             cellwatch_connections_opened_total or cellwatch_service_connections_opened_total \
             series): does it scrape the agents?",
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
