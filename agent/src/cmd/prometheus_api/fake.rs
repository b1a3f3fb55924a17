//! A fake Prometheus on loopback for the commands' unit tests: it answers each query (as
//! it arrives, URL-decoded) with what its handler says, as the query API would, and keeps
//! every request it got.
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpListener,
    sync::{Arc, Mutex},
    thread,
};

use serde_json::{Value, json};

/// What the fake answers a query with: (status, body).
pub(crate) type Handler = Box<dyn Fn(&str) -> (u16, String) + Send>;

/// A request's path and its query-string parameters, decoded.
pub(crate) type Request = (String, BTreeMap<String, String>);

/// A fake Prometheus; each request it got.
pub(crate) struct Fake {
    pub(crate) url: String,
    pub(crate) requests: Arc<Mutex<Vec<Request>>>,
}

impl Fake {
    pub(crate) fn start(answer: Handler) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let (path, params) = read_request(&mut s);
                let (status, body) = answer(params.get("query").map_or("", String::as_str));
                seen.lock().unwrap().push((path, params));
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\r\n{body}"
                );
            }
        });
        Self { url, requests }
    }
}

/// The path and decoded query string of the request on `s`.
fn read_request(s: &mut impl Read) -> Request {
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
    let params = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), decode(v)))
        .collect();
    (path.to_owned(), params)
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

/// An instant-vector answer of these series: (labels, value).
pub(crate) fn vector(series: &[(&[(&str, &str)], &str)]) -> String {
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

/// Prometheus' answer to a query it did not expect here.
pub(crate) fn unexpected(q: &str) -> (u16, String) {
    let body = json!({"status": "error", "errorType": "bad_data", "error": format!("unexpected query {q}")});
    (400, body.to_string())
}

/// A URL where nothing listens.
pub(crate) fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}
