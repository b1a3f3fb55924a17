//! `cellwatch report`'s side of Prometheus, with no network: the time range, what the
//! report reads (each [`Reading`]'s families, counted series and labels, which reading
//! one `/metrics` instead follows too) and its PromQL (instant queries, all at one time),
//! and the query API's JSON answer read into series. `drain-status` reads with the same
//! range, counters and answers.
//!
//! Every query reads the raw families the agents export, so the report needs no recording
//! rule. Each connection (and UDP flow) counts once, as the recording rules count it: the
//! client's side
//! (`direction="egress"`), plus the server's side when the client is in no cell
//! (`src_cell="external"`). A counter counts over the range with its `increase()` when the
//! series existed at the start of the range, and with all of its value when it appeared
//! within the range: a series appears at its first count, which `increase()` cannot see.
#![forbid(unsafe_code)]

use std::{collections::BTreeMap, fmt};

use agent_core::metrics::families as f;
use serde::Deserialize;

use crate::side::{self, Way};

/// The `verdict` of a connection the policy allows.
pub(super) const ALLOWED: &str = agent_common::Verdict::ALLOWED.label();

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
pub enum Reading {
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
    /// The same histogram stored as a native one (Prometheus with native histograms): its
    /// buckets come back as [`PairLatency`](Reading::PairLatency)'s do (`le`, cumulative).
    PairLatencyNative,
    /// Per (`src_cell`, `service`), as the pair families.
    ServiceOpened,
    /// UDP flows opened, per (`src_cell`, `service`), to the services with
    /// `protocol: udp`: counted as [`ServiceOpened`](Reading::ServiceOpened) is.
    ServiceFlowsOpened,
    ServiceFailed,
    ServiceSent,
    ServiceReceived,
    ServiceLatency,
    ServiceLatencyNative,
    /// The temporary allow rules (`from`, `to`, `reason`) and each one's deadline, now.
    AllowRules,
    /// Per (`src_cell`, `dst_cell`): allowed connections opened over the range.
    PairAllowed,
    /// Per (`src_cell`, `dst_cell`): boundary violations over the range (connections
    /// opened, refused or failed against policy), each connection once.
    PairViolations,
}

impl Reading {
    pub const ALL: [Reading; 18] = [
        Self::Cells,
        Self::Services,
        Self::PairOpened,
        Self::PairFailed,
        Self::PairSent,
        Self::PairReceived,
        Self::PairLatency,
        Self::PairLatencyNative,
        Self::ServiceOpened,
        Self::ServiceFlowsOpened,
        Self::ServiceFailed,
        Self::ServiceSent,
        Self::ServiceReceived,
        Self::ServiceLatency,
        Self::ServiceLatencyNative,
        Self::AllowRules,
        Self::PairAllowed,
        Self::PairViolations,
    ];

