//! The demo's closing lines: the blast radius of each shared service, from the agent's
//! own `/metrics` (the cells whose clients called it, and their share of its
//! connections), computed as `cellwatch report` computes it from Prometheus
//! ([`agent_view::report::blast_radii`] of the same readings, each connection counted
//! once by the same rule).
#![forbid(unsafe_code)]

use std::fmt::Write as _;

use agent_core::{names::EXTERNAL, promtext::Sample};
use agent_view::report::{self, Service, Share};

/// Each service's blast radius, as the report has it.
pub(crate) fn radius(samples: &[Sample]) -> Vec<Service> {
    report::blast_radii(&report::answers_of(samples))
}

/// `blast radius of ledger (in global): cell-2 62 connections (67%), cell-1 31
/// connections (33%): if it fails, so may they`: the calling cells most connections
/// first, then clients in no cell (`external`).
pub(crate) fn render(list: &[Service]) -> String {
    let mut out = String::new();
    for r in list {
        let cell = r.cell.as_deref().unwrap_or("no known cell");
        let _ = write!(out, "blast radius of {} (in {cell}): ", r.service);
        let callers: Vec<(&str, &Share)> = r
            .dependents
            .iter()
            .map(|d| (d.cell.as_str(), &d.share))
            .chain(r.external.as_ref().map(|e| (EXTERNAL, e)))
            .collect();
        if callers.is_empty() {
            out.push_str("no cell called it\n");
            continue;
        }
        let parts: Vec<String> = callers
            .iter()
            .map(|(cell, share)| {
                let n = share.connections;
                let part = if r.connections > 0 {
                    format!("{:.0}%", 100.0 * n as f64 / r.connections as f64)
                } else {
                    "-".to_owned()
                };
                format!("{cell} {n} connections ({part})")
            })
            .collect();
        let _ = writeln!(out, "{}: if it fails, so may they", parts.join(", "));
    }
    out
}

#[cfg(test)]
mod tests;
