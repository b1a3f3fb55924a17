//! `cargo xtask bench`: benchmarks whose results go into BENCHMARKS.md, each measured
//! side by side in one run (interleaved, several runs each, median and spread).
use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::tasks::{ok, root, step};

/// Runs of each variant.
const RUNS: usize = 5;

pub(crate) fn config_load() -> Result<()> {
    std::env::set_current_dir(root())?;
    step("build the agent (release)");
    crate::setup::run(&["cargo", "build", "--locked", "--release", "-p", "agent"])?;
    let bin = root().join("target/release/cellwatch");
    let dir = std::env::temp_dir().join(format!("cellwatch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let big = dir.join("big.yaml");
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
        let (t, ms) = start_to_ready(&bin, big_cfg, &dir, &[], Pins::Remove)?;
        with_big.push(t);
        written.push(ms / 1e3);
        with_default.push(start_to_ready(&bin, None, &dir, &[], Pins::Remove)?.0);
        start_to_ready(&bin, big_cfg, &dir, &[], Pins::Keep)?;
        adopt.push(start_to_ready(&bin, big_cfg, &dir, &[], Pins::Keep)?.0);
        let swap = ["--replace-programs"];
        replace.push(start_to_ready(&bin, big_cfg, &dir, &swap, Pins::Remove)?.0);
    }
    ok(&format!("big config:       {}", stats(&with_big)));
    ok(&format!("default config:   {}", stats(&with_default)));
    ok(&format!("cell map written: {} (the agent's own measure)", stats(&written)));
    ok(&format!("restart, adopt:   {}", stats(&adopt)));
    ok(&format!("restart, replace: {}", stats(&replace)));
    let _ = std::fs::remove_dir_all(&dir);

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
    crate::benchfile::update("config-load", &section)?;
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
            let k = (i * PER + j) as u32;
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

/// Seconds from spawning `cellwatch run` to `/readyz` answering 200, and the agent's
/// logged `cell map written` time in ms.
/// `Pins::Keep` leaves the pins for the next start to adopt.
fn start_to_ready(
    bin: &Path,
    config: Option<&Path>,
    dir: &Path,
    extra: &[&str],
    pins_after: Pins,
) -> Result<(f64, f64)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let log = dir.join("agent.log");
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--log-format", "json", "--listen", &format!("127.0.0.1:{port}")]);
    cmd.arg("--bpffs").arg(pins());
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.args(extra);
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let ready = loop {
        if ready(port) {
            break t.elapsed().as_secs_f64();
        }
        if t.elapsed() > Duration::from_secs(60) || child.try_wait()?.is_some() {
            stop(&mut child);
            bail!("agent did not get ready: {}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    match pins_after {
        Pins::Remove => stop(&mut child),
        Pins::Keep => stop_process(&mut child),
    }
    let text = std::fs::read_to_string(&log)?;
    let ms = text
        .lines()
        .find(|l| l.contains("cell map written"))
        .and_then(|l| l.split("\"elapsed_ms\":").nth(1))
        .and_then(|v| v.split([',', '}']).next())
        .and_then(|v| v.parse().ok())
        .context("no `cell map written` line in the agent's log")?;
    Ok((ready, ms))
}

pub(crate) fn ready(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200")
}

/// What a measured start leaves behind.
#[derive(Clone, Copy)]
enum Pins {
    /// Its pinned programs and maps, for the next start to adopt.
    Keep,
    /// Nothing: the next start is a fresh one.
    Remove,
}

/// Pin directory of the agents xtask starts, one at a time; [`stop`] removes it, so every
/// start is a fresh one and no agent's programs outlive its run.
pub(crate) fn pins() -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/sys/fs/bpf/cellwatch-xtask-{}", std::process::id()))
}

/// Stops an agent xtask started, then detaches its pinned programs.
pub(crate) fn stop(child: &mut Child) {
    stop_process(child);
    let _ = std::fs::remove_dir_all(pins());
}

/// Stops an agent and leaves its pins.
pub(crate) fn stop_process(child: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// `median [min, max]` in adaptive units.
pub(crate) fn stats(v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    format!("{} [{}, {}]", secs(median(v)), secs(min), secs(max))
}

fn secs(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}
