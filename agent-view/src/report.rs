//! `cellwatch report`'s model, with no network: the answers of a Prometheus (one instant
//! query per [`Reading`], see [`prom`]) become the blast radius of each service, each
//! cell's dependencies and containment, and the outlier cells; [`render`] writes them as
//! text, JSON or graphviz dot, and [`html`] as one self-contained page. The same readings can come from one agent's `/metrics`
//! ([`answers_of`]): the demo's blast radius is [`blast_radii`] of those.
//!
//! - **Blast radius** of a service: the cells whose clients reached it over the range
//!   (opened connections, UDP flows to a service with `protocol: udp`, failed connects or
//!   bytes), each with its share of the service's connections and bytes. A UDP flow counts
//!   as a connection does (a service's `connections` include its `flows`), so a UDP
//!   service such as the resolver has its blast radius too. Clients in no cell are apart
//!   (`external`).
//! - **Dependencies** of a cell: the services it called and the other cells (global ones
//!   and `external` included) it called, with the boundary violations to each (its
//!   leaks). A connection to a service also counts for the cell the service lies in, as
//!   the agent counts it.
//! - **Containment** of a cell: the shares of its connections and bytes (as a client) that
//!   stay inside it, go to global cells, to other cells, or to peers in no cell; the
//!   recording rules `cellwatch:cell_containment_*` compute the same over 5 minutes.
//! - **Outliers**: the alert `CellOutlier`'s rule over the report's range. Per destination
//!   (a service, or a cell other than `external`), the cells that made at least
//!   [`MIN_CONNECTS_PER_SECOND`] connects to it are compared: one is an outlier when its
//!   failure ratio (above [`FAILURE_RATIO_FLOOR`]) or its connect p99 (above
//!   [`P99_FLOOR_SECONDS`]) is more than [`FACTOR`] times the median of the others'.
//!   p99 is interpolated within buckets as `histogram_quantile` does: a native histogram's
//!   where the store holds one for the pair, the classic buckets' otherwise.
//! - **Temporary allow rules** in force at the end of the range (`until:` still ahead):
//!   each one's deadline and reason, and what its flow (client cell -> server cell)
//!   carried over the range: the allowed connections opened, and their bytes.
#![forbid(unsafe_code)]

mod html;
mod prom;
mod render;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use agent_core::{metrics::families as f, names::EXTERNAL, promtext::Sample};
use serde::Serialize;

pub(crate) use prom::counted;
pub use prom::{AnswerError, Range, Reading, Series, parse_answer};

use crate::{
    format::rfc3339,
    scrape::Hist,
    side::{self, Way},
};
use prom::Read;

/// How much worse than the other cells' median an outlier is.
pub const FACTOR: f64 = 3.0;
/// The failure ratio an outlier must be above, whatever its peers'.
pub const FAILURE_RATIO_FLOOR: f64 = 0.05;
/// The connect p99 an outlier must be above, whatever its peers'.
pub const P99_FLOOR_SECONDS: f64 = 0.05;
/// Connects per second to a destination a cell must make to be compared at all.
pub const MIN_CONNECTS_PER_SECOND: f64 = 0.2;

/// Each family's series, as Prometheus answered.
pub type Answers = BTreeMap<Reading, Vec<Series>>;

/// Prometheus has none of cellwatch's families over the range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "no cellwatch data over the last {0} (no {cells}, {pairs}, {services} or {udp} series)",
    cells = f::CELL_INFO,
    pairs = f::CONNECTIONS_OPENED_TOTAL,
    services = f::SERVICE_CONNECTIONS_OPENED_TOTAL,
    udp = f::UDP_SERVICE_FLOWS_OPENED_TOTAL
)]
pub struct NoData(pub Range);

