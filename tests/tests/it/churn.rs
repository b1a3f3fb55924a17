//! The churn benchmark's load, counted: for each path (allowed, violation), close (FIN,
//! RST) and mode (audit, enforce), N connections are N opened and N closed on both ends,
//! with their byte each way, and N violations on the violation path. Each combination
//! has an agent of its own, one after the other.
use std::time::Duration;

use cellwatch_tests::{
    Agent, AgentOpts,
    churn::{Close, churn},
    ranges::CHURN,
    scrape_until,
};

const N: usize = 300;

/// cell-a (allowed to call cell-b), cell-c (not), cell-b (the server). Enforce mode
/// applies to cell-a only, so the violation path is judged but not refused.
fn config(mode: &str) -> String {
    format!(
        "cells:\n  - {{ name: cell-a, cidrs: [\"{}\"] }}\n  - {{ name: cell-c, cidrs: [\"{}\"] }}\n  \
         - {{ name: cell-b, cidrs: [\"{}\"] }}\nallow:\n  - {{ from: cell-a, to: cell-b }}\n\
         mode: {mode}\nenforce_cells: [cell-a]\n",
        CHURN.cidr(0),
        CHURN.cidr(1),
        CHURN.cidr(2)
    )
}

fn counted_exactly(mode: &str, violation: bool, close: Close) {
    let agent = Agent::start(AgentOpts { config: Some(&config(mode)), ..AgentOpts::default() });
    let (client, src) =
        if violation { (CHURN.ip(1, 0, 1), "cell-c") } else { (CHURN.ip(0, 0, 1), "cell-a") };
    churn(client, CHURN.ip(2, 0, 1), N, close, Duration::from_secs(60)).expect("the churn");
    let verdict = if violation { "violation" } else { "allowed" };
    let pdv =
        |dir| [("src_cell", src), ("dst_cell", "cell-b"), ("direction", dir), ("verdict", verdict)];
    let pd = |dir| [("src_cell", src), ("dst_cell", "cell-b"), ("direction", dir)];
    let n = N as f64;
    let m = scrape_until(&agent, |m| {
        ["egress", "ingress"]
            .iter()
            .all(|d| m.get("cellwatch_connections_closed_total", &pdv(d)) == n)
    });
    let what = format!("{mode}, {verdict} path, {} close", close.label());
    for dir in ["egress", "ingress"] {
        for family in ["cellwatch_connections_opened_total", "cellwatch_connections_closed_total"] {
            assert_eq!(m.get(family, &pdv(dir)), n, "{what}: {family} {dir}");
        }
        assert_eq!(m.get("cellwatch_connections_active", &pd(dir)), 0.0, "{what}: {dir}");
        assert_eq!(m.get("cellwatch_bytes_sent_total", &pd(dir)), n, "{what}: sent {dir}");
        assert_eq!(m.get("cellwatch_bytes_received_total", &pd(dir)), n, "{what}: received {dir}");
        let violations = m.get("cellwatch_boundary_violations_total", &pd(dir));
        assert_eq!(violations, if violation { n } else { 0.0 }, "{what}: violations {dir}");
    }
    assert_eq!(m.get("cellwatch_events_lost_total", &[("source", "conn_table_full")]), 0.0);
}

/// One test, the combinations one after the other: they share the area's cells, and
/// an agent counts whatever touches them.
#[test]
fn every_path_close_and_mode_counts_exactly() {
    for mode in ["audit", "enforce"] {
        for violation in [false, true] {
            for close in [Close::Fin, Close::Rst] {
                counted_exactly(mode, violation, close);
            }
        }
    }
}
