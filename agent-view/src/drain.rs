//! `cellwatch drain-status`'s model, with no network: whether a drained cell is empty
//! yet. The answers of a Prometheus (one instant query per [`Query`], all at one time)
//! become a [`Status`]: the drain's start, the connections opened into the cell over the
//! window by client cell (and the connects refused), and the connections still open by
//! node, process and container; written as text or JSON.
//!
//! - **Empty** means nothing new over the window and nothing open: no client cell opened
//!   more than [`NEW_ABOVE`] connections into it (`increase()` extrapolates; a counter
//!   that first appeared within the window counts all of its value, as the report counts
//!   it), no connection into it is open and no process holds one.
//! - **Each connection once**: a connection is counted on both of its sockets when both
//!   ends run an agent (the client's `egress`, the server's `ingress`). Per client cell,
//!   the larger of the two sides counts: the same as the report's rule when every node runs
//!   an agent, and no connection missed when a client's node runs none.
//! - **Not drained** ([`NotDrained`]): no agent exports the drain's start for the cell.
#![forbid(unsafe_code)]

#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, fmt::Write as _};

use agent_core::{metrics::families as f, names::is_cell_name};
use serde::Serialize;

use crate::{
    format::{Table, fmt_span, printable, rfc3339},
    report::{Range, Series, counted, whole},
};

/// The increase over the window above which a client cell opened connections.
pub const NEW_ABOVE: f64 = 0.5;