/// The whole report. Counts are over the range, rounded to whole numbers; shares are
/// fractions (0 to 1), `null` when there is nothing to share.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The range, as `1h`.
    pub range: String,
    pub range_seconds: u64,
    pub cells: Vec<Cell>,
    pub services: Vec<Service>,
    pub outliers: Vec<Outlier>,
    /// The temporary allow rules in force at the end of the range, the soonest first.
    pub temporary_rules: Vec<TemporaryRule>,
    /// What the report could not tell, in words.
    pub notes: Vec<String>,
}

/// A temporary allow rule whose deadline is after the end of the range, and what its
/// flow carried over the range.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TemporaryRule {
    /// The client cell.
    pub from: String,
    /// The server cell.
    pub to: String,
    pub reason: String,
    /// The deadline, RFC 3339 in UTC.
    pub expires: String,
    /// Seconds from the end of the range to the deadline.
    pub expires_in_seconds: u64,
    /// Allowed connections opened from `from` to `to` over the range.
    pub connections: u64,
    /// Payload bytes of the connections from `from` to `to`, both ways.
    pub bytes: u64,
}

/// One cell, as a client.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cell {
    pub cell: String,
    pub global: bool,
    /// Connections its clients opened, to anywhere.
    pub connections: u64,
    /// Payload bytes of those connections, both ways.
    pub bytes: u64,
    pub containment: Containment,
    /// The services it called.
    pub services: Vec<ServiceDependency>,
    /// The other cells it called.
    pub cells: Vec<CellDependency>,
}

/// Where a cell's connections and bytes went.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Containment {
    pub inside: Share,
    pub global: Share,
    pub other_cells: Share,
    pub external: Share,
}

/// A part of a whole, in connections and in bytes.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Share {
    pub connections: u64,
    pub connections_share: Option<f64>,
    pub bytes: u64,
    pub bytes_share: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceDependency {
    pub service: String,
    /// The cell the service lies in; `null` when no agent names it.
    pub cell: Option<String>,
    /// Connections opened to it, its UDP flows included.
    pub connections: u64,
    /// Of those, the UDP flows (all of them for a service with `protocol: udp`).
    pub flows: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CellDependency {
    pub cell: String,
    pub global: bool,
    pub connections: u64,
    pub bytes: u64,
    /// Boundary violations from the cell to this one (connects against policy, opened or
    /// not): more than 0 makes the pair a leak.
    pub violations: u64,
}

/// A service and its blast radius.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Service {
    pub service: String,
    /// The cell it lies in; `null` when no agent names it.
    pub cell: Option<String>,
    pub global: bool,
    /// Connections its clients opened, UDP flows included: each dependent's and the
    /// external clients' `connections` (and shares) count so too.
    pub connections: u64,
    /// Of those, the UDP flows (all of them for a service with `protocol: udp`).
    pub flows: u64,
    pub bytes: u64,
    /// The cells that called it, most connections first.
    pub dependents: Vec<Dependent>,
    /// Its clients in no cell, when it had any.
    pub external: Option<Share>,
}

/// What a count of calls to a service is made of: TCP connections, UDP flows, or both;
/// the words the outputs give it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Calls {
    Connections,
    Flows,
    Both,
}

impl Calls {
    /// Of a count of `connections` of which `flows` are UDP flows.
    pub(crate) fn of(connections: u64, flows: u64) -> Self {
        match flows {
            0 => Self::Connections,
            f if f >= connections => Self::Flows,
            _ => Self::Both,
        }
    }

    /// In a sentence: `1200 connections`, `30 UDP flows`.
    pub(crate) fn words(self) -> &'static str {
        match self {
            Self::Connections => "connections",
            Self::Flows => "UDP flows",
            Self::Both => "connections and UDP flows",
        }
    }

    /// A table's column.
    pub(crate) fn column(self) -> &'static str {
        match self {
            Self::Connections => "CONNECTIONS",
            Self::Flows => "FLOWS",
            Self::Both => "CONNS+FLOWS",
        }
    }

    /// On a graph's edge or node: `400 conn`, `30 flows`.
    pub(crate) fn short(self) -> &'static str {
        match self {
            Self::Connections => "conn",
            Self::Flows => "flows",
            Self::Both => "conn+flows",
        }
    }
}

