//! `cargo xtask bench scale`: what the agent costs as the cell map and the connection
//! count grow.
//! - 10, 100 and 1,000 cells with traffic on many cell pairs: `/metrics` samples, size
//!   (plain and gzip) and render time, and the agent's RSS.
//! - Up to 50,000 loopback connections held open at once, which the agent tracks as
//!   100,000 (both ends are on this node): the live sweep's CPU, `/metrics` and
//!   `/connections` times, the agent's RSS and its maps' kernel memory.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use cellwatch_tests::{http_get, map_ids_of, ranges::HARNESS};

use super::{
    harness::{agent_build, start_agent},
    record,
    stats::stats,
};
use crate::util::{ok, step};

/// Scrapes timed per measurement.
const SCRAPES: usize = 7;

/// Cell `i`'s /24: 127.180.0.0/24 onwards, 250 per second octet.
fn cell_net(i: usize) -> (u8, u8) {
    let octet = |v: usize| u8::try_from(v).expect("at most 1,000 cells: the octets fit");
    (180 + octet(i / 250), octet(i % 250))
}

fn cell_ip(i: usize, host: u8) -> IpAddr {
    let (b, c) = cell_net(i);
    IpAddr::V4(Ipv4Addr::new(127, b, c, host))
}

pub(crate) fn scale(smoke: bool, baseline: Option<std::path::PathBuf>) -> Result<()> {
    let bin = agent_build(smoke)?;
    let sizes: &[(usize, usize)] =
        if smoke { &[(10, 100)] } else { &[(10, 100), (100, 10_000), (1000, 10_000)] };
    let mut rows = String::from(
        "| cells | active pairs | samples | per pair | size, plain / gzip | render, gzip (as \
         Prometheus asks) | render, plain | agent RSS: idle / after gzip scrapes / after plain \
         scrapes | pair-table losses |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for &(cells, pairs) in sizes {
        step(&format!("{cells} cells, {pairs} active pairs"));
        rows.push_str(&pair_scale(&bin, cells, pairs)?);
    }
    let held: &[usize] = if smoke { &[0, 500] } else { &[0, 500, 5_000, 50_000] };
    let window = Duration::from_secs(if smoke { 6 } else { 40 });
    let mut held_rows = String::from(
        "| connections open (tracked sockets) | opened in | agent CPU, share of one core | CPU per \
         sweep | `/metrics`, gzip | `/connections?limit=100` | agent RSS | kernel map memory (`bytes_memlock`; socket storage is charged per socket, not here) |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for &n in held {
        step(&format!("{n} connections held open"));
        held_rows.push_str(&concurrent(&bin, n, window)?);
    }
    let listing_rows = match &baseline {
        Some(before) if !smoke => {
            step("/connections beside the earlier build, 50,000 connections held");
            let (mut now, mut then) = (Vec::new(), Vec::new());
            for _ in 0..2 {
                now.extend(listing(&bin, 50_000)?);
                then.extend(listing(before, 50_000)?);
            }
            let rows = format!(
                "`--baseline {}`: `/connections?limit=100` with 50,000 connections held \
                 (100,000 tracked), two fresh agents of each build in turn, five requests each:\n\n\
                 | build | `/connections?limit=100`, median [min, max] |\n|---|---|\n\
                 | this one | {} |\n| earlier | {} |\n",
                before.display(),
                stats(&now),
                stats(&then)
            );
            ok(&rows);
            rows
        }
        _ => String::new(),
    };
    if smoke {
        ok("smoke run done (nothing recorded)");
        return Ok(());
    }
    let section = format!(
        "### Scale: cells, pairs and connections\n\n\
         `cargo xtask bench scale`. Each client connection goes from one cell's address to \
         another's server. With 10 and 100 cells, every ordered pair of cells (same-cell \
         pairs included) is active; 1,000 cells have a million pairs, more than the pair table \
         holds (65,536 keys, two per pair: egress and ingress), so 10 servers per client cell \
         are used. Both ends of every connection are on this node, so each pair is seen from \
         both. Render time is `GET /metrics` as a scraper sees it ({SCRAPES} scrapes each, \
         median [min, max]); gzip is what Prometheus and VictoriaMetrics ask for.\n\n\
         {rows}\n\
         Targets (issue 17): at most 40 samples per active pair; `/metrics` at 10,000 active \
         pairs in under 100 ms and under 20 MB, with agent RSS under 40 MiB.\n\n\
         Pair-table losses: the per-pair map allocates an entry on first use (no \
         preallocation, so idle capacity costs nothing). A burst of thousands of new pairs at \
         once can drain the kernel's per-CPU allocator caches; those pairs' figures then go \
         to a small preallocated table shared by the CPUs (`pair_overflow`), so none is lost. \
         Only both tables full would count in \
         `cellwatch_events_lost_total{{source=\"pair_table_full\"}}`.\n\n\
         Connections held open from cell-a to cell-b by three helper processes, at the \
         default `--live-interval` (10 s): the agent's CPU (user and system, the sweep's \
         kernel iterator included: it runs in the agent's read) over {} s, and what that is \
         per sweep. The first row is the idle agent.\n\n{held_rows}\n\
         Target (issue 14): at most 1% of one core at 100,000 live connections with the \
         default interval.\n\n{listing_rows}",
        window.as_secs()
    );
    record::update("scale", &section)?;
    ok("BENCHMARKS.md updated");
    Ok(())
}