/// A cell name from the command line: the config's rule, so it can stand in a PromQL
/// string as it is.
pub fn cell_name(s: &str) -> Result<String, String> {
    if is_cell_name(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{}` is not a cell name: lower-case letters, digits and `-`, starting and ending \
             with a letter or digit",
            printable(s)
        ))
    }
}

/// One thing drain-status reads, as one instant query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Query {
    /// The drain's start (`cell`).
    Start,
    /// Connections opened over the window, per (`src_cell`, `direction`).
    Opened,
    /// Connects refused over the window, per `src_cell`.
    Refused,
    /// Open connections per (`instance`, `src_cell`, `comm`, `container`), the ones above 0.
    Holdouts,
    /// Open connections, per (`src_cell`, `direction`).
    Active,
}

impl Query {
    pub const ALL: [Query; 5] =
        [Self::Start, Self::Opened, Self::Refused, Self::Holdouts, Self::Active];

    /// The PromQL of this query for `cell` (a [`cell_name`]) over `window`. What the cell's
    /// own clients open into it is its work finishing, not traffic the drain should have
    /// moved: left out, as the drain alerts leave it out.
    pub fn promql(self, cell: &str, window: Range) -> String {
        let of = |family: &str| format!("{family}{{cell=\"{cell}\",src_cell!=\"{cell}\"}}");
        let w = window.promql();
        match self {
            Self::Start => {
                format!("min by (cell) ({}{{cell=\"{cell}\"}})", f::DRAIN_START_TIMESTAMP_SECONDS)
            }
            Self::Opened => {
                let opened = counted(&of(f::DRAIN_CONNECTIONS_OPENED_TOTAL), &w);
                format!("sum by (src_cell, direction) ({opened})")
            }
            Self::Refused => {
                let refused = counted(&of(f::DRAIN_CONNECTIONS_REFUSED_TOTAL), &w);
                format!("sum by (src_cell) ({refused})")
            }
            Self::Holdouts => format!(
                "sum by (instance, src_cell, comm, container) ({}) > 0",
                of(f::DRAIN_HOLDOUTS)
            ),
            Self::Active => {
                format!("sum by (src_cell, direction) ({})", of(f::DRAIN_CONNECTIONS_ACTIVE))
            }
        }
    }
}

/// Each query's series, as Prometheus answered.
pub type Answers = BTreeMap<Query, Vec<Series>>;

/// No agent exports the drain's start for the cell.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "no {start}{{cell=\"{cell}\"}}: {cell} is not drained, or no agent that drains it is \
     scraped",
    start = f::DRAIN_START_TIMESTAMP_SECONDS
)]
pub struct NotDrained {
    pub cell: String,
}

/// Whether a drained cell is empty, and what is still in it. Counts are whole numbers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Status {
    pub cell: String,
    /// The drain's start, RFC 3339 in UTC.
    pub drained_since: String,
    pub window_seconds: u64,
    /// Connections opened into the cell over the window, by client cell, most first.
    pub new_connections: Vec<Count>,
    /// Connects into the cell that `drain: refuse` refused over the window, by client cell.
    pub refused: Vec<Count>,
    /// The processes that hold connections into the cell open, most first.
    pub holdouts: Vec<Holdout>,
    /// Connections into the cell open now.
    pub active: u64,
    pub empty: bool,
    /// The window, for the text.
    #[serde(skip)]
    pub window: Range,
    /// Seconds since the drain's start (negative: it starts later).
    #[serde(skip)]
    pub age_seconds: i64,
}

/// What a client cell did over the window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Count {
    pub src_cell: String,
    pub count: u64,
}

/// A client process, on one node, with connections into the drained cell open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Holdout {
    /// The node: the Prometheus target of its agent.
    pub instance: String,
    pub comm: String,
    /// The 12-hex container id, or `host`.
    pub container: String,
    pub src_cell: String,
    pub connections: u64,
}

impl Status {
    /// The status of `cell` over `window` from Prometheus' answers at `now` (Unix seconds).
    pub fn build(
        cell: &str,
        window: Range,
        now: f64,
        answers: &Answers,
    ) -> Result<Self, NotDrained> {
        let series = |q: Query| answers.get(&q).map(Vec::as_slice).unwrap_or_default();
        let start = series(Query::Start)
            .iter()
            .map(|s| s.value)
            .filter(|v| v.is_finite())
            .reduce(f64::max)
            .ok_or_else(|| NotDrained { cell: cell.to_owned() })?;
        let new_connections = counts(&one_side(series(Query::Opened)));
        let refused = counts(&one_side(series(Query::Refused)));
        let holdouts = holdouts(series(Query::Holdouts));
        let active = whole(one_side(series(Query::Active)).values().sum());
        let empty = new_connections.is_empty() && holdouts.is_empty() && active == 0;
        Ok(Self {
            cell: cell.to_owned(),
            drained_since: rfc3339(start),
            window_seconds: window.seconds(),
            new_connections,
            refused,
            holdouts,
            active,
            empty,
            window,
            age_seconds: seconds_between(start, now),
        })
    }
}

/// Per client cell, the larger of its sides' sums (see the module doc); the series of a
/// query without `direction` are one side.
fn one_side(series: &[Series]) -> BTreeMap<String, f64> {
    let mut sides = BTreeMap::<(&str, &str), f64>::new();
    // A series without `src_cell` still counts (for an empty cell, most of all), apart.
    for s in series.iter().filter(|s| s.value.is_finite()) {
        *sides.entry((s.label("src_cell"), s.label("direction"))).or_default() += s.value;
    }
    let mut out = BTreeMap::<String, f64>::new();
    for ((src, _), v) in sides {
        let most = out.entry(src.to_owned()).or_insert(0.0);
        *most = most.max(v);
    }
    out
}

/// The client cells above [`NEW_ABOVE`], rounded, most first.
fn counts(by_src: &BTreeMap<String, f64>) -> Vec<Count> {
    let mut out: Vec<Count> = by_src
        .iter()
        .filter(|(_, v)| **v > NEW_ABOVE)
        .map(|(src, v)| Count { src_cell: src.clone(), count: whole(*v) })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.src_cell.cmp(&b.src_cell)));
    out
}

fn holdouts(series: &[Series]) -> Vec<Holdout> {
    let mut out: Vec<Holdout> = series
        .iter()
        .filter(|s| s.value.is_finite() && s.value > NEW_ABOVE)
        .map(|s| Holdout {
            instance: s.label("instance").to_owned(),
            comm: s.label("comm").to_owned(),
            container: s.label("container").to_owned(),
            src_cell: s.label("src_cell").to_owned(),
            connections: whole(s.value),
        })
        .collect();
    out.sort_by(|a, b| {
        b.connections.cmp(&a.connections).then_with(|| {
            (&a.instance, &a.comm, &a.container, &a.src_cell).cmp(&(
                &b.instance,
                &b.comm,
                &b.container,
                &b.src_cell,
            ))
        })
    });
    out
}

/// Whole seconds from `from` to `to`.
#[expect(clippy::cast_possible_truncation, reason = "a finite span, saturating")]
fn seconds_between(from: f64, to: f64) -> i64 {
    let d = (to - from).floor();
    if d.is_finite() { d as i64 } else { 0 }
}

/// `1 connection`, `2 connections`.
fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 { format!("1 {one}") } else { format!("{n} {many}") }
}

impl Status {
    /// The status for people.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let age = match u64::try_from(self.age_seconds) {
            Ok(secs) => format!("{} ago", fmt_span(secs)),
            Err(_) => format!("in {}", fmt_span(self.age_seconds.unsigned_abs())),
        };
        let _ = writeln!(out, "{} drained since {} ({age})", self.cell, self.drained_since);
        self.text_counts(&mut out, "NEW CONNECTIONS into", &self.new_connections);
        if !self.refused.is_empty() {
            self.text_counts(&mut out, "REFUSED connects (drain: refuse) into", &self.refused);
        }
        self.text_holdouts(&mut out);
        let _ = writeln!(out, "\n{}", self.verdict());
        out
    }

    fn text_counts(&self, out: &mut String, what: &str, counts: &[Count]) {
        let _ =
            writeln!(out, "\n{what} {} over the last {}, by client cell", self.cell, self.window);
        if counts.is_empty() {
            out.push_str("  (none)\n");
            return;
        }
        let rows: Vec<Vec<String>> =
            counts.iter().map(|c| vec![c.src_cell.clone(), c.count.to_string()]).collect();
        out.push_str(&Table::new("  ", &["SRC CELL", "CONNECTIONS"], &[false, true]).render(&rows));
    }

    fn text_holdouts(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\nOPEN CONNECTIONS into {}: {}; the client processes holding them",
            self.cell, self.active
        );
        if self.holdouts.is_empty() {
            out.push_str("  (none)\n");
        } else {
            let rows: Vec<Vec<String>> = self
                .holdouts
                .iter()
                .map(|h| {
                    vec![
                        printable(&h.instance),
                        printable(&h.comm),
                        printable(&h.container),
                        h.src_cell.clone(),
                        h.connections.to_string(),
                    ]
                })
                .collect();
            let header = ["NODE", "PROCESS", "CONTAINER", "SRC CELL", "CONNECTIONS"];
            let numeric = [false, false, false, false, true];
            out.push_str(&Table::new("  ", &header, &numeric).render(&rows));
        }
        let named: u64 = self.holdouts.iter().map(|h| h.connections).sum();
        if self.active > named {
            let _ = writeln!(
                out,
                "  (and {} not named: each agent names its 20 busiest client processes, on its \
                 own node)",
                self.active - named
            );
        }
    }

    /// The last line: `cell-b is empty: ...`, or `cell-b is not empty: ...`.
    pub fn verdict(&self) -> String {
        if self.empty {
            return format!(
                "{} is empty: no new connection over the last {}, none open",
                self.cell, self.window
            );
        }
        let new: u64 = self.new_connections.iter().map(|c| c.count).sum();
        let processes = self.holdouts.len() as u64;
        let mut why = Vec::new();
        if new > 0 {
            why.push(format!(
                "{} over the last {}",
                plural(new, "new connection", "new connections"),
                self.window
            ));
        }
        if self.active > 0 || processes > 0 {
            let open = plural(self.active, "connection", "connections");
            why.push(match processes {
                0 => format!("{open} open"),
                n => format!("{open} open ({} holding them)", plural(n, "process", "processes")),
            });
        }
        format!("{} is not empty: {}", self.cell, why.join(", "))
    }

    /// The status as pretty JSON.
    pub fn json(&self) -> Result<String, serde_json::Error> {
        Ok(format!("{}\n", serde_json::to_string_pretty(self)?))
    }
}