impl Service {
    /// What its `connections` are made of.
    pub(crate) fn calls(&self) -> Calls {
        Calls::of(self.connections, self.flows)
    }
}

impl ServiceDependency {
    /// What its `connections` are made of.
    pub(crate) fn calls(&self) -> Calls {
        Calls::of(self.connections, self.flows)
    }
}

/// A cell that called a service, and its part of the service's traffic.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Dependent {
    pub cell: String,
    #[serde(flatten)]
    pub share: Share,
}

/// What an outlier is compared on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Failed connects over all connects.
    ConnectFailures,
    /// The 99th percentile of connect latency, in seconds.
    ConnectP99,
}

/// Where an outlier's connects went.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Destination {
    Service(String),
    Cell(String),
}

/// A cell far worse than the others calling the same destination.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outlier {
    pub cell: String,
    pub destination: Destination,
    pub signal: Signal,
    /// The cell's figure: a ratio, or seconds.
    pub value: f64,
    /// The median of the other cells' figures.
    pub peer_median: f64,
    /// How many other cells were compared.
    pub peers: usize,
    /// The cell's connects to the destination (opened and failed).
    pub connects: u64,
}

/// One client cell's traffic to one destination over the range.
#[derive(Clone, Debug, Default)]
struct Traffic {
    opened: f64,
    /// UDP flows opened (services only): calls, as `opened` is, but no connects.
    flows: f64,
    failed: f64,
    bytes: f64,
    /// Boundary violations (pairs only).
    violations: f64,
    /// Cumulative bucket counts by upper bound.
    latency: Vec<(f64, f64)>,
    /// The same, from native histograms: read instead of the classic buckets when there
    /// are any (the two layouts' bounds differ, so their counts cannot be added), as the
    /// shipped recording rules prefer them.
    native: Vec<(f64, f64)>,
}

impl Traffic {
    fn any(&self) -> bool {
        self.calls() > 0.0 || self.failed > 0.0 || self.bytes > 0.0 || self.violations > 0.0
    }

    /// Connections and UDP flows opened: what a blast radius and a dependency count.
    fn calls(&self) -> f64 {
        self.opened + self.flows
    }

    /// Connects (TCP only: a UDP flow has none to fail), as the outliers compare them.
    fn connects(&self) -> f64 {
        self.opened + self.failed
    }

    fn p99(&self) -> Option<f64> {
        let mut b = if self.native.is_empty() { &self.latency } else { &self.native }.clone();
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
        Hist(b).quantile(0.99)
    }
}

/// (client cell, destination) -> traffic.
type Flows = BTreeMap<(String, String), Traffic>;

/// Adds a series' value to a traffic's field.
type AddTo = fn(&mut Traffic, f64, &Series);

/// A signal, the floor an outlier's figure must be above, and a traffic's figure.
type Compared = (Signal, f64, fn(&Traffic) -> Option<f64>);

/// The families of one kind of destination (`dst_cell` or `service`).
struct Kind {
    label: &'static str,
    opened: Reading,
    /// UDP flows opened, for the services (the pairs' are not read).
    flows: Option<Reading>,
    failed: Reading,
    sent: Reading,
    received: Reading,
    latency: Reading,
    native: Reading,
    /// Boundary violations, for the pairs (services have none of their own).
    violations: Option<Reading>,
}

const PAIRS: Kind = Kind {
    label: "dst_cell",
    opened: Reading::PairOpened,
    flows: None,
    failed: Reading::PairFailed,
    sent: Reading::PairSent,
    received: Reading::PairReceived,
    latency: Reading::PairLatency,
    native: Reading::PairLatencyNative,
    violations: Some(Reading::PairViolations),
};

