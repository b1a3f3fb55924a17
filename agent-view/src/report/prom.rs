//! `cellwatch report`'s side of Prometheus, with no network: the time range, the PromQL of
//! each family the report reads (instant queries, all at one time), and the query API's
//! JSON answer read into series.
//!
//! Every query reads the raw families the agents export, so the report needs no recording
//! rule. Each connection counts once, as the recording rules count it: the client's side
//! (`direction="egress"`), plus the server's side when the client is in no cell
//! (`src_cell="external"`). A counter counts over the range with its `increase()` when the
//! series existed at the start of the range, and with all of its value when it appeared
//! within the range: a series appears at its first count, which `increase()` cannot see.
#![forbid(unsafe_code)]

use std::{collections::BTreeMap, fmt};

use agent_core::metrics::families as f;
use serde::Deserialize;

use crate::side;

/// The report's time range, up to the time of the queries: whole seconds, from a minute
/// to 366 days.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range(u64);

impl Range {
    const MIN: u64 = 60;
    const MAX: u64 = 366 * 86_400;
    /// Units, largest first: what [`Range::parse`] takes and `Display` writes.
    const UNITS: [(&'static str, u64); 5] =
        [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)];

    /// `30m`, `1h`, `7d`, `2w` or `90s`, as Prometheus writes durations (one unit).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (num, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, ""), |i| s.split_at(i));
        let n: u64 =
            num.parse().map_err(|_| format!("`{s}` is not a range such as 30m, 1h or 7d"))?;
        let Some((_, per)) = Self::UNITS.iter().find(|(u, _)| *u == unit) else {
            return Err(format!("`{s}` needs a unit: s, m, h, d or w (e.g. 1h)"));
        };
        n.checked_mul(*per)
            .filter(|v| (Self::MIN..=Self::MAX).contains(v))
            .map(Self)
            .ok_or_else(|| format!("{s} is outside 1m to 366d"))
    }

    pub fn seconds(self) -> u64 {
        self.0
    }

    /// The range in a PromQL range selector or `offset`.
    pub fn promql(self) -> String {
        format!("{}s", self.0)
    }
}

impl fmt::Display for Range {
    /// In the largest unit that divides it: `1h`, `90m`, `7d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (unit, per) = Self::UNITS
            .iter()
            .find(|(_, per)| self.0.is_multiple_of(*per))
            .copied()
            .unwrap_or(("s", 1));
        write!(f, "{}{unit}", self.0 / per)
    }
}

/// One thing the report reads, as one instant query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Query {
    /// The configured cells (`cell`) and whether each is global (`global`).
    Cells,
    /// The configured services (`service`) and the cell each lies in (`cell`).
    Services,
    /// Per (`src_cell`, `dst_cell`): connections opened over the range.
    PairOpened,
    /// Connects that failed (client side only).
    PairFailed,
    /// Payload bytes the client sent.
    PairSent,
    /// Payload bytes the client received.
    PairReceived,
    /// Connect latency histogram buckets (`le`), client side.
    PairLatency,
    /// Per (`src_cell`, `service`), as the pair families.
    ServiceOpened,
    ServiceFailed,
    ServiceSent,
    ServiceReceived,
    ServiceLatency,
}

impl Query {
    pub const ALL: [Query; 12] = [
        Self::Cells,
        Self::Services,
        Self::PairOpened,
        Self::PairFailed,
        Self::PairSent,
        Self::PairReceived,
        Self::PairLatency,
        Self::ServiceOpened,
        Self::ServiceFailed,
        Self::ServiceSent,
        Self::ServiceReceived,
        Self::ServiceLatency,
    ];