/// One row of the pair table: `cells` cells, `pairs` of them active.
fn pair_scale(bin: &Path, cells: usize, pairs: usize) -> Result<String> {
    let mut y = String::from("cells:\n");
    for i in 0..cells {
        let (b, c) = cell_net(i);
        y.push_str(&format!("  - {{ name: c{i:04}, cidrs: [127.{b}.{c}.0/24] }}\n"));
    }
    y.push_str(&format!("ignore_cidrs: [{}]\n", HARNESS.cidr(0)));
    let agent = start_agent(bin, &y, &[])?;
    let rss_idle = rss_mib(agent.pid());
    let servers: Vec<std::net::TcpListener> = (0..cells)
        .map(|i| listen(SocketAddr::new(cell_ip(i, 1), 0), 1024))
        .collect::<Result<_>>()?;
    let per = pairs / cells;
    for i in 0..cells {
        for k in 0..per {
            // Every pair when per == cells; otherwise `per` distinct servers per client.
            let j = if per == cells { k } else { (i + 1 + k * 97) % cells };
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            s.bind(&SocketAddr::new(cell_ip(i, 2), 0).into())?;
            s.connect_timeout(&servers[j].local_addr()?.into(), Duration::from_secs(5))?;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let gz = scrapes(agent.port, true)?;
    let rss_gzip = rss_mib(agent.pid());
    let plain = scrapes(agent.port, false)?;
    let rss_plain = rss_mib(agent.pid());
    let body = plain.text;
    let samples = body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count();
    let pair_samples = body.lines().filter(|l| l.contains("src_cell=")).count();
    let lost = body
        .lines()
        .find(|l| l.starts_with("cellwatch_events_lost_total{source=\"pair_table_full\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or("?")
        .to_owned();
    let row = format!(
        "| {cells} | {pairs} | {samples} | {:.1} | {:.1} / {:.1} MB | {} | {} | {rss_idle:.1} / \
         {rss_gzip:.1} / {rss_plain:.1} MiB | {lost} |\n",
        pair_samples as f64 / pairs as f64,
        body.len() as f64 / 1e6,
        gz.wire as f64 / 1e6,
        stats(&gz.times),
        stats(&plain.times),
    );
    ok(&row);
    Ok(row)
}

/// Holds `held` connections open at once from cell-a to cell-b (three helper processes,
/// each under the open-file limit) and measures the agent over `window`: one table row.
fn concurrent(bin: &Path, held: usize, window: Duration) -> Result<String> {
    let cfg = format!(
        "cells:\n  - {{ name: cell-a, cidrs: [127.190.0.0/16] }}\n  - {{ name: cell-b, cidrs: [127.191.0.0/16] }}\n\
         ignore_cidrs: [{}]\n",
        HARNESS.cidr(0)
    );
    let agent = start_agent(bin, &cfg, &["--conn-capacity", "262144"])?;
    let port = agent.port;
    let t = Instant::now();
    let result = (|| -> Result<String> {
        let held_now = Held::open(held)?;
        let per_helper = held_now.per;
        let opening = t.elapsed().as_secs_f64();
        // Past the first sweep after the opening (the default interval is 10 s), so the
        // window sees steady sweeps.
        // (A smoke run's short window only checks the code works.)
        std::thread::sleep(Duration::from_secs(if window.as_secs() < 10 { 1 } else { 11 }));
        let tracked = gauge_sum(port, "cellwatch_connections_active")?;
        let swept = |p| gauge_sum(p, "cellwatch_live_sweep_connections_total");
        let (cpu0, swept0) = (cpu_seconds(agent.pid())?, swept(port)?);
        let t = Instant::now();
        std::thread::sleep(window);
        let (cpu1, swept1) = (cpu_seconds(agent.pid())?, swept(port)?);
        let secs = t.elapsed().as_secs_f64();
        let share = (cpu1 - cpu0) / secs;
        // Sweeps in the window: visits over what is open (the idle agent has none).
        let sweeps = if tracked > 0.0 { (swept1 - swept0) / tracked } else { 0.0 };
        let per_sweep = if sweeps >= 1.0 {
            format!("{:.1} ms ({sweeps:.0} sweeps)", (cpu1 - cpu0) * 1e3 / sweeps)
        } else {
            "-".to_owned()
        };
        let gz_times = scrapes(port, true)?.times;
        let mut list_times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let (status, list) = http_get(port, "/connections?limit=100")?;
            list_times.push(t.elapsed().as_secs_f64());
            if status != 200 || !list.starts_with('[') {
                bail!("/connections answered {status}");
            }
        }
        let memlock = map_memlock(agent.pid())?;
        let row = format!(
            "| {} ({tracked:.0}) | {opening:.1} s | {:.2}% | {per_sweep} | {} | {} | {:.1} MiB \
             | {:.1} MiB |\n",
            per_helper * held_now.helpers,
            share * 100.0,
            stats(&gz_times),
            stats(&list_times),
            rss_mib(agent.pid()),
            memlock as f64 / (1u64 << 20) as f64,
        );
        ok(&row);
        Ok(row)
    })();
    drop(agent);
    result
}

/// Connections held open from cell-a to cell-b by helper processes (`xtask hold`), each
/// under the open-file limit; closed when dropped.
pub(super) struct Held {
    children: Vec<std::process::Child>,
    _listeners: Vec<std::net::TcpListener>,
    helpers: usize,
    per: usize,
}

impl Held {
    pub(super) fn open(held: usize) -> Result<Self> {
        let listeners: Vec<std::net::TcpListener> = (1..=20u8)
            .map(|h| listen(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 191, 0, h)), 0), 4096))
            .collect::<Result<_>>()?;
        let targets: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.to_string()))
            .collect::<Result<_, _>>()?;
        let helpers = if held == 0 { 0 } else { 3 };
        let per = if held == 0 { 0 } else { held.div_ceil(helpers) };
        let mut me = Self { children: Vec::new(), _listeners: listeners, helpers, per };
        for h in 0..helpers {
            let mut c = Command::new(std::env::current_exe()?)
                .args(["hold", "--count", &per.to_string(), "--helper", &h.to_string()])
                .arg("--targets")
                .arg(targets.join(","))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?;
            let out = c.stdout.take().context("helper stdout");
            me.children.push(c);
            let mut line = String::new();
            BufReader::new(out?).read_line(&mut line)?;
            if !line.starts_with("held") {
                bail!("connection helper {h} failed: {line}");
            }
        }
        Ok(me)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        for c in &mut self.children {
            drop(c.stdin.take());
            let _ = c.wait();
        }
    }
}