const SERVICES: Kind = Kind {
    label: "service",
    opened: Reading::ServiceOpened,
    flows: Some(Reading::ServiceFlowsOpened),
    failed: Reading::ServiceFailed,
    sent: Reading::ServiceSent,
    received: Reading::ServiceReceived,
    latency: Reading::ServiceLatency,
    native: Reading::ServiceLatencyNative,
    violations: None,
};

fn flows(answers: &Answers, kind: &Kind) -> Flows {
    let mut flows = Flows::new();
    let series = |f: Reading| answers.get(&f).map(Vec::as_slice).unwrap_or_default();
    let mut fields: Vec<(Reading, AddTo)> = vec![
        (kind.opened, |t, v, _| t.opened += v),
        (kind.failed, |t, v, _| t.failed += v),
        (kind.sent, |t, v, _| t.bytes += v),
        (kind.received, |t, v, _| t.bytes += v),
        (kind.latency, |t, v, s| add_bucket(&mut t.latency, v, s)),
        (kind.native, |t, v, s| add_bucket(&mut t.native, v, s)),
    ];
    if let Some(flows) = kind.flows {
        fields.push((flows, |t, v, _| t.flows += v));
    }
    if let Some(violations) = kind.violations {
        fields.push((violations, |t, v, _| t.violations += v));
    }
    for (family, add) in fields {
        for s in series(family) {
            let (src, dst) = (s.label("src_cell"), s.label(kind.label));
            if src.is_empty() || dst.is_empty() || !s.value.is_finite() {
                continue;
            }
            add(flows.entry((src.to_owned(), dst.to_owned())).or_default(), s.value.max(0.0), s);
        }
    }
    flows
}

/// Adds a bucket series' count (its `le` label the bound) to `buckets`.
fn add_bucket(buckets: &mut Vec<(f64, f64)>, v: f64, s: &Series) {
    let le = match s.label("le") {
        "+Inf" => Some(f64::INFINITY),
        le => le.parse::<f64>().ok(),
    };
    if let Some(le) = le {
        match buckets.iter_mut().find(|(b, _)| b.total_cmp(&le).is_eq()) {
            Some(bucket) => bucket.1 += v,
            None => buckets.push((le, v)),
        }
    }
}

/// What the report would read from the samples of one agent's `/metrics`, without a
/// Prometheus: each [`Reading`]'s series as its query sums them ([`Reading::read`]), each
/// counter with all of its value (everything since the agent started), as a query counts
/// a series that appeared within its range.
pub fn answers_of(samples: &[Sample]) -> Answers {
    let mut answers = Answers::new();
    for reading in Reading::ALL {
        let read = reading.read();
        let mut sums = BTreeMap::<BTreeMap<String, String>, f64>::new();
        for s in samples.iter().filter(|s| takes(read, s) && s.value.is_finite()) {
            let labels = read.by().map(|l| (l.to_owned(), s.label(l).to_owned())).collect();
            let sum = sums.entry(labels).or_insert(0.0);
            // A catalog series is 1 and a deadline is the config's, whichever agent says
            // so: `max`, not `sum`.
            let max = matches!(read, Read::Info(..) | Read::Now(..));
            *sum = if max { sum.max(s.value) } else { *sum + s.value };
        }
        let series: Vec<Series> =
            sums.into_iter().map(|(labels, value)| Series { labels, value }).collect();
        if !series.is_empty() {
            answers.insert(reading, series);
        }
    }
    answers
}

/// Whether a sample of `/metrics` is one of the reading's series.
fn takes(read: Read, s: &Sample) -> bool {
    match read {
        Read::Info(family, _) | Read::Now(family, _) | Read::All(family, _) => s.name == family,
        Read::ClientSide(family, _) => s.name == family && side::counts_sample(s),
        Read::Allowed(family, _) => {
            s.name == family && side::counts_sample(s) && s.label("verdict") == prom::ALLOWED
        }
        Read::Bytes(way, (sent, received), _) => {
            let family = match side::client_bytes(way, s.label("direction")) {
                Way::Sent => sent,
                Way::Received => received,
            };
            s.name == family && side::counts_sample(s)
        }
    }
}

