//! Prometheus' HTTP API as the report reads it: every family's instant query
//! (`GET /api/v1/query`), all at the same time, through the shared HTTP/1.0 client.
#![forbid(unsafe_code)]

use std::{
    fmt::Write as _,
    net::{SocketAddr, ToSocketAddrs},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use agent_view::report::{AnswerError, Answers, Range, Reading, Report, Series, parse_answer};

use super::ReportError;
use crate::cmd::fetch;

/// How long one query may take: a day's range over many cells can take seconds.
const LIMIT: Duration = Duration::from_secs(30);

/// The Prometheus at `--prometheus`.
pub(super) struct Prometheus {
    /// The URL as given, without a trailing `/`.
    pub(super) url: String,
    addr: SocketAddr,
    /// `host[:port]` for the `Host` header (a proxy in front may route by it).
    host: String,
    /// A path before `/api/v1`, when the URL has one (`--web.route-prefix`, a proxy's).
    prefix: String,
    rt: tokio::runtime::Runtime,
}

impl Prometheus {
    pub(super) fn new(url: &str) -> Result<Self, ReportError> {
        let bad = |why: String| ReportError::Url { url: url.to_owned(), why };
        let (host, port, prefix) = fetch::split_url(url).map_err(bad)?;
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| bad(format!("`{host}` does not resolve")))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ReportError::Runtime)?;
        let host =
            if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        Ok(Self { url: url.trim_end_matches('/').to_owned(), addr, host, prefix, rt })
    }

    /// One instant query at `time` (seconds since the epoch).
    fn query(&self, query: &str, time: f64) -> Result<Vec<Series>, ReportError> {
        let path = format!("{}/api/v1/query?query={}&time={time:.3}", self.prefix, encode(query));
        let answer = self
            .rt
            .block_on(fetch::request(self.addr, &self.host, &path, LIMIT))
            .map_err(|source| ReportError::Unreachable { url: self.url.clone(), source })?;
        let status = answer.status;
        match parse_answer(&answer.body) {
            Ok(series) if status == 200 => Ok(series),
            Ok(_) => Err(ReportError::NotPrometheus {
                url: self.url.clone(),
                status,
                why: "yet a result".to_owned(),
            }),
            Err(AnswerError::Refused(why)) => {
                Err(ReportError::Refused { url: self.url.clone(), status, why })
            }
            Err(AnswerError::NotApi(detail)) => Err(ReportError::NotPrometheus {
                url: self.url.clone(),
                status,
                why: format!("not its JSON ({detail})"),
            }),
            Err(e @ AnswerError::NotVector(_)) => Err(ReportError::NotPrometheus {
                url: self.url.clone(),
                status,
                why: e.to_string(),
            }),
        }
    }

    /// Every family over `range` up to now, and the report they make.
    pub(super) fn report(&self, range: Range) -> Result<Report, ReportError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let mut answers = Answers::new();
        for family in Reading::ALL {
            answers.insert(family, self.query(&family.query(range), now)?);
        }
        Report::build(range, &answers)
            .map_err(|source| ReportError::NoData { url: self.url.clone(), source })
    }
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
