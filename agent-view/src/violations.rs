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
mod tests {
    use super::*;

    fn violation(t: f64, src: &str, dst: &str, dir: &str, pid: Option<u32>) -> Violation {
        Violation {
            time: t,
            src: End { cell: src.into(), addr: "127.0.0.1".parse().unwrap(), port: 40_000 },
            dst: End { cell: dst.into(), addr: "::1".parse().unwrap(), port: 80 },
            direction: dir.into(),
            pid,
            comm: pid.map(|_| "curl".to_owned()),
            denied: false,
        }
    }

    #[test]
    fn newest_violation_per_pair_prefers_the_client_side() {
        let events = vec![
            violation(10.0, "c3", "c2", "ingress", None),
            violation(10.0, "c3", "c2", "egress", Some(7)),
            violation(9.0, "c1", "c3", "egress", Some(8)),
            violation(8.0, "c3", "c2", "egress", Some(9)),
            violation(7.0, "c1", "c3", "ingress", None),
        ];
        let l = latest_per_pair(&events, None, 5);
        assert_eq!(l.len(), 2);
        assert_eq!((l[0].src.cell.as_str(), l[0].pid), ("c3", Some(7)));
        assert_eq!((l[1].src.cell.as_str(), l[1].pid), ("c1", Some(8)));
        assert_eq!(latest_per_pair(&events, Some("c1"), 5).len(), 1);
        assert_eq!(latest_per_pair(&events, None, 1).len(), 1);
        let line = violation_line(l[0], 13.0);
        assert_eq!(line, "  3s ago  c3 -> c2  curl[7]  127.0.0.1:40000 -> [::1]:80");
        let denied = Violation { denied: true, ..violation(0.0, "a", "b", "egress", None) };
        assert!(violation_line(&denied, 7200.0).contains("2h ago  a -> b  -  "));
        assert!(violation_line(&denied, 0.0).ends_with("(refused: enforce mode)"));
        // A process that names itself with escape sequences erases nothing on screen.
        let rogue = Violation {
            comm: Some("\u{1b}[2J\u{1b}[Hok\r".to_owned()),
            ..violation(0.0, "a", "b", "egress", Some(7))
        };
        let shown = violation_line(&rogue, 0.0);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(shown.contains("\\u{1b}[2J\\u{1b}[Hok\\r[7]"), "{shown}");
    }

    #[test]
    fn violations_parse_from_the_endpoint_body() {
        let body = r#"[{"time":1.5,"src":{"cell":"a","addr":"127.0.0.1","port":1},
            "dst":{"cell":"b","addr":"127.0.0.2","port":2},"direction":"egress","pid":3,
            "comm":"x","cgroup_id":null,"cgroup":null,"container_id":null,"pod_uid":null,
            "cookie":9,"denied":false}]"#;
        let v = parse_violations(body).unwrap();
        assert_eq!((v[0].pid, v[0].dst.port, v[0].denied), (Some(3), 2, false));
        assert!(parse_violations("{}").is_err());
    }
}