/// `GET /connections?limit=100` timed five times with `held` connections open, on a
/// fresh agent `bin` (this build or an earlier one): the listing beside the earlier
/// build's, in one run.
fn listing(bin: &Path, held: usize) -> Result<Vec<f64>> {
    let cfg = format!(
        "cells:\n  - {{ name: cell-a, cidrs: [127.190.0.0/16] }}\n  - {{ name: cell-b, cidrs: [127.191.0.0/16] }}\n\
         ignore_cidrs: [{}]\n",
        HARNESS.cidr(0)
    );
    let agent = start_agent(bin, &cfg, &["--conn-capacity", "262144"])?;
    let _held = Held::open(held)?;
    std::thread::sleep(Duration::from_secs(2));
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let (status, list) = http_get(agent.port, "/connections?limit=100")?;
        times.push(t.elapsed().as_secs_f64());
        if status != 200 || !list.starts_with('[') {
            bail!("/connections answered {status}");
        }
    }
    Ok(times)
}

/// The sum of every sample of `name` in one scrape.
pub(super) fn gauge_sum(port: u16, name: &str) -> Result<f64> {
    let (status, body) = http_get(port, "/metrics")?;
    if status != 200 {
        bail!("/metrics answered {status}");
    }
    Ok(body
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// The process's user and system CPU time, seconds.
pub(super) fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) in parentheses: utime and stime are
    // the 12th and 13th of them.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("/proc/<pid>/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / clock_ticks()?)
}

