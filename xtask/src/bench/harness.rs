//! The bench harness: what churn, bulk, udp, scale and config-load share. The agent build,
//! the variants measured side by side (no agent, cellwatch in audit and in enforce mode,
//! in audit mode without its UDP programs, optionally an earlier cellwatch build,
//! tcplife), run interleaved, the cells the churn and bulk loads run between, and the
//! kernel's own count of each program's runs and time (`kernel.bpf_stats_enabled`).
//! Agents are started, checked for readiness and stopped by the integration tests'
//! harness (`cellwatch_tests::Agent`), each with a pin directory of its own, so every
//! start is a fresh one and no agent's programs outlive its run.
use std::{
    io::{BufRead, BufReader},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use cellwatch_tests::{Agent, AgentOpts, ranges::HARNESS, terminate};

use super::stats;
use crate::util::{build_agent, ok, root, step};

/// Client (cell-a) and server (cell-b) addresses of the churn and bulk loads; a rule
/// allows cell-a -> cell-b, so every connection takes the whole verdict path, in enforce
/// mode too, and is allowed. Benchmarks never run beside the integration tests, so these
/// ranges are not in their table (`cellwatch_tests::ranges`).
pub(super) const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 171, 0, 2);
pub(super) const SERVER: Ipv4Addr = Ipv4Addr::new(127, 172, 0, 1);
/// A client in cell-c, which no rule allows to call cell-b: every connection from it is a
/// violation. Enforce mode refuses cell-a's violations only, so cell-c's are judged, counted
/// and let through (a refused connect never reaches the server, so would measure nothing
/// comparable with no agent).
pub(super) const VIOLATOR: Ipv4Addr = Ipv4Addr::new(127, 173, 0, 2);

/// The churn and bulk cell map, in audit or enforce mode.
pub(super) fn config(mode: &str) -> String {
    format!("{}{SERVICES}", config_without_services(mode))
}

/// Services on the server's cell: the server is in `store` (a service without ports,
/// found by the cell lookup itself), and a service with a port makes every connection
/// also look up the ported services' trie (a miss costs as much as a hit): the most a
/// connection pays for services.
const SERVICES: &str = "services:\n  - { name: store, cidrs: [127.172.0.0/24] }\n  \
                        - { name: orders-db, cidrs: [127.172.1.0/24], ports: [5432] }\n";

/// The same cells, for an earlier build that knows no services.
fn config_without_services(mode: &str) -> String {
    format!(
        "cells:\n  - {{ name: global, global: true, cidrs: [127.170.0.0/16] }}\n  \
         - {{ name: cell-a, cidrs: [127.171.0.0/16] }}\n  - {{ name: cell-b, cidrs: [127.172.0.0/16] }}\n  \
         - {{ name: cell-c, cidrs: [127.173.0.0/16] }}\n\
         allow:\n  - {{ from: cell-a, to: cell-b }}\nignore_cidrs: [{}]\nmode: {mode}\n\
         enforce_cells: [cell-a]\n",
        HARNESS.cidr(0)
    )
}