/// A count over a range as a whole number (`increase()` extrapolates), 0 for anything
/// not finite or below 0.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a finite count, clamped at 0 and rounded; u64 saturates beyond 2^64"
)]
pub(crate) fn whole(v: f64) -> u64 {
    if v.is_finite() { v.max(0.0).round() as u64 } else { 0 }
}

fn ratio(part: f64, whole: f64) -> Option<f64> {
    (whole > 0.0).then(|| part / whole)
}

/// The median, as PromQL's `quantile(0.5, ...)`: the middle one, or the mean of the two.
fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

impl Report {
    /// The report over `range` up to `end` (the queries' time, Unix seconds) from
    /// Prometheus' answers.
    pub fn build(range: Range, end: f64, answers: &Answers) -> Result<Self, NoData> {
        let empty = |f: Reading| answers.get(&f).is_none_or(Vec::is_empty);
        if [
            Reading::Cells,
            Reading::PairOpened,
            Reading::ServiceOpened,
            Reading::ServiceFlowsOpened,
        ]
        .into_iter()
        .all(empty)
        {
            return Err(NoData(range));
        }
        let mut notes = Vec::new();
        let (global, home) = catalog(answers);
        if global.is_empty() {
            notes.push(format!(
                "no agent exports {}: global cells are not known, so no connection counts as \
                 going to a global cell",
                f::CELL_INFO
            ));
        }
        let pairs = flows(answers, &PAIRS);
        let services = flows(answers, &SERVICES);

        let mut cell_names: BTreeSet<String> = global.keys().cloned().collect();
        cell_names.extend(pairs.keys().flat_map(|(s, d)| [s.clone(), d.clone()]));
        cell_names.extend(services.keys().map(|(s, _)| s.clone()));
        cell_names.remove(EXTERNAL);
        let is_global = |c: &str| global.get(c).copied().unwrap_or(false);

        let cells = cell_names
            .iter()
            .map(|c| cell(c, is_global(c), &pairs, &services, &home, &is_global))
            .collect();

        let services_out = radii(&services, &home, &is_global);

        let range_seconds = range.seconds();
        let mut found = outliers(&services, range_seconds, Destination::Service);
        found.extend(outliers(&pairs, range_seconds, Destination::Cell));
        found.sort_by(|a, b| {
            (&a.cell, &a.destination, a.signal).cmp(&(&b.cell, &b.destination, b.signal))
        });
        Ok(Self {
            range: range.to_string(),
            range_seconds,
            cells,
            services: services_out,
            outliers: found,
            temporary_rules: temporary_rules(answers, end, &pairs),
            notes,
        })
    }

    /// The blast radius of `service`, if the report has it.
    pub fn service(&self, service: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.service == service)
    }

    /// The cell `cell`, if the report has it.
    pub fn cell(&self, cell: &str) -> Option<&Cell> {
        self.cells.iter().find(|c| c.cell == cell)
    }
}

