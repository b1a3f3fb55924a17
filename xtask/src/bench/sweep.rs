//! `cargo xtask bench sweep`: the live sweep's CPU by mechanism, side by side in one run:
//! the iterator over the connection storage (every namespace in one walk) and the TCP
//! iterator run in each network namespace (`--without sk_storage_iter`, the fallback), at
//! 10,000 and 100,000 tracked sockets (5,000 and 50,000 loopback connections held, both
//! ends on this node), and the TCP walk's cost per network namespace entered.
use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use cellwatch_tests::ranges::HARNESS;

use super::{
    harness::{agent_build, start_agent},
    record,
    scale::{Held, cpu_seconds, gauge_sum},
};
use crate::util::{ok, step};

/// The sweep interval while measuring: short, so a window holds many sweeps.
const INTERVAL_MS: u64 = 1000;

/// The two mechanisms: their name in the table and the agent's extra arguments.
const MECHANISMS: [(&str, &[&str]); 2] = [
    ("socket-storage iterator (`sk_storage_iter`)", &[]),
    (
        "TCP iterator in each namespace (`--without sk_storage_iter`)",
        &["--without", "sk_storage_iter"],
    ),
];

/// Idle network namespaces made for the per-namespace row (`ip netns add`), removed after.
const NAMESPACES: usize = 100;

pub(crate) fn sweep(smoke: bool) -> Result<()> {
    let bin = agent_build(smoke)?;
    let held: &[usize] = if smoke { &[500] } else { &[5_000, 50_000] };
    let window = Duration::from_secs(if smoke { 3 } else { 20 });
    let rounds = if smoke { 1 } else { 2 };
    let mut rows = String::from(
        "| mechanism | connections held (tracked sockets) | agent CPU, share of one core at a 1 s interval | CPU per sweep | per tracked socket | at the default 10 s interval |\n\
         |---|---|---|---|---|---|\n",
    );
    for &n in held {
        // The mechanisms in turn, `rounds` times, so drift on a noisy machine hits both.
        let mut results: Vec<Vec<f64>> = vec![Vec::new(); MECHANISMS.len()];
        for round in 0..rounds {
            for (i, (name, args)) in MECHANISMS.iter().enumerate() {
                step(&format!("{n} connections held, {name}, round {}", round + 1));
                results[i].push(measure(&bin, n, args, window)?);
            }
        }
        for (i, (name, _)) in MECHANISMS.iter().enumerate() {
            rows.push_str(&row(name, n, &results[i], window));
        }
    }
    step(&format!("{NAMESPACES} idle network namespaces, no connection held"));
    let spaces = Namespaces::make(if smoke { 5 } else { NAMESPACES })?;
    let mut ns_rows = String::from(
        "| mechanism | network namespaces | agent CPU, share of one core at a 1 s interval | CPU per sweep |\n|---|---|---|---|\n",
    );
    for (name, args) in MECHANISMS {
        let share = measure(&bin, 0, args, window)?;
        let per_sweep = share * INTERVAL_MS as f64;
        ns_rows.push_str(&format!(
            "| {name} | {} idle ones made, beside the node's own | {:.2}% | {per_sweep:.2} ms |\n",
            spaces.0.len(),
            share * 100.0
        ));
    }
    drop(spaces);
    ok(&rows);
    ok(&ns_rows);
    if smoke {
        ok("smoke run done (nothing recorded)");
        return Ok(());
    }
    let section = format!(
        "### Live sweep by mechanism\n\n\
         `cargo xtask bench sweep`. Connections held open from cell-a to cell-b by three \
         helper processes on loopback (so each is two tracked sockets), the agent at \
         `--live-interval 1s`, its CPU (user and system: the kernel iterator runs in the \
         agent's read) over {} s; {rounds} fresh agents per mechanism, taken in turn, median \
         [min, max]. The last column is the share of one core at the default interval \
         (10 s), a tenth of the measured one.\n\n{rows}\n\
         The TCP walk visits every TCP socket of each namespace (tracked or not, listeners \
         included) and enters each namespace on a thread of its own; with idle namespaces \
         and no connection, what a sweep costs the agent (the second row is mostly the \
         entering, one `setns` and one iterator run per namespace):\n\n{ns_rows}",
        window.as_secs()
    );
    record::update("sweep", &section)?;
    ok("BENCHMARKS.md updated");
    Ok(())
}

/// A fresh agent with `held` connections open: its CPU share of one core over `window`.
fn measure(bin: &Path, held: usize, args: &[&str], window: Duration) -> Result<f64> {
    let cfg = format!(
        "cells:\n  - {{ name: cell-a, cidrs: [127.190.0.0/16] }}\n  - {{ name: cell-b, cidrs: [127.191.0.0/16] }}\n\
         ignore_cidrs: [{}]\n",
        HARNESS.cidr(0)
    );
    let interval = format!("{INTERVAL_MS}ms");
    let mut all = vec!["--conn-capacity", "262144", "--live-interval", &interval];
    all.extend_from_slice(args);
    let agent = start_agent(bin, &cfg, &all)?;
    let _held = Held::open(held)?;
    // Past the first sweeps after the opening.
    std::thread::sleep(Duration::from_millis(3 * INTERVAL_MS));
    let tracked = gauge_sum(agent.port, "cellwatch_connections_active")?;
    if tracked < (2 * held) as f64 {
        bail!("{tracked} sockets tracked, {} expected", 2 * held);
    }
    let cpu0 = cpu_seconds(agent.pid())?;
    let t = Instant::now();
    std::thread::sleep(window);
    let share = (cpu_seconds(agent.pid())? - cpu0) / t.elapsed().as_secs_f64();
    Ok(share)
}

/// A table row of one mechanism at `held` connections: median [min, max] of the shares.
fn row(name: &str, held: usize, shares: &[f64], window: Duration) -> String {
    let mut s = shares.to_vec();
    s.sort_by(f64::total_cmp);
    let med = s[s.len() / 2];
    let sweeps = window.as_millis() as f64 / INTERVAL_MS as f64;
    let per_sweep_ms = med * window.as_secs_f64() * 1e3 / sweeps;
    let per_socket_ns = per_sweep_ms * 1e6 / (2 * held) as f64;
    format!(
        "| {name} | {held} ({}) | {:.2}% [{:.2}, {:.2}] | {per_sweep_ms:.1} ms | {per_socket_ns:.0} ns | {:.2}% |\n",
        2 * held,
        med * 100.0,
        s[0] * 100.0,
        s[s.len() - 1] * 100.0,
        med * 10.0,
    )
}

/// Idle network namespaces, removed when dropped.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn make(n: usize) -> Result<Self> {
        let mut me = Self(Vec::new());
        for i in 0..n {
            let name = format!("cw-bench-sweep-{}-{i}", std::process::id());
            let ok = Command::new("ip").args(["netns", "add", &name]).status()?.success();
            if !ok {
                bail!("ip netns add {name} failed");
            }
            me.0.push(name);
        }
        Ok(me)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}