/// A connection from CLIENT to `to`, with a 5 s read timeout.
pub(super) fn connect(to: SocketAddr) -> Result<TcpStream> {
    let s = cellwatch_tests::connect_from(CLIENT.into(), to)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// Builds the agent: in release mode, or, for a smoke run, the debug build the tests
/// already made.
pub(super) fn agent_build(smoke: bool) -> Result<PathBuf> {
    std::env::set_current_dir(root())?;
    step(&format!("build the agent ({})", if smoke { "debug" } else { "release" }));
    build_agent(!smoke)
}

/// What the variants run: this agent, optionally an earlier build of it, and tcplife.
pub(super) struct Bins {
    pub(super) agent: PathBuf,
    pub(super) baseline: Option<PathBuf>,
    pub(super) tcplife: PathBuf,
}

impl Bins {
    /// Builds the agent (see [`agent_build`]) and finds tcplife; `baseline` is an earlier
    /// agent binary to run beside it, in audit mode.
    pub(super) fn get(smoke: bool, baseline: Option<PathBuf>) -> Result<Self> {
        if let Some(b) = &baseline
            && !b.is_file()
        {
            bail!("--baseline {}: no such file (an agent binary built earlier)", b.display());
        }
        Ok(Self { agent: agent_build(smoke)?, baseline, tcplife: tcplife()? })
    }

    /// The variants to run, in the order of the tables.
    pub(super) fn variants(&self) -> Vec<Variant> {
        let mut v = vec![Variant::None, Variant::Audit, Variant::Enforce];
        if self.baseline.is_some() {
            v.push(Variant::Baseline);
        }
        v.push(Variant::Tcplife);
        v
    }
}

/// Starts the agent `bin` and waits until it is ready.
pub(super) fn start_agent(bin: &Path, config: &str, args: &[&str]) -> Result<Agent> {
    Agent::try_start(AgentOpts {
        config: Some(config),
        args,
        bin: Some(bin),
        ..AgentOpts::default()
    })
    .map_err(anyhow::Error::msg)
}

/// tcplife from Debian's libbpf-tools: the peer the agent is compared with.
pub(super) fn tcplife() -> Result<PathBuf> {
    let tcplife = PathBuf::from("/usr/sbin/tcplife");
    if !tcplife.exists() {
        bail!("tcplife is missing: run `cargo xtask setup` (Debian's libbpf-tools)");
    }
    Ok(tcplife)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Variant {
    None,
    Audit,
    /// Audit mode with `--without udp`: the cgroup skb programs, which run on every packet
    /// (TCP's too), left off.
    AuditWithoutUdp,
    Enforce,
    /// The earlier build given with `--baseline`, in audit mode.
    Baseline,
    Tcplife,
}

impl Variant {
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::None => "no agent",
            Self::Audit => "cellwatch, audit",
            Self::AuditWithoutUdp => "cellwatch, audit, --without udp",
            Self::Enforce => "cellwatch, enforce",
            Self::Baseline => "cellwatch before, audit",
            Self::Tcplife => "tcplife (libbpf-tools)",
        }
    }
}

/// Runs `measure` `runs` times for every variant, interleaved: each round starts with the
/// next variant, so none always follows the same one. What the variant runs beside the
/// load is started before and stopped after each measurement, whatever its outcome.
/// Per variant (in `variants` order), the measured values.
pub(super) fn interleaved(
    runs: usize,
    bins: &Bins,
    variants: &[Variant],
    measure: impl FnMut(usize, &Beside) -> Result<f64>,
    show: impl Fn(f64) -> String,
) -> Result<Vec<Vec<f64>>> {
    interleaved_in(runs, bins, variants, &config, measure, show)
}

/// [`interleaved`], with the agents started on `config(mode)`, a cell map of the
/// benchmark's own, instead of the churn and bulk one.
pub(super) fn interleaved_in(
    runs: usize,
    bins: &Bins,
    variants: &[Variant],
    config: &dyn Fn(&str) -> String,
    mut measure: impl FnMut(usize, &Beside) -> Result<f64>,
    show: impl Fn(f64) -> String,
) -> Result<Vec<Vec<f64>>> {
    let mut values = vec![Vec::new(); variants.len()];
    for run in 0..runs {
        for k in 0..variants.len() {
            let i = (k + run) % variants.len();
            let beside = Beside::start(variants[i], bins, config)?;
            let value = measure(i, &beside);
            beside.stop();
            let value = value?;
            ok(&format!("run {}: {:<31} {}", run + 1, variants[i].label(), show(value)));
            values[i].push(value);
        }
    }
    Ok(values)
}

/// A Markdown table of `values` per variant: median [min, max] and the ratio of medians
/// to no agent.
pub(super) fn ratio_table(
    unit: &str,
    variants: &[Variant],
    values: &[Vec<f64>],
    decimals: usize,
) -> String {
    let base = stats::median(&values[0]);
    let mut t =
        format!("| variant | {unit}, median [min, max] | ratio to no agent |\n|---|---|---|\n");
    for (v, vals) in variants.iter().zip(values) {
        let (min, max) = stats::min_max(vals);
        t.push_str(&format!(
            "| {} | {:.d$} [{:.d$}, {:.d$}] | {:.3} |\n",
            v.label(),
            stats::median(vals),
            min,
            max,
            stats::median(vals) / base,
            d = decimals
        ));
    }
    t
}

/// What runs beside the load, started before and stopped after the timed part.
pub(super) enum Beside {
    Nothing,
    Agent(Agent),
    Tcplife(Child),
}

