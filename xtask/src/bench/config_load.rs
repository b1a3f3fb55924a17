//! `cargo xtask bench config-load`: a cell map of 1,000 cells and 100,000 prefixes read,
//! validated and written into the kernel; start to ready with it and with the embedded
//! default, and restarts that adopt or replace the pinned programs.
use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use cellwatch_tests::{Agent, AgentOpts, Pins, TempDir};

use super::{
    harness::agent_build,
    record,
    stats::{median, stats},
};
use crate::util::{ok, step};

/// Runs of each variant.
const RUNS: usize = 5;

pub(crate) fn config_load() -> Result<()> {
    let bin = agent_build(false)?;
    let dir = TempDir::new("bench");
    let big = dir.0.join("big.yaml");
    let (cells, prefixes, rules) = write_big_config(&big)?;
    ok(&format!("{}: {cells} cells, {prefixes} prefixes, {rules} allow rules", big.display()));

    step(&format!("check-config (parse + validate), {RUNS} runs"));
    let mut check = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let out = Command::new(&bin).arg("check-config").arg(&big).output()?;
        if !out.status.success() {
            bail!("check-config failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        check.push(t.elapsed().as_secs_f64());
    }
    ok(&stats(&check));

    step(&format!(
        "start to ready: big config vs embedded default, and restarts that adopt or replace \
         the pinned programs, interleaved, {RUNS} runs each"
    ));
    let (mut with_big, mut with_default, mut written) = (Vec::new(), Vec::new(), Vec::new());
    let (mut adopt, mut replace) = (Vec::new(), Vec::new());
    let big_cfg = Some(big.as_path());
    for _ in 0..RUNS {
        // Fresh starts: pins of their own, removed after each.
        let (t, ms) = start_to_ready(&bin, big_cfg, &[], &Pins::new())?;
        with_big.push(t);
        written.push(ms / 1e3);
        with_default.push(start_to_ready(&bin, None, &[], &Pins::new())?.0);
        // Restarts on what the previous start left pinned.
        let pins = Pins::new();
        start_to_ready(&bin, big_cfg, &[], &pins)?;
        adopt.push(start_to_ready(&bin, big_cfg, &[], &pins)?.0);
        replace.push(start_to_ready(&bin, big_cfg, &["--replace-programs"], &pins)?.0);
    }
    ok(&format!("big config:       {}", stats(&with_big)));
    ok(&format!("default config:   {}", stats(&with_default)));
    ok(&format!("cell map written: {} (the agent's own measure)", stats(&written)));
    ok(&format!("restart, adopt:   {}", stats(&adopt)));
    ok(&format!("restart, replace: {}", stats(&replace)));

    let section = format!(
        "### Config load: {cells} cells, {prefixes} prefixes, {rules} allow rules\n\n\
         `cargo xtask bench config-load` ({RUNS} runs each, interleaved; median [min, max]):\n\n\
         | what | time |\n|---|---|\n\
         | `check-config` (read, parse, validate) | {} |\n\
         | agent start to ready, this config | {} |\n\
         | agent start to ready, embedded default | {} |\n\
         | of which: the cell map written into the kernel (one set; the agent's log) | {} |\n\
         | ratio of start-to-ready medians, big / default | {:.2} |\n\
         | restart to ready, this config, adopting the pinned programs and maps | {} |\n\
         | restart to ready, this config, swapping in programs (`--replace-programs`, as an upgrade) | {} |\n\n\
         Target (issue 3): 1,000 cells and 100,000 prefixes load in under a second. A restart \
         that adopts loads no program; it reads the pinned cell set it writes first back \
         (to know what to replace), and the other one at the first reload.\n",
        stats(&check),
        stats(&with_big),
        stats(&with_default),
        stats(&written),
        median(&with_big) / median(&with_default),
        stats(&adopt),
        stats(&replace),
    );
    record::update("config-load", &section)?;
    ok("BENCHMARKS.md updated");
    Ok(())
}

/// 1,000 cells x 100 prefixes (90 IPv4 /28, 10 IPv6 /64), one global, 500 allow rules.
fn write_big_config(path: &Path) -> Result<(usize, usize, usize)> {
    const CELLS: usize = 1000;
    const PER: usize = 100;
    let mut y = String::with_capacity(4 << 20);
    y.push_str("cells:\n");
    for i in 0..CELLS {
        y.push_str(&format!("  - name: cell-{i:04}\n"));
        if i == 0 {
            y.push_str("    global: true\n");
        }
        y.push_str("    cidrs: [");
        for j in 0..PER {
            let k = u32::try_from(i * PER + j).expect("100,000 prefixes fit in u32");
            if j < 90 {
                y.push_str(&format!(
                    "\"10.{}.{}.{}/28\", ",
                    (k >> 12) & 0xff,
                    (k >> 4) & 0xff,
                    (k & 0xf) << 4
                ));
            } else {
                y.push_str(&format!("\"fd00:{i:x}:{j:x}::/64\", "));
            }
        }
        y.push_str("]\n");
    }
    y.push_str("allow:\n");
    let rules = 500;
    for r in 0..rules {
        y.push_str(&format!(
            "  - {{ from: cell-{:04}, to: cell-{:04}, ports: [{}] }}\n",
            r,
            (r * 7 + 1) % CELLS,
            1000 + r
        ));
    }
    y.push_str("external: allow\nignore_cidrs: [\"127.0.0.0/8\", \"::1/128\"]\n");
    std::fs::write(path, y)?;
    Ok((CELLS, CELLS * PER, rules))
}

/// Time from spawning `cellwatch run` (with `--log-format json`) to `/readyz` answering
/// 200, asked every 2 ms, and the agent's logged `cell map written` time in ms. The agent
/// pins under `pins` and leaves them there for the next start.
fn start_to_ready(
    bin: &Path,
    config: Option<&Path>,
    extra: &[&str],
    pins: &Pins,
) -> Result<(f64, f64)> {
    let mut args = vec!["--log-format", "json"];
    let config = config.map(|c| c.to_str().context("a UTF-8 config path")).transpose()?;
    if let Some(c) = config {
        args.extend(["--config", c]);
    }
    args.extend(extra);
    let opts = AgentOpts { args: &args, pins: Some(pins), bin: Some(bin), ..AgentOpts::default() };
    let mut agent = Agent::spawn(opts);
    let ready = agent.wait_ready(Duration::from_millis(2)).map_err(anyhow::Error::msg)?;
    let status = agent.stop();
    if !status.success() {
        bail!("the agent exited with {status} on SIGTERM:\n{}", agent.stderr());
    }
    let ms = agent
        .stderr()
        .lines()
        .find(|l| l.contains("cell map written"))
        .and_then(|l| l.split("\"elapsed_ms\":").nth(1))
        .and_then(|v| v.split([',', '}']).next())
        .and_then(|v| v.parse().ok())
        .context("no `cell map written` line in the agent's log")?;
    Ok((ready.as_secs_f64(), ms))
}