/// The temporary rules whose deadline is after `end`, the soonest first, each with its
/// flow's allowed connections and bytes.
fn temporary_rules(answers: &Answers, end: f64, pairs: &Flows) -> Vec<TemporaryRule> {
    let mut allowed = BTreeMap::<(&str, &str), f64>::new();
    for s in answers.get(&Reading::PairAllowed).into_iter().flatten() {
        if s.value.is_finite() {
            *allowed.entry((s.label("src_cell"), s.label("dst_cell"))).or_default() += s.value;
        }
    }
    let mut rules: Vec<(f64, TemporaryRule)> = answers
        .get(&Reading::AllowRules)
        .into_iter()
        .flatten()
        .filter(|s| s.value.is_finite() && s.value > end)
        .map(|s| {
            let (from, to) = (s.label("from"), s.label("to"));
            let flow = pairs.get(&(from.to_owned(), to.to_owned()));
            let rule = TemporaryRule {
                from: from.to_owned(),
                to: to.to_owned(),
                reason: s.label("reason").to_owned(),
                expires: rfc3339(s.value),
                expires_in_seconds: whole((s.value - end).floor()),
                connections: whole(allowed.get(&(from, to)).copied().unwrap_or(0.0)),
                bytes: whole(flow.map_or(0.0, |t| t.bytes)),
            };
            (s.value, rule)
        })
        .collect();
    rules.sort_by(|(a, x), (b, y)| {
        a.total_cmp(b).then_with(|| (&x.from, &x.to, &x.reason).cmp(&(&y.from, &y.to, &y.reason)))
    });
    rules.into_iter().map(|(_, r)| r).collect()
}

/// Each service's blast radius from `answers` alone (the report's, without the rest).
pub fn blast_radii(answers: &Answers) -> Vec<Service> {
    let (global, home) = catalog(answers);
    let is_global = |c: &str| global.get(c).copied().unwrap_or(false);
    radii(&flows(answers, &SERVICES), &home, &is_global)
}

/// The catalog: whether each cell is global, and the cell each service lies in.
fn catalog(answers: &Answers) -> (BTreeMap<String, bool>, BTreeMap<String, String>) {
    let mut global = BTreeMap::<String, bool>::new();
    for s in answers.get(&Reading::Cells).into_iter().flatten() {
        if !s.label("cell").is_empty() {
            *global.entry(s.label("cell").to_owned()).or_default() |= s.label("global") == "true";
        }
    }
    let mut home = BTreeMap::<String, String>::new();
    for s in answers.get(&Reading::Services).into_iter().flatten() {
        if !s.label("service").is_empty() && !s.label("cell").is_empty() {
            home.entry(s.label("service").to_owned()).or_insert_with(|| s.label("cell").to_owned());
        }
    }
    (global, home)
}

/// The blast radius of every service the catalog names or a client called, by name.
fn radii(
    services: &Flows,
    home: &BTreeMap<String, String>,
    is_global: &dyn Fn(&str) -> bool,
) -> Vec<Service> {
    let mut names: BTreeSet<String> = home.keys().cloned().collect();
    names.extend(services.keys().map(|(_, s)| s.clone()));
    names
        .iter()
        .map(|s| {
            let cell = home.get(s).cloned();
            let global = cell.as_deref().is_some_and(is_global);
            blast_radius(s, cell, global, services)
        })
        .collect()
}

fn cell(
    name: &str,
    global: bool,
    pairs: &Flows,
    services: &Flows,
    home: &BTreeMap<String, String>,
    is_global: &dyn Fn(&str) -> bool,
) -> Cell {
    let mine = |flows: &'_ Flows| {
        flows
            .iter()
            .filter(move |((s, _), t)| s == name && t.any())
            .map(|((_, d), t)| (d.clone(), t.clone()))
            .collect::<Vec<_>>()
    };
    let out = mine(pairs);
    let (mut conns, mut bytes) = ([0.0; 4], [0.0; 4]);
    for (dst, t) in &out {
        let scope = if dst == name {
            0
        } else if is_global(dst) {
            1
        } else if dst == EXTERNAL {
            3
        } else {
            2
        };
        conns[scope] += t.opened;
        bytes[scope] += t.bytes;
    }
    let (all_conns, all_bytes): (f64, f64) = (conns.iter().sum(), bytes.iter().sum());
    let share = |i: usize| Share {
        connections: whole(conns[i]),
        connections_share: ratio(conns[i], all_conns),
        bytes: whole(bytes[i]),
        bytes_share: ratio(bytes[i], all_bytes),
    };
    Cell {
        cell: name.to_owned(),
        global,
        connections: whole(all_conns),
        bytes: whole(all_bytes),
        containment: Containment {
            inside: share(0),
            global: share(1),
            other_cells: share(2),
            external: share(3),
        },
        services: mine(services)
            .into_iter()
            .map(|(s, t)| ServiceDependency {
                cell: home.get(&s).cloned(),
                service: s,
                connections: whole(t.calls()),
                flows: whole(t.flows),
                bytes: whole(t.bytes),
            })
            .collect(),
        cells: out
            .into_iter()
            .filter(|(d, _)| d != name)
            .map(|(d, t)| CellDependency {
                global: is_global(&d),
                cell: d,
                connections: whole(t.opened),
                bytes: whole(t.bytes),
                violations: whole(t.violations),
            })
            .collect(),
    }
}