    /// What this reading reads: its family (or families), which series count, and the
    /// labels it sums by. The PromQL ([`Reading::query`]) and the reading of one
    /// `/metrics` (`super::answers_of`) both follow it.
    pub(super) fn read(self) -> Read {
        const PAIR: &str = "src_cell, dst_cell";
        const PAIR_LE: &str = "src_cell, dst_cell, le";
        const SERVICE: &str = "src_cell, service";
        const SERVICE_LE: &str = "src_cell, service, le";
        match self {
            Self::Cells => Read::Info(f::CELL_INFO, "cell, global"),
            Self::Services => Read::Info(f::SERVICE_INFO, "service, cell"),
            Self::PairOpened => Read::ClientSide(f::CONNECTIONS_OPENED_TOTAL, PAIR),
            Self::PairFailed => Read::All(f::CONNECTIONS_FAILED_TOTAL, PAIR),
            // The client's bytes: sent by the client; for an external client, received by
            // the server.
            Self::PairSent => Read::Bytes(Way::Sent, PAIR_BYTES, PAIR),
            Self::PairReceived => Read::Bytes(Way::Received, PAIR_BYTES, PAIR),
            Self::PairLatency => Read::All(f::CONNECT_LATENCY_SECONDS_BUCKET, PAIR_LE),
            Self::PairLatencyNative => Read::All(f::CONNECT_LATENCY_SECONDS, PAIR),
            Self::ServiceOpened => Read::ClientSide(f::SERVICE_CONNECTIONS_OPENED_TOTAL, SERVICE),
            Self::ServiceFlowsOpened => {
                Read::ClientSide(f::UDP_SERVICE_FLOWS_OPENED_TOTAL, SERVICE)
            }
            Self::ServiceFailed => Read::All(f::SERVICE_CONNECTIONS_FAILED_TOTAL, SERVICE),
            Self::ServiceSent => Read::Bytes(Way::Sent, SERVICE_BYTES, SERVICE),
            Self::ServiceReceived => Read::Bytes(Way::Received, SERVICE_BYTES, SERVICE),
            Self::ServiceLatency => {
                Read::All(f::SERVICE_CONNECT_LATENCY_SECONDS_BUCKET, SERVICE_LE)
            }
            Self::ServiceLatencyNative => Read::All(f::SERVICE_CONNECT_LATENCY_SECONDS, SERVICE),
            Self::AllowRules => {
                Read::Now(f::ALLOW_RULE_EXPIRY_TIMESTAMP_SECONDS, "from, to, reason")
            }
            Self::PairAllowed => Read::Allowed(f::CONNECTIONS_OPENED_TOTAL, PAIR),
            Self::PairViolations => Read::ClientSide(f::BOUNDARY_VIOLATIONS_TOTAL, PAIR),
        }
    }

    /// The PromQL that reads this family over `range`.
    pub fn query(self, range: Range) -> String {
        let r = range.promql();
        match self.read() {
            Read::Info(family, by) => format!("max by ({by}) (last_over_time({family}[{r}]))"),
            Read::Now(family, by) => format!("max by ({by}) ({family})"),
            Read::ClientSide(family, by) => client_side(family, "", by, &r),
            Read::Allowed(family, by) => {
                client_side(family, &format!("verdict=\"{ALLOWED}\""), by, &r)
            }
            Read::All(family, by) => sum(by, &counted(family, &r)),
            Read::Bytes(way, families, by) => client_bytes(way, families, by, &r),
        }
    }
}

/// How a [`Reading`] reads: the family, which of its series count, and the labels
/// (`a, b`) the reading sums them by.
#[derive(Clone, Copy, Debug)]
pub(super) enum Read {
    /// A catalog family (always 1), by all its labels.
    Info(&'static str, &'static str),
    /// A gauge as it is at the time of the queries, by all its labels.
    Now(&'static str, &'static str),
    /// A family with a direction: each connection once ([`side::counts`]).
    ClientSide(&'static str, &'static str),
    /// [`Read::ClientSide`] of the allowed connections (`verdict="allowed"`) only.
    Allowed(&'static str, &'static str),
    /// A family without a direction: every series (the client's already).
    All(&'static str, &'static str),
    /// The client's bytes going one way, from a (sent, received) pair of families
    /// ([`side::client_bytes`]), each connection once.
    Bytes(Way, Bytes, &'static str),
}

impl Read {
    /// The labels the reading sums by.
    pub(super) fn by(self) -> impl Iterator<Item = &'static str> {
        let (Self::Info(_, by)
        | Self::Now(_, by)
        | Self::ClientSide(_, by)
        | Self::Allowed(_, by)
        | Self::All(_, by)
        | Self::Bytes(.., by)) = self;
        by.split(", ")
    }
}

fn sum(by: &str, expr: &str) -> String {
    format!("sum by ({by}) ({expr})")
}

/// What the counters of `selector` counted over the range `r`, per series (see the
/// module doc).
pub(crate) fn counted(selector: &str, r: &str) -> String {
    format!(
        "(increase({selector}[{r}]) and {selector} offset {r}) or ({selector} unless {selector} offset {r})"
    )
}