    /// The PromQL that reads this family over `range`.
    pub fn query(self, range: Range) -> String {
        let r = range.promql();
        let pair = "src_cell, dst_cell";
        let service = "src_cell, service";
        match self {
            Self::Cells => {
                format!("max by (cell, global) (last_over_time({}[{r}]))", f::CELL_INFO)
            }
            Self::Services => {
                format!("max by (service, cell) (last_over_time({}[{r}]))", f::SERVICE_INFO)
            }
            Self::PairOpened => client_side(f::CONNECTIONS_OPENED_TOTAL, pair, &r),
            Self::PairFailed => sum(pair, &counted(f::CONNECTIONS_FAILED_TOTAL, &r)),
            // The client's bytes: sent by the client; for an external client, received by
            // the server.
            Self::PairSent => client_bytes(f::BYTES_SENT_TOTAL, f::BYTES_RECEIVED_TOTAL, pair, &r),
            Self::PairReceived => {
                client_bytes(f::BYTES_RECEIVED_TOTAL, f::BYTES_SENT_TOTAL, pair, &r)
            }
            Self::PairLatency => {
                sum(&format!("{pair}, le"), &counted(f::CONNECT_LATENCY_SECONDS_BUCKET, &r))
            }
            Self::ServiceOpened => client_side(f::SERVICE_CONNECTIONS_OPENED_TOTAL, service, &r),
            Self::ServiceFailed => sum(service, &counted(f::SERVICE_CONNECTIONS_FAILED_TOTAL, &r)),
            Self::ServiceSent => client_bytes(
                f::SERVICE_BYTES_SENT_TOTAL,
                f::SERVICE_BYTES_RECEIVED_TOTAL,
                service,
                &r,
            ),
            Self::ServiceReceived => client_bytes(
                f::SERVICE_BYTES_RECEIVED_TOTAL,
                f::SERVICE_BYTES_SENT_TOTAL,
                service,
                &r,
            ),
            Self::ServiceLatency => sum(
                &format!("{service}, le"),
                &counted(f::SERVICE_CONNECT_LATENCY_SECONDS_BUCKET, &r),
            ),
        }
    }
}

fn sum(by: &str, expr: &str) -> String {
    format!("sum by ({by}) ({expr})")
}

/// What the counters of `selector` counted over the range `r`, per series (see the
/// module doc).
fn counted(selector: &str, r: &str) -> String {
    format!(
        "(increase({selector}[{r}]) and {selector} offset {r}) or ({selector} unless {selector} offset {r})"
    )
}

/// A per-direction counter, each connection once ([`side::matchers`]).
fn client_side(metric: &str, by: &str, r: &str) -> String {
    let [mine, external] = side::matchers();
    let egress = counted(&format!("{metric}{{{mine}}}"), r);
    let external = counted(&format!("{metric}{{{external}}}"), r);
    sum(by, &format!("({egress}) or ({external})"))
}

/// The client's bytes one way: `mine` on the client's side, `theirs` (the other way) on
/// the server's for a client in no cell ([`side::matchers`]).
fn client_bytes(mine: &str, theirs: &str, by: &str, r: &str) -> String {
    let [client, external] = side::matchers();
    let egress = counted(&format!("{mine}{{{client}}}"), r);
    let external = counted(&format!("{theirs}{{{external}}}"), r);
    sum(by, &format!("({egress}) or ({external})"))
}

/// One series of an instant vector: its labels and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Series {
    /// A label's value; empty when the series has no such label.
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// An answer of the query API that is not an instant vector.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnswerError {
    /// Not the JSON of Prometheus' query API (another server at that URL?).
    #[error("the answer is not the JSON of Prometheus' query API ({0})")]
    NotApi(String),
    /// Prometheus refused the query: its error type and message.
    #[error("{0}")]
    Refused(String),
    /// A result of another type (a matrix, a scalar).
    #[error("the answer is a {0}, not an instant vector")]
    NotVector(String),
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct Sample {
    metric: BTreeMap<String, String>,
    /// (time, value): Prometheus writes the value as a string (`"12"`, `"NaN"`, `"+Inf"`).
    value: (f64, String),
}

/// The series of an instant query's answer (`GET /api/v1/query`), whatever its HTTP
/// status: Prometheus answers a refused query with a JSON error.
pub fn parse_answer(body: &str) -> Result<Vec<Series>, AnswerError> {
    let answer: Answer =
        serde_json::from_str(body).map_err(|e| AnswerError::NotApi(e.to_string()))?;
    if answer.status != "success" {
        return Err(AnswerError::Refused(format!(
            "{}: {}",
            answer.error_type.as_deref().unwrap_or(&answer.status),
            answer.error.as_deref().unwrap_or("no error message")
        )));
    }
    let data = answer.data.ok_or_else(|| AnswerError::NotApi("no `data`".to_owned()))?;
    if data.result_type != "vector" {
        return Err(AnswerError::NotVector(data.result_type));
    }
    let samples: Vec<Sample> =
        serde_json::from_value(data.result).map_err(|e| AnswerError::NotApi(e.to_string()))?;
    samples
        .into_iter()
        .map(|s| {
            let value = s.value.1.parse::<f64>().map_err(|_| {
                AnswerError::NotApi(format!("`{}` is not a sample value", s.value.1))
            })?;
            Ok(Series { labels: s.metric, value })
        })
        .collect()
}
