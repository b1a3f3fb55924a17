//! `cargo xtask bench churn`: loopback connection churn between two cells (connect, one
//! byte each way, close) on four paths: allowed or violation, closed with FIN or RST.
//! Each path runs with no agent, with cellwatch in audit and in enforce mode, optionally
//! with an earlier cellwatch build (`--baseline`), and with `tcplife` (Debian's
//! libbpf-tools) as a peer tracing the same connections. Runs are interleaved; each figure
//! is connections per second as a ratio to no agent. During the runs,
//! `kernel.bpf_stats_enabled` gives each program's cost; one more run per path with
//! `--profile-kernel` splits the sock_ops program's time by op.
use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result};
use cellwatch_tests::{
    churn::{Close, churn as make_churn},
    prog_ids_of, scrape_until,
};

use super::{
    harness::{
        Beside, Bins, BpfStats, CLIENT, SERVER, VIOLATOR, Variant, interleaved, ratio_table,
        start_agent,
    },
    record,
    stats::{median, min_max},
};
use crate::util::{ok, step};

/// One path through the agent: whose connections, closed how.
#[derive(Clone, Copy)]
struct Path {
    violation: bool,
    close: Close,
}

impl Path {
    const ALL: [Self; 4] = [
        Self { violation: false, close: Close::Fin },
        Self { violation: false, close: Close::Rst },
        Self { violation: true, close: Close::Fin },
        Self { violation: true, close: Close::Rst },
    ];

    fn label(self) -> String {
        let what = if self.violation { "violation" } else { "allowed" };
        format!("{what}, {} close", self.close.label())
    }

    fn client(self) -> Ipv4Addr {
        if self.violation { VIOLATOR } else { CLIENT }
    }
}

/// `smoke`: one short run of each variant and path, nothing written (CI keeps the code
/// working).
pub(crate) fn churn(smoke: bool, baseline: Option<PathBuf>) -> Result<()> {
    let (runs, conns) = if smoke { (1, 300) } else { (5, 20_000) };
    let bins = Bins::get(smoke, baseline)?;
    let variants = bins.variants();
    let _stats = BpfStats::enable()?;
    let mut out = String::new();
    let mut summary = String::from(
        "| path | variant | connections/s, ratio to no agent | kernel µs per connection (both ends) |\n|---|---|---|---|\n",
    );
    for path in Path::ALL {
        step(&format!(
            "churn, {}: {conns} connections per run, {runs} runs of each variant, interleaved",
            path.label()
        ));
        let mut costs: Vec<Vec<ProgCost>> = vec![Vec::new(); variants.len()];
        let rates = interleaved(
            runs,
            &bins,
            &variants,
            |i, beside| {
                let before = prog_costs(beside)?;
                let rate = load(path, conns)?;
                let after = prog_costs(beside)?;
                costs[i].extend(diff(&before, &after, conns));
                Ok(rate)
            },
            |r| format!("{r:>8.0} connections/s"),
        )?;
        let ops = profile(&bins, path, conns)?;
        if smoke {
            continue;
        }
        let base = median(&rates[0]);
        for (i, v) in variants.iter().enumerate().skip(1) {
            let kernel: f64 = per_program(&costs[i]).iter().map(|p| p.ns_per_conn).sum();
            let _ = writeln!(
                summary,
                "| {} | {} | {:.3} | {:.2} |",
                path.label(),
                v.label(),
                median(&rates[i]) / base,
                kernel / 1000.0
            );
        }
        let _ = write!(
            out,
            "#### {}\n\n{}\nKernel time per program (`kernel.bpf_stats_enabled`, median over the runs; every \
             connection on the machine during a run counts, both ends of each of ours among them):\n\n{}\n\
             The sock_ops program by op (one more audit run of {conns} connections with \
             `--profile-kernel`, which adds two clock reads to every run):\n\n{}\n",
            path.label(),
            ratio_table("connections/s", &variants, &rates, 0),
            program_table(&variants, &costs),
            op_table(&ops, conns),
        );
    }
    if smoke {
        ok("smoke run done (nothing recorded)");
        return Ok(());
    }
    let section = format!(
        "### Connection churn between two cells\n\n\
         `cargo xtask bench churn --baseline <earlier agent binary>`: {conns} loopback connections \
         per run, one byte each way, from cell-a to cell-b (allowed by a rule, so the whole \
         verdict path runs) or from cell-c to cell-b (a violation: no rule allows it), closed \
         with FIN (the server first) or RST (the client aborts). One client thread, {runs} runs of \
         each variant per path, interleaved (each round starts with the next variant); median \
         [min, max]. Enforce mode refuses cell-a's violations only (`enforce_cells`), so \
         cell-c's are judged and counted but go through: a refused connect would measure nothing \
         comparable with no agent. The config has two services in cell-b, one without \
         ports (the server is in it) and one with a port, so every connection pays for the \
         service lookup (the earlier build, which knows no services, runs the same cells \
         without them).\n\n{summary}\n{out}"
    );
    record::update("churn", &section)?;
    ok("BENCHMARKS.md updated");
    Ok(())
}

/// `conns` connections on `path`; connections per second.
fn load(path: Path, conns: usize) -> Result<f64> {
    let limit = Duration::from_secs(600);
    make_churn(path.client().into(), IpAddr::V4(SERVER), conns, path.close, limit)
        .with_context(|| format!("churn, {}", path.label()))
}

