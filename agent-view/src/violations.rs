//! `/violations` as `top` and the demo show it: the events parsed, the newest violation
//! per cell pair (the client's side preferred), and one line per violation.

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
};

use serde::Deserialize;

use crate::{format::printable, side::EGRESS, top::matches};

/// One end of a violation, as `/violations` serves it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct End {
    pub cell: String,
    pub addr: IpAddr,
    pub port: u16,
}

/// A violation as `/violations` serves it (the fields the view shows).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Violation {
    /// Seconds since the Unix epoch.
    pub time: f64,
    /// The client.
    pub src: End,
    /// The server.
    pub dst: End,
    pub direction: String,
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub comm: Option<String>,
    #[serde(default)]
    pub denied: bool,
}

/// `/violations` that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("/violations is not the list of violations cellwatch serves: {0}")]
pub struct BadViolations(#[from] serde_json::Error);

/// Parses the body of `GET /violations`.
pub fn parse_violations(json: &str) -> Result<Vec<Violation>, BadViolations> {
    Ok(serde_json::from_str(json)?)
}

/// The newest violation of each cell pair (at most `n` pairs, newest first) among
/// `events` (newest first, as served), keeping only pairs with `cell` at an end. Both
/// sockets of a connection on this node report it; a pair's line prefers the client's
/// (egress) event, which names the process that connected.
pub fn latest_per_pair<'a>(
    events: &'a [Violation],
    cell: Option<&str>,
    n: usize,
) -> Vec<&'a Violation> {
    let mut out: Vec<&Violation> = Vec::new();
    for v in events.iter().filter(|v| matches(&v.src.cell, &v.dst.cell, cell)) {
        let same = |w: &&Violation| w.src.cell == v.src.cell && w.dst.cell == v.dst.cell;
        match out.iter().position(same) {
            Some(i) if out[i].direction != EGRESS && v.direction == EGRESS => out[i] = v,
            Some(_) => {}
            None => out.push(v),
        }
    }
    out.truncate(n);
    out
}

/// `3s`, `4m`, `2h`, `5d`.
fn fmt_age(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 60.0 {
        format!("{s:.0}s")
    } else if s < 3600.0 {
        format!("{:.0}m", s / 60.0)
    } else if s < 86_400.0 {
        format!("{:.0}h", s / 3600.0)
    } else {
        format!("{:.0}d", s / 86_400.0)
    }
}

/// One violation as a line: age, pair, process, addresses, and whether enforce mode
/// refused it. `now` is seconds since the Unix epoch.
pub fn violation_line(v: &Violation, now: f64) -> String {
    let process = match (&v.comm, v.pid) {
        (Some(c), Some(p)) => format!("{c}[{p}]"),
        (None, Some(p)) => format!("pid {p}"),
        (Some(c), None) => c.clone(),
        (None, None) => "-".to_owned(),
    };
    let mut line = format!(
        "{:>4} ago  {} -> {}  {}  {} -> {}",
        fmt_age(now - v.time),
        v.src.cell,
        v.dst.cell,
        process,
        SocketAddr::new(v.src.addr, v.src.port),
        SocketAddr::new(v.dst.addr, v.dst.port),
    );
    if v.denied {
        let _ = write!(line, "  (refused: enforce mode)");
    }
    printable(&line)
}

#[cfg(test)]
mod tests;