impl Beside {
    fn start(v: Variant, bins: &Bins, config: &dyn Fn(&str) -> String) -> Result<Self> {
        let agent = |bin: &Path, mode| start_agent(bin, &config(mode), &[]).map(Self::Agent);
        Ok(match (v, &bins.baseline) {
            (Variant::None, _) => Self::Nothing,
            (Variant::Audit, _) => agent(&bins.agent, "audit")?,
            (Variant::AuditWithoutUdp, _) => {
                Self::Agent(start_agent(&bins.agent, &config("audit"), &["--without", "udp"])?)
            }
            (Variant::Enforce, _) => agent(&bins.agent, "enforce")?,
            (Variant::Baseline, Some(bin)) => {
                Self::Agent(start_agent(bin, &config_without_services("audit"), &[])?)
            }
            (Variant::Baseline, None) => bail!("no --baseline binary was given"),
            (Variant::Tcplife, _) => {
                let mut c = Command::new("stdbuf")
                    .args(["-oL"])
                    .arg(&bins.tcplife)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("start tcplife")?;
                // Its header is printed once its programs are attached.
                let mut out = BufReader::new(c.stdout.take().context("tcplife stdout")?);
                let mut header = String::new();
                out.read_line(&mut header)?;
                if !header.contains("PID") {
                    terminate(&mut c);
                    bail!("tcplife did not start: {header:?}");
                }
                thread::spawn(move || {
                    let _ = std::io::copy(&mut out, &mut std::io::sink());
                });
                Self::Tcplife(c)
            }
        })
    }

    /// The process beside the load, if any.
    pub(super) fn pid(&self) -> Option<u32> {
        match self {
            Self::Nothing => None,
            Self::Agent(a) => Some(a.pid()),
            Self::Tcplife(c) => Some(c.id()),
        }
    }

    /// Stops it; an agent's pins go with it.
    fn stop(self) {
        match self {
            Self::Nothing => {}
            Self::Agent(a) => drop(a),
            Self::Tcplife(mut c) => terminate(&mut c),
        }
    }
}

/// The agent's cgroup skb programs, egress and ingress: they run on every packet of the
/// node (TCP's too) unless the agent runs `--without udp`.
pub(super) const SKB_PROGRAMS: [&str; 2] = ["cellwatch_udp_egress", "cellwatch_udp_ingress"];

/// Turns `kernel.bpf_stats_enabled` on while it lives, and back to what it was on drop:
/// the kernel then counts each program's runs and their time.
pub(super) struct BpfStats {
    was: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    pub(super) fn enable() -> Result<Self> {
        let was = std::fs::read_to_string(BPF_STATS).context("read kernel.bpf_stats_enabled")?;
        std::fs::write(BPF_STATS, "1").context("enable kernel.bpf_stats_enabled (needs root)")?;
        Ok(Self { was: was.trim().to_owned() })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS, &self.was);
    }
}

/// (runs, nanoseconds) so far of each program named in `names` that the process beside
/// the load holds, from bpftool; (0, 0) for one it does not hold or that has not run.
pub(super) fn prog_runs(beside: &Beside, names: &[&str]) -> Result<Vec<(u64, u64)>> {
    let mut out = vec![(0, 0); names.len()];
    let Some(pid) = beside.pid() else { return Ok(out) };
    for id in cellwatch_tests::prog_ids_of(pid) {
        let o = Command::new("bpftool")
            .args(["prog", "show", "id", &id.to_string(), "--json"])
            .output()
            .context("bpftool (run `cargo xtask setup`)")?;
        let text = String::from_utf8_lossy(&o.stdout);
        let field = |k: &str| -> Option<&str> {
            let at = text.find(&format!("\"{k}\":"))? + k.len() + 3;
            let rest = &text[at..];
            Some(rest[..rest.find([',', '}'])?].trim().trim_matches('"'))
        };
        let Some(i) = field("name").and_then(|n| names.iter().position(|m| *m == n)) else {
            continue;
        };
        // bpftool leaves out the figures of a program that has not run yet.
        let num = |k| field(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        out[i] = (num("run_cnt"), num("run_time_ns"));
    }
    Ok(out)
}

/// Fails unless `agent` runs its UDP programs (`cellwatch_kernel_feature{feature="udp"}`),
/// naming the kernel's refusal from its log: without them a variant meant to measure
/// them would measure nothing.
pub(super) fn require_udp(agent: &Agent) -> Result<()> {
    if agent.metrics().get("cellwatch_kernel_feature", &[("feature", "udp")]) == 1.0 {
        return Ok(());
    }
    let log = agent.stderr();
    let why = log.lines().find(|l| l.contains("feature=udp") || l.contains("udp_")).unwrap_or("");
    bail!("the agent runs without its UDP programs (feature udp off): {why}");
}