/// One audit run on `path` with `--profile-kernel`: (op, runs, seconds) of the sock_ops
/// program, from the agent's own metrics.
fn profile(bins: &Bins, path: Path, conns: usize) -> Result<Vec<(String, f64, f64)>> {
    let config = super::harness::config("audit");
    let agent = start_agent(&bins.agent, &config, &["--profile-kernel"])?;
    let before = agent.metrics();
    load(path, conns)?;
    let m = scrape_until(&agent, |m| {
        m.by_label("cellwatch_kernel_op_runs_total", "op").iter().any(|(_, v)| *v > 0.0)
    });
    let runs = |m: &cellwatch_tests::Metrics, name| m.by_label(name, "op");
    let (r0, s0) = (
        runs(&before, "cellwatch_kernel_op_runs_total"),
        runs(&before, "cellwatch_kernel_op_seconds_total"),
    );
    let secs = runs(&m, "cellwatch_kernel_op_seconds_total");
    let at =
        |v: &[(String, f64)], op: &str| v.iter().find(|(o, _)| o == op).map_or(0.0, |(_, x)| *x);
    Ok(runs(&m, "cellwatch_kernel_op_runs_total")
        .into_iter()
        .map(|(op, n)| {
            let (n, s) = (n - at(&r0, &op), at(&secs, &op) - at(&s0, &op));
            (op, n, s)
        })
        .filter(|(_, n, _)| *n > 0.0)
        .collect())
}

/// The per-op table: runs per connection, ns per run, ns per connection.
fn op_table(ops: &[(String, f64, f64)], conns: usize) -> String {
    let mut t = String::from(
        "| op | runs per connection | ns per run | ns per connection |\n|---|---|---|---|\n",
    );
    let n = conns as f64;
    let mut total = 0.0;
    for (op, runs, secs) in ops {
        let ns = secs * 1e9;
        total += ns / n;
        let _ = writeln!(t, "| `{op}` | {:.2} | {:.0} | {:.0} |", runs / n, ns / runs, ns / n);
    }
    let _ = writeln!(t, "| all | | | {total:.0} |");
    t
}

/// A program's cost over the runs of one variant: medians.
struct ProgSummary {
    name: String,
    ns: Vec<f64>,
    runs_per_conn: f64,
    ns_per_conn: f64,
}

fn per_program(costs: &[ProgCost]) -> Vec<ProgSummary> {
    let mut names: Vec<&str> = costs.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let of = |f: fn(&ProgCost) -> f64| -> Vec<f64> {
                costs.iter().filter(|c| c.name == name).map(f).collect()
            };
            let ns = of(|c| c.ns_per_run);
            ProgSummary {
                name: name.to_owned(),
                runs_per_conn: median(&of(|c| c.runs_per_conn)),
                ns_per_conn: median(&of(|c| c.ns_per_run * c.runs_per_conn)),
                ns,
            }
        })
        .collect()
}

fn program_table(variants: &[Variant], costs: &[Vec<ProgCost>]) -> String {
    let mut t = String::from(
        "| variant | program | ns per run, median [min, max] | runs per connection | ns per connection |\n|---|---|---|---|---|\n",
    );
    for (v, costs) in variants.iter().zip(costs) {
        for p in per_program(costs) {
            let (min, max) = min_max(&p.ns);
            let _ = writeln!(
                t,
                "| {} | `{}` | {:.0} [{min:.0}, {max:.0}] | {:.2} | {:.0} |",
                v.label(),
                p.name,
                median(&p.ns),
                p.runs_per_conn,
                p.ns_per_conn
            );
        }
    }
    t
}

/// (name, run_time_ns, run_cnt) of each program the process beside the load holds.
fn prog_costs(beside: &Beside) -> Result<Vec<(String, u64, u64)>> {
    beside.pid().map_or(Ok(Vec::new()), |pid| prog_stats(&prog_ids_of(pid)))
}

/// (name, run_time_ns, run_cnt) of each program, from bpftool.
fn prog_stats(ids: &[u32]) -> Result<Vec<(String, u64, u64)>> {
    let mut out = Vec::new();
    for id in ids {
        let o = Command::new("bpftool")
            .args(["prog", "show", "id", &id.to_string(), "--json"])
            .output()?;
        let text = String::from_utf8_lossy(&o.stdout);
        let field = |k: &str| -> Option<String> {
            let at = text.find(&format!("\"{k}\":"))? + k.len() + 3;
            let rest = &text[at..];
            let end = rest.find([',', '}'])?;
            Some(rest[..end].trim().trim_matches('"').to_owned())
        };
        let (Some(name), Some(ns), Some(cnt)) =
            (field("name"), field("run_time_ns"), field("run_cnt"))
        else {
            continue;
        };
        out.push((name, ns.parse().unwrap_or(0), cnt.parse().unwrap_or(0)));
    }
    Ok(out)
}

#[derive(Clone, Debug)]
struct ProgCost {
    name: String,
    ns_per_run: f64,
    runs_per_conn: f64,
}

fn diff(
    before: &[(String, u64, u64)],
    after: &[(String, u64, u64)],
    conns: usize,
) -> Vec<ProgCost> {
    after
        .iter()
        .filter_map(|(name, ns, cnt)| {
            // bpftool leaves out the figures of a program that has not run yet.
            let (ns0, cnt0) =
                before.iter().find(|(n, _, _)| n == name).map_or((0, 0), |(_, ns, c)| (*ns, *c));
            let runs = cnt.saturating_sub(cnt0);
            (runs > 0).then(|| ProgCost {
                name: name.clone(),
                ns_per_run: ns.saturating_sub(ns0) as f64 / runs as f64,
                runs_per_conn: runs as f64 / conns as f64,
            })
        })
        .collect()
}
