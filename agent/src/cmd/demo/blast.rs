//! The demo's closing lines: the blast radius of each shared service, from the agent's
//! own `/metrics` (the cells whose clients called it, and their share of its
//! connections), as `cellwatch report` gives it from Prometheus: each connection counted
//! once by the same rule ([`agent_view::side`]).
#![forbid(unsafe_code)]

use std::{collections::BTreeMap, fmt::Write as _};

use agent_core::{metrics::families as f, promtext::Sample};
use agent_view::side;

/// One service: the cell it lies in, and its callers with their connections, most first.
#[derive(Debug, PartialEq)]
pub(crate) struct Radius {
    pub(crate) service: String,
    pub(crate) cell: String,
    pub(crate) callers: Vec<(String, u64)>,
}

/// Each configured service's callers, client side (each connection once).
pub(crate) fn radius(samples: &[Sample]) -> Vec<Radius> {
    let mut out: BTreeMap<String, Radius> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == f::SERVICE_INFO) {
        let service = s.label("service").to_owned();
        let cell = s.label("cell").to_owned();
        out.insert(service.clone(), Radius { service, cell, callers: Vec::new() });
    }
    let mut calls: BTreeMap<(String, String), u64> = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.name == f::SERVICE_CONNECTIONS_OPENED_TOTAL && side::counts_sample(s))
    {
        // Counter values are whole numbers below 2^53.
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a count")]
        let n = s.value as u64;
        *calls
            .entry((s.label("service").to_owned(), s.label("src_cell").to_owned()))
            .or_default() += n;
    }
    for ((service, cell), n) in calls {
        if let Some(r) = out.get_mut(&service)
            && n > 0
        {
            r.callers.push((cell, n));
        }
    }
    let mut list: Vec<Radius> = out.into_values().collect();
    for r in &mut list {
        r.callers.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    }
    list
}

/// `blast radius of ledger (in global): cell-2 62 connections (67%), cell-1 31 (33%)`.
pub(crate) fn render(list: &[Radius]) -> String {
    let mut out = String::new();
    for r in list {
        let total: u64 = r.callers.iter().map(|(_, n)| n).sum();
        let _ = write!(out, "blast radius of {} (in {}): ", r.service, r.cell);
        if total == 0 {
            out.push_str("no cell called it\n");
            continue;
        }
        let parts: Vec<String> = r
            .callers
            .iter()
            .map(|(cell, n)| {
                format!("{cell} {n} connections ({:.0}%)", 100.0 * *n as f64 / total as f64)
            })
            .collect();
        let _ = writeln!(out, "{}: if it fails, so may they", parts.join(", "));
    }
    out
}

#[cfg(test)]
mod tests;