fn blast_radius(name: &str, cell: Option<String>, global: bool, services: &Flows) -> Service {
    let callers: Vec<(&String, &Traffic)> = services
        .iter()
        .filter(|((_, s), t)| s == name && t.any())
        .map(|((c, _), t)| (c, t))
        .collect();
    let conns: f64 = callers.iter().map(|(_, t)| t.calls()).sum();
    let flows: f64 = callers.iter().map(|(_, t)| t.flows).sum();
    let bytes: f64 = callers.iter().map(|(_, t)| t.bytes).sum();
    let share = |t: &Traffic| Share {
        connections: whole(t.calls()),
        connections_share: ratio(t.calls(), conns),
        bytes: whole(t.bytes),
        bytes_share: ratio(t.bytes, bytes),
    };
    let mut dependents: Vec<Dependent> = callers
        .iter()
        .filter(|(c, _)| c.as_str() != EXTERNAL)
        .map(|(c, t)| Dependent { cell: (*c).clone(), share: share(t) })
        .collect();
    dependents.sort_by(|a, b| {
        b.share.connections.cmp(&a.share.connections).then(b.share.bytes.cmp(&a.share.bytes))
    });
    Service {
        service: name.to_owned(),
        cell,
        global,
        connections: whole(conns),
        flows: whole(flows),
        bytes: whole(bytes),
        dependents,
        external: callers.iter().find(|(c, _)| c.as_str() == EXTERNAL).map(|(_, t)| share(t)),
    }
}

/// The outliers among the cells calling each destination of `flows`, named by `dest`.
fn outliers(flows: &Flows, seconds: u64, dest: fn(String) -> Destination) -> Vec<Outlier> {
    let min_connects = MIN_CONNECTS_PER_SECOND * seconds as f64;
    let mut by_dst = BTreeMap::<&str, Vec<(&str, &Traffic)>>::new();
    for ((src, dst), t) in flows {
        if src != EXTERNAL && dst != EXTERNAL && t.connects() >= min_connects && t.connects() > 0.0
        {
            by_dst.entry(dst).or_default().push((src, t));
        }
    }
    let mut out = Vec::new();
    for (dst, cells) in by_dst {
        let signals: [Compared; 2] = [
            (Signal::ConnectFailures, FAILURE_RATIO_FLOOR, |t| Some(t.failed / t.connects())),
            (Signal::ConnectP99, P99_FLOOR_SECONDS, Traffic::p99),
        ];
        for (signal, floor, figure) in signals {
            let figures: Vec<(&str, f64, &Traffic)> =
                cells.iter().filter_map(|(c, t)| figure(t).map(|v| (*c, v, *t))).collect();
            for (i, (c, v, t)) in figures.iter().enumerate() {
                let mut others: Vec<f64> =
                    figures.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, o)| o.1).collect();
                let peers = others.len();
                let Some(m) = median(&mut others) else { continue };
                if *v > floor && *v > FACTOR * m {
                    out.push(Outlier {
                        cell: (*c).to_owned(),
                        destination: dest((*dst).to_owned()),
                        signal,
                        value: *v,
                        peer_median: m,
                        peers,
                        connects: whole(t.connects()),
                    });
                }
            }
        }
    }
    out
}