/// Clock ticks per second (`getconf CLK_TCK`).
fn clock_ticks() -> Result<f64> {
    let o = Command::new("getconf").arg("CLK_TCK").output().context("getconf")?;
    Ok(String::from_utf8_lossy(&o.stdout).trim().parse()?)
}

/// `xtask hold`: a helper process that opens `count` connections round-robin to
/// `targets` from cell-a addresses 127.190.<helper>.<1..=200>, prints `held N`, and keeps
/// them until its stdin closes.
pub(crate) fn hold(count: usize, helper: u8, targets: &str) -> Result<()> {
    let targets: Vec<SocketAddr> =
        targets.split(',').map(|t| t.parse().context("target address")).collect::<Result<_>>()?;
    let mut held = Vec::with_capacity(count);
    for k in 0..count {
        let from =
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 190, helper, 1 + host(k % 200))), 0);
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        s.bind(&from.into())?;
        s.connect_timeout(&targets[k % targets.len()].into(), Duration::from_secs(5))
            .with_context(|| format!("connection {k} of {count}"))?;
        held.push(s);
    }
    println!("held {}", held.len());
    std::io::stdout().flush()?;
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    Ok(())
}

fn listen(addr: SocketAddr, backlog: i32) -> Result<std::net::TcpListener> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(backlog)?;
    Ok(s.into())
}

/// What SCRAPES scrapes of `/metrics` gave: the last body's size as sent (compressed or
/// not) and its text, and the time of each scrape.
struct Scrapes {
    wire: usize,
    text: String,
    times: Vec<f64>,
}

fn scrapes(port: u16, gzip: bool) -> Result<Scrapes> {
    let mut out = Scrapes { wire: 0, text: String::new(), times: Vec::new() };
    let mut last = (String::new(), Vec::new());
    for _ in 0..SCRAPES {
        let t = Instant::now();
        last = get_metrics(port, gzip)?;
        out.times.push(t.elapsed().as_secs_f64());
    }
    // Inflated after the timing: this debug-built benchmark would be the slow part.
    let (head, body) = last;
    out.wire = body.len();
    if head.contains("content-encoding: gzip") {
        flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut out.text)?;
    } else if gzip {
        bail!("asked for gzip, got a plain body");
    } else {
        out.text = String::from_utf8(body)?;
    }
    Ok(out)
}

/// One `GET /metrics`, asking for gzip or not: its headers (lower case) and body as sent.
fn get_metrics(port: u16, gzip: bool) -> Result<(String, Vec<u8>)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let accept = if gzip { "Accept-Encoding: gzip\r\n" } else { "" };
    write!(s, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n{accept}\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").context("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    if !head.starts_with("http/1.0 200") && !head.starts_with("http/1.1 200") {
        bail!("/metrics answered {}", head.lines().next().unwrap_or(""));
    }
    Ok((head, raw[split + 4..].to_vec()))
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The `bytes_memlock` of every map the agent holds (socket storage is charged per
/// socket, not here).
fn map_memlock(pid: u32) -> Result<u64> {
    let mut all = 0;
    for id in map_ids_of(pid) {
        let o = Command::new("bpftool")
            .args(["map", "show", "id", &id.to_string(), "--json"])
            .output()?;
        let text = String::from_utf8_lossy(&o.stdout);
        all += text
            .split("\"bytes_memlock\":")
            .nth(1)
            .and_then(|r| r.split([',', '}']).next())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(all)
}

/// A host octet below 200.
fn host(k: usize) -> u8 {
    u8::try_from(k).expect("below 200")
}
