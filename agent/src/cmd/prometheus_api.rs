//! Prometheus' HTTP API as `report` and `drain-status` read it: instant queries
//! (`GET /api/v1/query`) through the shared HTTP/1.0 client, every one at a time the
//! caller gives, and each way Prometheus can fail as one sentence ([`ApiError`]).
#![forbid(unsafe_code)]

#[cfg(test)]
pub(crate) mod fake;

use std::{
    fmt::Write as _,
    io,
    net::{SocketAddr, ToSocketAddrs},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use agent_view::report::{AnswerError, Series, parse_answer};

use crate::cmd::fetch;

/// How long one query may take: a day's range over many cells can take seconds.
const LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("`{url}` is not a Prometheus URL: {why} (e.g. --prometheus http://prometheus:9090)")]
    Url { url: String, why: String },
    #[error(
        "cannot reach Prometheus at {url}: {source} (is it running there? --prometheus names \
         its address)"
    )]
    Unreachable { url: String, source: io::Error },
    #[error("Prometheus at {url} refused a query (HTTP {status}): {why}")]
    Refused { url: String, status: u16, why: String },
    #[error("{url} does not answer as Prometheus' query API: HTTP {status}, {why}")]
    NotPrometheus { url: String, status: u16, why: String },
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] io::Error),
}

/// The Prometheus at `--prometheus`.
pub(crate) struct Prometheus {
    /// The URL as given, without a trailing `/`.
    pub(crate) url: String,
    addr: SocketAddr,
    /// `host[:port]` for the `Host` header (a proxy in front may route by it).
    host: String,
    /// A path before `/api/v1`, when the URL has one (`--web.route-prefix`, a proxy's).
    prefix: String,
    rt: tokio::runtime::Runtime,
}

impl Prometheus {
    pub(crate) fn new(url: &str) -> Result<Self, ApiError> {
        let bad = |why: String| ApiError::Url { url: url.to_owned(), why };
        let (host, port, prefix) = fetch::split_url(url).map_err(bad)?;
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| bad(format!("`{host}` does not resolve")))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ApiError::Runtime)?;
        let host =
            if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        Ok(Self { url: url.trim_end_matches('/').to_owned(), addr, host, prefix, rt })
    }

    /// One instant query at `time` (seconds since the epoch).
    pub(crate) fn query(&self, query: &str, time: f64) -> Result<Vec<Series>, ApiError> {
        let path = format!("{}/api/v1/query?query={}&time={time:.3}", self.prefix, encode(query));
        let answer = self
            .rt
            .block_on(fetch::request(self.addr, &self.host, &path, LIMIT))
            .map_err(|source| ApiError::Unreachable { url: self.url.clone(), source })?;
        let status = answer.status;
        let not_prometheus =
            |why: String| ApiError::NotPrometheus { url: self.url.clone(), status, why };
        match parse_answer(&answer.body) {
            Ok(series) if status == 200 => Ok(series),
            Ok(_) => Err(not_prometheus("yet a result".to_owned())),
            Err(AnswerError::Refused(why)) => {
                Err(ApiError::Refused { url: self.url.clone(), status, why })
            }
            Err(AnswerError::NotApi(detail)) => {
                Err(not_prometheus(format!("not its JSON ({detail})")))
            }
            Err(e @ AnswerError::NotVector(_)) => Err(not_prometheus(e.to_string())),
        }
    }
}

/// Now, in seconds since the epoch: the one time all of a command's queries are at.
pub(crate) fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// A query-string value: every byte but the unreserved ones percent-encoded.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}