/// A per-direction counter, each connection once ([`side::matchers`]); its series that
/// match `only` too, when it is not empty.
fn client_side(metric: &str, only: &str, by: &str, r: &str) -> String {
    let selector = |side: &str| {
        let matchers = if only.is_empty() { side.to_owned() } else { format!("{only}, {side}") };
        format!("{metric}{{{matchers}}}")
    };
    let [mine, external] = side::matchers();
    let egress = counted(&selector(&mine), r);
    let external = counted(&selector(&external), r);
    sum(by, &format!("({egress}) or ({external})"))
}

/// A pair of bytes families: (sent, received).
pub(super) type Bytes = (&'static str, &'static str);

const PAIR_BYTES: Bytes = (f::BYTES_SENT_TOTAL, f::BYTES_RECEIVED_TOTAL);
const SERVICE_BYTES: Bytes = (f::SERVICE_BYTES_SENT_TOTAL, f::SERVICE_BYTES_RECEIVED_TOTAL);

/// The client's bytes going `way`, on each counted side ([`side::matchers`]) from the
/// family [`side::client_bytes`] names: the same way on the client's side, the other way
/// on the server's for a client in no cell.
fn client_bytes(way: Way, (sent, received): Bytes, by: &str, r: &str) -> String {
    let family = |direction| match side::client_bytes(way, direction) {
        Way::Sent => sent,
        Way::Received => received,
    };
    let [client, external] = side::matchers();
    let egress = counted(&format!("{}{{{client}}}", family(side::EGRESS)), r);
    let external = counted(&format!("{}{{{external}}}", family(side::INGRESS)), r);
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
    #[serde(default)]
    value: Option<(f64, String)>,
    /// (time, histogram), instead of `value`, for a native histogram.
    #[serde(default)]
    histogram: Option<(f64, Native)>,
}

/// A native histogram sample as the query API writes it: its buckets, each
/// `[boundaries, lower, upper, count]`, with the numbers as strings.
#[derive(Deserialize)]
struct Native {
    count: String,
    #[serde(default)]
    buckets: Vec<(u8, String, String, String)>,
}

fn number(s: &str) -> Result<f64, AnswerError> {
    s.parse::<f64>().map_err(|_| AnswerError::NotApi(format!("`{s}` is not a sample value")))
}

impl Sample {
    /// The series of the sample: its value, or a native histogram's buckets as classic
    /// ones, an `le` label on each and its count cumulative, `+Inf` holding the count.
    /// A native bucket's lower bound is written too (with the count below it) where the
    /// bucket below does not end there, so a quantile is interpolated within the bucket's
    /// own bounds, as `histogram_quantile` does natively.
    fn series(self) -> Result<Vec<Series>, AnswerError> {
        let Some((_, h)) = self.histogram else {
            let (_, value) =
                self.value.ok_or_else(|| AnswerError::NotApi("a sample without a value".into()))?;
            return Ok(vec![Series { labels: self.metric, value: number(&value)? }]);
        };
        let mut buckets = h
            .buckets
            .iter()
            .map(|(_, lower, upper, count)| Ok((number(lower)?, number(upper)?, number(count)?)))
            .collect::<Result<Vec<(f64, f64, f64)>, AnswerError>>()?;
        buckets.sort_by(|a, b| a.1.total_cmp(&b.1));
        let mut bounds: Vec<(f64, f64)> = Vec::with_capacity(2 * buckets.len());
        let mut cumulative = 0.0;
        for (lower, upper, count) in buckets.into_iter().filter(|b| b.1.is_finite()) {
            if lower > 0.0 && bounds.last().is_none_or(|&(le, _)| le < lower) {
                bounds.push((lower, cumulative));
            }
            cumulative += count;
            bounds.push((upper, cumulative));
        }
        bounds.push((f64::INFINITY, number(&h.count)?));
        Ok(bounds
            .into_iter()
            .map(|(le, value)| {
                let mut labels = self.metric.clone();
                let le = if le.is_finite() { le.to_string() } else { "+Inf".to_owned() };
                labels.insert("le".to_owned(), le);
                Series { labels, value }
            })
            .collect())
    }
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
    let mut series = Vec::with_capacity(samples.len());
    for s in samples {
        series.extend(s.series()?);
    }
    Ok(series)
}
