//! `cargo xtask bench fleet`: a fleet simulated on one machine. One real agent (C cells,
//! P cell pairs kept active by one loopback connection per pair per interval) stands for
//! every node: its `/metrics` is served under N ports on 127.0.0.1 (the targets, one small
//! threaded HTTP server: the scraper's `Accept` and `Accept-Encoding` go to the agent, its
//! `Content-Type` and `Content-Encoding` come back, one answer cached per pair of those
//! headers for one interval so a thousand targets do not make a thousand renders), and a
//! real Prometheus (Debian's) scrapes the N as separate targets, each its own `instance`,
//! with the shipped recording and alerting rules, in storage of its own.
//!
//! Per run (N, detail level), once every target has been scraped `--rounds` times and each
//! rule group evaluated twice since all were up: the series in the head, the samples per
//! scrape, the scrape duration, the rule groups' evaluation time, Prometheus' RSS and head
//! chunks, and the wall time of `cellwatch report` against it. Everything it starts is
//! stopped, and its directories removed, when the run ends, by error too.
#![expect(unsafe_code, reason = "poll(2) over the targets' listeners, and getrlimit/setrlimit(2)")]

#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use cellwatch_tests::{
    Agent, Metrics, TempDir, connect_from, free_port, http_get,
    prometheus::{encode, shipped_rules},
    ranges::HARNESS,
};

use super::{
    harness::{agent_build, start_agent},
    record, stats,
};
use crate::util::{ok, output, step};

/// `cargo xtask bench fleet`'s arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct FleetArgs {
    /// Targets (nodes) one Prometheus scrapes, a list: one run, and one table row, each.
    #[arg(long, value_delimiter = ',', default_value = "100,500,1000")]
    nodes: Vec<usize>,
    /// Cells in the agent's config (at most 250).
    #[arg(long, default_value_t = 10)]
    cells: usize,
    /// Active cell pairs (at most cells squared; same-cell pairs included).
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// The agent's `--metrics-detail`, a list (one agent each); none: the agent is given
    /// no such flag (its default).
    #[arg(long, value_delimiter = ',', value_parser = ["full", "pairs", "cells"])]
    detail: Vec<String>,
    /// Run Prometheus with `--enable-feature=native-histograms` (it then asks for the
    /// protobuf exposition).
    #[arg(long)]
    native: bool,
    /// One more argument for `cellwatch run`, e.g. `--agent-arg=--histogram-buckets=8`.
    #[arg(long = "agent-arg", value_name = "ARG", allow_hyphen_values = true)]
    agent_args: Vec<String>,
    /// The scrape and rule evaluation interval, seconds.
    #[arg(long, default_value_t = 10)]
    interval: u64,
    /// Scrapes of every target before the measurement.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Also write the table into BENCHMARKS.md (its `fleet` section, `fleet-native` with
    /// `--native`).
    #[arg(long)]
    record: bool,
}

/// The first octets of the cells' addresses: cell `i` is 127.194.i.0/24 (a block neither
/// the test areas nor the other benchmarks use).
const CELL_NET: (u8, u8) = (127, 194);
/// The shipped rule file's groups, each waited for and measured.
const GROUPS: [&str; 2] = ["cellwatch.records", "cellwatch.alerts"];
/// Threads answering the targets' scrapes.
const WORKERS: usize = 8;
/// Bytes each pair's connection sends, and answers.
const REQ: usize = 200;
const RESP: usize = 2000;
/// `cellwatch report` runs per measurement, and how long one may take.
const REPORTS: usize = 3;
const REPORT_LIMIT: Duration = Duration::from_secs(180);

pub(crate) fn fleet(args: &FleetArgs) -> Result<()> {
    check(args)?;
    let started = Instant::now();
    let bin = agent_build(false)?;
    let version = output(&["prometheus", "--version"]).unwrap_or_default();
    let version = version.split_whitespace().nth(2).unwrap_or("of unknown version").to_owned();
    let details: Vec<Option<&str>> = if args.detail.is_empty() {
        vec![None]
    } else {
        args.detail.iter().map(|d| Some(d.as_str())).collect()
    };
    let mut rows = String::new();
    for detail in details {
        rows.push_str(&one_agent(&bin, args, detail)?);
    }
    let section = section(args, &version, &rows);
    println!("\n{section}");
    ok(&format!("the whole run took {:.0} s", started.elapsed().as_secs_f64()));
    if args.record {
        // The two forms of the histograms are two sections, side by side.
        record::update(if args.native { "fleet-native" } else { "fleet" }, &section)?;
        ok("BENCHMARKS.md updated");
    }
    Ok(())
}

/// The arguments' bounds, and open files enough for the largest fleet.
fn check(args: &FleetArgs) -> Result<()> {
    if args.nodes.is_empty() || args.nodes.contains(&0) {
        bail!("--nodes: at least one fleet size, each at least 1");
    }
    if !(1..=250).contains(&args.cells) {
        bail!("--cells: 1 to 250 (cell i is 127.194.i.0/24)");
    }
    if args.pairs == 0 || args.pairs > args.cells * args.cells {
        bail!("--pairs: 1 to cells squared ({})", args.cells * args.cells);
    }
    if args.interval < 2 || args.rounds == 0 {
        bail!("--interval: at least 2 s; --rounds: at least 1");
    }
    let most = args.nodes.iter().copied().max().unwrap_or(0);
    // The targets' listeners and their connections here, and Prometheus' connections to
    // them (it inherits the limit), with room for both processes' other files.
    raise_nofile(u64::try_from(most)?.saturating_mul(2) + 1024)
}

/// Raises the soft limit of open files to `need` if it is lower; fails if the hard limit
/// is lower.
fn raise_nofile(need: u64) -> Result<()> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid rlimit that the call writes and that outlives it.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
        bail!("getrlimit(RLIMIT_NOFILE): {}", std::io::Error::last_os_error());
    }
    if lim.rlim_cur >= need {
        return Ok(());
    }
    if lim.rlim_max < need {
        bail!("{need} open files are needed, the hard limit is {} (ulimit -Hn)", lim.rlim_max);
    }
    let old = lim.rlim_cur;
    lim.rlim_cur = need;
    // SAFETY: `lim` is a valid rlimit that lives across the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) } != 0 {
        bail!("setrlimit(RLIMIT_NOFILE, {need}): {}", std::io::Error::last_os_error());
    }
    ok(&format!("open files: soft limit raised from {old} to {need}"));
    Ok(())
}

/// What `--detail` and `--agent-arg` give `cellwatch run`.
fn agent_argv(detail: Option<&str>, extra: &[String]) -> Vec<String> {
    let mut argv: Vec<String> =
        detail.map(|d| vec!["--metrics-detail".to_owned(), d.to_owned()]).unwrap_or_default();
    argv.extend(extra.iter().cloned());
    argv
}

/// One agent at detail level `detail`, its pairs active, and a fleet of each size
/// scraping it: the table rows.
fn one_agent(bin: &Path, args: &FleetArgs, detail: Option<&str>) -> Result<String> {
    let label = detail.unwrap_or("default");
    step(&format!("the agent: {} cells, {} active pairs, detail {label}", args.cells, args.pairs));
    let argv = agent_argv(detail, &args.agent_args);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let agent = start_agent(bin, &agent_config(args.cells, args.pairs), &argv)?;
    let every = Duration::from_secs(args.interval);
    let traffic = Traffic::start(args.cells, args.pairs, every)?;
    let (status, body) = http_get(agent.port, "/metrics")?;
    if status != 200 {
        bail!("the agent's /metrics answered {status}");
    }
    let samples = body.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).count();
    ok(&format!("the agent serves {samples} samples; {}", answer_sizes(agent.port)?));
    let mut rows = String::new();
    for &n in &args.nodes {
        step(&format!("{n} nodes, detail {label}"));
        let row = one_fleet(bin, &agent, args, n, label)?;
        ok(&row);
        rows.push_str(&row);
    }
    drop(traffic);
    drop(agent);
    Ok(rows)
}

/// One Prometheus scraping `n` targets that serve `agent`'s answer: one table row.
fn one_fleet(bin: &Path, agent: &Agent, args: &FleetArgs, n: usize, label: &str) -> Result<String> {
    let t = Instant::now();
    let targets = Targets::start(n, agent.port, Duration::from_secs(args.interval))?;
    let mut prom = Prom::start(&targets.ports, args.interval, args.native)?;
    ok(&format!("{n} targets and Prometheus up in {:.1} s", t.elapsed().as_secs_f64()));
    let evals = settle(&mut prom, n, args)?;
    ok(&format!(
        "settled after {:.0} s; the agent rendered {} answers for {} scrapes",
        t.elapsed().as_secs_f64(),
        targets.cache.fetches.load(Ordering::Relaxed),
        targets.served.iter().map(|s| s.load(Ordering::Relaxed)).sum::<u64>()
    ));
    let m = measure(&prom, n)?;
    let reports = (0..REPORTS).map(|_| timed_report(bin, &prom)).collect::<Result<Vec<f64>>>();
    let reports = match reports {
        Ok(times) => stats::stats(&times),
        Err(e) => {
            ok(&format!("cellwatch report: {e:#}"));
            "failed".to_owned()
        }
    };
    Ok(row(n, label, &m, &evals, &reports))
}

/// The command line that reproduces the run, every value spelled out.
fn command_line(args: &FleetArgs) -> String {
    let nodes: Vec<String> = args.nodes.iter().map(ToString::to_string).collect();
    let mut c = format!(
        "cargo xtask bench fleet --nodes {} --cells {} --pairs {} --interval {} --rounds {}",
        nodes.join(","),
        args.cells,
        args.pairs,
        args.interval,
        args.rounds
    );
    if !args.detail.is_empty() {
        c.push_str(&format!(" --detail {}", args.detail.join(",")));
    }
    if args.native {
        c.push_str(" --native");
    }
    for a in &args.agent_args {
        c.push_str(&format!(" --agent-arg={a}"));
    }
    c
}

/// The table with the command line and what it measured above it.
fn section(args: &FleetArgs, version: &str, rows: &str) -> String {
    let plan = active_pairs(args.cells, args.pairs);
    let violating = plan.iter().filter(|&&(s, d)| violates(s, d, args.cells)).count();
    format!(
        "### Fleet: one Prometheus scraping N nodes{}\n\n`{}`\n\n\
         One agent ({} cells, {} active pairs of which {violating} are violations, one \
         loopback connection per pair per interval) stands for every node: its `/metrics` is \
         served under N ports on 127.0.0.1, each scraped as a target of its own (`instance`) by \
         one Prometheus {version}{} every {} s, with the shipped rules \
         (deploy/prometheus/cellwatch-rules.yaml) evaluated every {} s. Measured once every \
         target was scraped {} times and each rule group evaluated twice since all were up. \
         Scrape duration is the fleet's server answering (the agent's answer cached for one \
         interval per `Accept` and `Accept-Encoding`), not the agent's render; rule groups: \
         `prometheus_rule_group_last_duration_seconds`, median of the evaluations seen, and \
         the evaluations skipped because the one before overran the interval \
         (`prometheus_rule_group_iterations_missed_total`); \
         `cellwatch report`: its default range (1h), {REPORTS} runs, median [min, max].\n\n\
         | nodes | detail | series in the head | per node | samples per scrape: all targets \
         / one | scrape duration p50 / max | rule groups: records + alerts = sum | rule \
         evaluations missed | Prometheus RSS | head chunks | `cellwatch report` |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n\
         {rows}",
        if args.native { ", native histograms" } else { "" },
        command_line(args),
        args.cells,
        args.pairs,
        if args.native { " (`--enable-feature=native-histograms`)" } else { "" },
        args.interval,
        args.interval,
        args.rounds,
    )
}

/// Cell `i`'s address `host`: 127.194.i.host.
fn cell_ip(i: usize, host: u8) -> IpAddr {
    let i = u8::try_from(i).expect("at most 250 cells: the octet fits");
    IpAddr::V4(Ipv4Addr::new(CELL_NET.0, CELL_NET.1, i, host))
}

/// The active pairs (client cell, server cell): pair `k` goes from cell `k % cells` to the
/// cell `k / cells` after it, so each client cell has about as many servers as the others
/// and the first of them is its own cell.
fn active_pairs(cells: usize, pairs: usize) -> Vec<(usize, usize)> {
    (0..pairs).map(|k| (k % cells, (k % cells + k / cells) % cells)).collect()
}

/// Whether pair `(src, dst)` is a violation: the next cell's, from even cells (about a
/// tenth of the pairs at 10 cells and 50 pairs); every other pair is allowed.
fn violates(src: usize, dst: usize, cells: usize) -> bool {
    cells > 1 && (dst + cells - src) % cells == 1 && src.is_multiple_of(2)
}

/// The agent's config: the cells, an allow rule for every active pair across cells but
/// the violating ones, and the harness range (the scrapes, Prometheus) ignored.
fn agent_config(cells: usize, pairs: usize) -> String {
    let mut y = String::from("cells:\n");
    for i in 0..cells {
        y.push_str(&format!(
            "  - {{ name: c{i:03}, cidrs: [{}.{}.{i}.0/24] }}\n",
            CELL_NET.0, CELL_NET.1
        ));
    }
    let allowed: Vec<String> = active_pairs(cells, pairs)
        .into_iter()
        .filter(|&(s, d)| s != d && !violates(s, d, cells))
        .map(|(s, d)| format!("  - {{ from: c{s:03}, to: c{d:03} }}\n"))
        .collect();
    if !allowed.is_empty() {
        y.push_str("allow:\n");
        y.push_str(&allowed.concat());
    }
    y.push_str(&format!("ignore_cidrs: [{}]\n", HARNESS.cidr(0)));
    y
}

/// The pairs' traffic: a server listener per cell, and one connection per active pair
/// (REQ bytes out, RESP back, the client closing first) at start and every interval after,
/// from one thread, until dropped.
struct Traffic {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Traffic {
    /// Makes the first round (so the pairs are active when it returns), then the others.
    fn start(cells: usize, pairs: usize, every: Duration) -> Result<Self> {
        let servers: Vec<TcpListener> = (0..cells)
            .map(|i| TcpListener::bind(SocketAddr::new(cell_ip(i, 1), 0)))
            .collect::<Result<_, _>>()
            .context("the cells' servers")?;
        let plan = active_pairs(cells, pairs);
        traffic_round(&servers, &plan).context("the pairs' first connections")?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                if let Err(e) = traffic_round(&servers, &plan) {
                    ok(&format!("pair traffic: {e:#}"));
                }
            }
        });
        Ok(Self { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection per pair of `plan`, both ends served by this thread in turn: the
/// connection is queued on the listener once connected, so the accept does not wait.
fn traffic_round(servers: &[TcpListener], plan: &[(usize, usize)]) -> Result<()> {
    let limit = Some(Duration::from_secs(5));
    for &(src, dst) in plan {
        let mut c = connect_from(cell_ip(src, 2), servers[dst].local_addr()?)?;
        c.set_read_timeout(limit)?;
        c.write_all(&[b'q'; REQ])?;
        let (mut s, _) = servers[dst].accept()?;
        s.set_read_timeout(limit)?;
        s.read_exact(&mut [0; REQ])?;
        s.write_all(&[b'r'; RESP])?;
        c.read_exact(&mut [0; RESP])?;
        drop(c);
        let _ = s.read(&mut [0; 1]);
    }
    Ok(())
}

/// The agent's answer to one `GET /metrics`, as the targets serve it again.
#[derive(Debug)]
struct Answer {
    at: Instant,
    status: u16,
    content_type: String,
    encoding: Option<String>,
    body: Vec<u8>,
}

/// An HTTP response's status, `Content-Type`, `Content-Encoding` and body (a response
/// to HTTP/1.0: no chunks).
fn parse_answer(raw: &[u8]) -> Result<Answer> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").context("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)?.parse().ok());
    let mut answer = Answer {
        at: Instant::now(),
        status: status.context("no status line")?,
        content_type: "text/plain; version=0.0.4".to_owned(),
        encoding: None,
        body: raw[split + 4..].to_vec(),
    };
    for (name, value) in lines.filter_map(|l| l.split_once(':')) {
        let value = value.trim().to_owned();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-type" => answer.content_type = value,
            "content-encoding" => answer.encoding = Some(value),
            "transfer-encoding" => bail!("a chunked answer to HTTP/1.0"),
            _ => {}
        }
    }
    Ok(answer)
}

/// The agent's answers by (`Accept`, `Accept-Encoding`), each kept for `ttl`.
struct Cache {
    agent: u16,
    ttl: Duration,
    answers: Mutex<HashMap<(String, String), Arc<Answer>>>,
    /// How many times the agent was asked.
    fetches: AtomicU64,
}

impl Cache {
    /// The answer to these headers: the one kept, or a new one from the agent (the lock is
    /// held while it is fetched, so targets scraped meanwhile wait for it).
    fn get(&self, accept: &str, encoding: &str) -> Result<Arc<Answer>> {
        let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (accept.to_owned(), encoding.to_owned());
        if let Some(a) = answers.get(&key)
            && a.at.elapsed() < self.ttl
        {
            return Ok(Arc::clone(a));
        }
        let a = Arc::new(self.fetch(accept, encoding)?);
        self.fetches.fetch_add(1, Ordering::Relaxed);
        answers.insert(key, Arc::clone(&a));
        Ok(a)
    }

    fn fetch(&self, accept: &str, encoding: &str) -> Result<Answer> {
        let at = SocketAddr::from(([127, 0, 0, 1], self.agent));
        let mut s = TcpStream::connect_timeout(&at, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut req = String::from("GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n");
        for (name, value) in [("Accept", accept), ("Accept-Encoding", encoding)] {
            if !value.is_empty() {
                req.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        parse_answer(&raw)
    }
}

/// The size of the agent's answer in each form: text and protobuf, plain and gzip.
fn answer_sizes(agent: u16) -> Result<String> {
    let cache = Cache {
        agent,
        ttl: Duration::ZERO,
        answers: Mutex::new(HashMap::new()),
        fetches: AtomicU64::new(0),
    };
    let mut sizes = Vec::new();
    for (form, accept) in [("text", ""), ("protobuf", agent_core::metrics::proto::CONTENT_TYPE)] {
        let plain = cache.fetch(accept, "")?.body.len();
        let gzip = cache.fetch(accept, "gzip")?;
        if gzip.encoding.as_deref() != Some("gzip") {
            bail!("the agent did not gzip its {form} answer");
        }
        let kb = |n: usize| n as f64 / 1e3;
        sizes.push(format!("{form} {:.0} KB ({:.0} KB gzip)", kb(plain), kb(gzip.body.len())));
    }
    Ok(sizes.join(", "))
}

/// A scrape's request line and the headers that go on to the agent.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    path: String,
    accept: String,
    encoding: String,
}

/// The request in `head` (its text up to the blank line).
fn parse_request(head: &str) -> Option<Request> {
    let mut lines = head.lines();
    let mut first = lines.next()?.split_whitespace();
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let mut r = Request { method, path, accept: String::new(), encoding: String::new() };
    for (name, value) in lines.filter_map(|l| l.split_once(':')) {
        match name.trim().to_ascii_lowercase().as_str() {
            "accept" => value.trim().clone_into(&mut r.accept),
            "accept-encoding" => value.trim().clone_into(&mut r.encoding),
            _ => {}
        }
    }
    Some(r)
}

/// The fleet's targets: `n` listeners on 127.0.0.1, one thread waiting on all of them
/// (poll) and WORKERS answering; stopped when dropped.
struct Targets {
    ports: Vec<u16>,
    /// Scrapes answered 200, per target.
    served: Arc<Vec<AtomicU64>>,
    cache: Arc<Cache>,
    done: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Targets {
    fn start(n: usize, agent: u16, ttl: Duration) -> Result<Self> {
        let listeners: Vec<TcpListener> = (0..n)
            .map(|_| {
                let l = TcpListener::bind("127.0.0.1:0")?;
                l.set_nonblocking(true)?;
                Ok(l)
            })
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("{n} listeners on 127.0.0.1"))?;
        let ports =
            listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<Result<_, _>>()?;
        let served: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
        let answers = Mutex::new(HashMap::new());
        let cache = Arc::new(Cache { agent, ttl, answers, fetches: AtomicU64::new(0) });
        let done = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<(usize, TcpStream)>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::new();
        let stop = Arc::clone(&done);
        threads.push(thread::spawn(move || accept_loop(&listeners, &tx, &stop)));
        for _ in 0..WORKERS {
            let (rx, cache, served) = (Arc::clone(&rx), Arc::clone(&cache), Arc::clone(&served));
            threads.push(thread::spawn(move || {
                loop {
                    let job = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                    let Ok((i, s)) = job else { return };
                    if serve(s, &cache).unwrap_or(false) {
                        served[i].fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        Ok(Self { ports, served, cache, done, threads })
    }
}

impl Drop for Targets {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Hands every connection made to a listener to the workers (with the listener's index)
/// until `done`; the workers stop when it returns (the sender goes).
fn accept_loop(
    listeners: &[TcpListener],
    tx: &mpsc::Sender<(usize, TcpStream)>,
    done: &AtomicBool,
) {
    let mut fds: Vec<libc::pollfd> = listeners
        .iter()
        .map(|l| libc::pollfd { fd: l.as_raw_fd(), events: libc::POLLIN, revents: 0 })
        .collect();
    let nfds = libc::nfds_t::try_from(fds.len()).expect("as many listeners as poll takes");
    while !done.load(Ordering::Relaxed) {
        // SAFETY: `fds` holds `nfds` valid pollfds, on descriptors the listeners keep open
        // across the call. At most 100 ms, to see `done`.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), nfds, 100) };
        if ready <= 0 {
            continue;
        }
        for (i, fd) in fds.iter_mut().enumerate() {
            if fd.revents & libc::POLLIN == 0 {
                continue;
            }
            fd.revents = 0;
            while let Ok((s, _)) = listeners[i].accept() {
                if tx.send((i, s)).is_err() {
                    return;
                }
            }
        }
    }
}

/// Answers one connection's request: the agent's answer (kept) to `GET /metrics`, 404 to
/// anything else, 502 when the agent does not answer. Whether it answered 200.
fn serve(mut s: TcpStream, cache: &Cache) -> Result<bool> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut head = Vec::new();
    let mut buf = [0; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf)?;
        if n == 0 || head.len() > 16 << 10 {
            bail!("no whole request");
        }
        head.extend_from_slice(&buf[..n]);
    }
    let req = parse_request(&String::from_utf8_lossy(&head)).context("no request line")?;
    let metrics = req.method == "GET" && req.path.split('?').next() == Some("/metrics");
    let answer = metrics.then(|| cache.get(&req.accept, &req.encoding));
    let (status, ctype, encoding, body) = match &answer {
        Some(Ok(a)) => {
            (a.status, a.content_type.as_str(), a.encoding.as_deref(), a.body.as_slice())
        }
        None => (404, "text/plain", None, &b"not found\n"[..]),
        Some(Err(_)) => (502, "text/plain", None, &b"the agent did not answer\n"[..]),
    };
    let mut out = format!("HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\n", reason(status));
    if let Some(e) = encoding {
        out.push_str(&format!("Content-Encoding: {e}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()));
    s.write_all(out.as_bytes())?;
    s.write_all(body)?;
    Ok(status == 200)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        502 => "Bad Gateway",
        _ => "Other",
    }
}

/// A Prometheus with storage of its own scraping `targets` as job `cellwatch`; stopped
/// (SIGTERM, then SIGKILL after 10 s) and its directory removed when dropped.
struct Prom {
    child: Child,
    port: u16,
    dir: TempDir,
}

/// Prometheus' config: every target in one static group, the shipped rule file `rules`.
fn prom_config(targets: &[u16], interval: u64, rules: &Path) -> String {
    let targets: Vec<String> = targets.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    format!(
        "global:\n  scrape_interval: {interval}s\n  scrape_timeout: {interval}s\n  \
         evaluation_interval: {interval}s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: \
         cellwatch\n    static_configs:\n      - targets: [{}]\n",
        rules.display(),
        targets.join(", ")
    )
}

impl Prom {
    fn start(targets: &[u16], interval: u64, native: bool) -> Result<Self> {
        let dir = TempDir::new("fleet-prometheus");
        let rules = shipped_rules().canonicalize().context("the shipped rule file")?;
        let config = dir.write("prometheus.yml", &prom_config(targets, interval, &rules));
        let port = free_port();
        let log = File::create(dir.0.join("prometheus.log"))?;
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.0.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        if native {
            cmd.arg("--enable-feature=native-histograms");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("prometheus is needed (run `cargo xtask setup`)")?;
        let mut p = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !http_get(p.port, "/-/ready").is_ok_and(|(s, _)| s == 200) {
            p.running()?;
            if Instant::now() > deadline {
                bail!("prometheus: not ready in 60 s:\n{}", p.log());
            }
            thread::sleep(Duration::from_millis(250));
        }
        Ok(p)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The end of its log.
    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.0.join("prometheus.log")).unwrap_or_default();
        let mut from = text.len().saturating_sub(3000);
        while !text.is_char_boundary(from) {
            from += 1;
        }
        text[from..].to_owned()
    }

    /// Fails, with the end of its log, if it has exited.
    fn running(&mut self) -> Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!("prometheus exited ({status}):\n{}", self.log());
        }
        Ok(())
    }

    /// An instant query's first value (none: an empty result).
    fn query(&self, q: &str) -> Result<Option<f64>> {
        let (status, body) = http_get(self.port, &format!("/api/v1/query?query={}", encode(q)))?;
        if status != 200 || !body.contains("\"status\":\"success\"") {
            bail!("query {q}: {status} {body}");
        }
        Ok(first_value(&body))
    }

    /// Its own metrics.
    fn own(&self) -> Result<Metrics> {
        let (status, body) = http_get(self.port, "/metrics")?;
        if status != 200 {
            bail!("prometheus' /metrics answered {status}");
        }
        Ok(Metrics::parse(&body))
    }
}

impl Drop for Prom {
    fn drop(&mut self) {
        cellwatch_tests::terminate(&mut self.child);
    }
}

/// The first sample value of a query API answer (`"value":[<time>,"<value>"]`).
fn first_value(json: &str) -> Option<f64> {
    let rest = &json[json.find("\"value\":[")? + 9..];
    let (_, rest) = rest.split_once(',')?;
    rest.trim_start().strip_prefix('"')?.split('"').next()?.parse().ok()
}

/// Each rule group's last evaluation in Prometheus' own metrics: (group, when, seconds).
fn rule_groups(m: &Metrics) -> Vec<(String, f64, f64)> {
    let group = |k: &str, name: &str| {
        let rest = k.strip_prefix(name)?.strip_prefix("{rule_group=\"")?.strip_suffix("\"}")?;
        Some(rest.rsplit_once(';').map_or(rest, |(_, g)| g).to_owned())
    };
    let last = "prometheus_rule_group_last_evaluation_timestamp_seconds";
    let took = "prometheus_rule_group_last_duration_seconds";
    let when: BTreeMap<String, f64> =
        m.0.iter().filter_map(|(k, v)| Some((group(k, last)?, *v))).collect();
    m.0.iter()
        .filter_map(|(k, v)| {
            let g = group(k, took)?;
            Some((g.clone(), *when.get(&g)?, *v))
        })
        .collect()
}

/// The evaluations of each rule group seen, by group: evaluation time (ms since the
/// epoch) to seconds taken.
type Evals = BTreeMap<String, BTreeMap<u64, f64>>;

/// Waits until all `n` targets are up and scraped `--rounds` times, and each rule group
/// has been evaluated twice since all were up: those evaluations.
fn settle(prom: &mut Prom, n: usize, args: &FleetArgs) -> Result<Evals> {
    // The rule groups may overrun the interval at the larger sizes (an evaluation is then
    // skipped): room for two evaluations of twice the interval after all are up.
    let limit = 300 + (u64::try_from(args.rounds)? + 5) * args.interval;
    let deadline = Instant::now() + Duration::from_secs(limit);
    let mut all_up: Option<f64> = None;
    let mut evals = Evals::new();
    loop {
        let up = prom.query("count(up{job=\"cellwatch\"} == 1)")?.unwrap_or(0.0);
        if all_up.is_none() && up >= n as f64 {
            all_up = Some(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64());
        }
        if let Some(t0) = all_up {
            for (g, at, took) in rule_groups(&prom.own()?) {
                if at >= t0 {
                    let ms = Duration::from_secs_f64(at).as_millis();
                    evals.entry(g).or_default().insert(u64::try_from(ms)?, took);
                }
            }
        }
        let rounds = prom.query("min(count_over_time(up{job=\"cellwatch\"}[1h]))")?;
        let evaluated = GROUPS.iter().all(|g| evals.get(*g).is_some_and(|e| e.len() >= 2));
        if up >= n as f64 && rounds.unwrap_or(0.0) >= args.rounds as f64 && evaluated {
            return Ok(evals);
        }
        if Instant::now() > deadline {
            bail!(
                "not settled in {limit} s: {up} of {n} targets up, {rounds:?} scrapes of the \
                 least scraped, rule evaluations {:?}",
                evals.iter().map(|(g, e)| (g, e.len())).collect::<Vec<_>>()
            );
        }
        prom.running()?;
        thread::sleep(Duration::from_secs(1));
    }
}

/// What one fleet measured in Prometheus.
struct Measured {
    head_series: f64,
    samples: f64,
    samples_one: f64,
    scrape_p50: f64,
    scrape_max: f64,
    rss: f64,
    missed: f64,
    chunks: Option<f64>,
    chunk_bytes: Option<f64>,
}

fn measure(prom: &Prom, n: usize) -> Result<Measured> {
    let q =
        |q: &str| -> Result<f64> { prom.query(q)?.with_context(|| format!("no answer to {q}")) };
    let job = "{job=\"cellwatch\"}";
    let own = prom.own()?;
    let some = |name: &str| own.0.get(name).copied();
    let m = Measured {
        head_series: some("prometheus_tsdb_head_series").context("no head series figure")?,
        samples: q(&format!("sum(scrape_samples_scraped{job})"))?,
        samples_one: q(&format!("quantile(0.5, scrape_samples_scraped{job})"))?,
        scrape_p50: q(&format!("quantile(0.5, scrape_duration_seconds{job})"))?,
        scrape_max: q(&format!("max(max_over_time(scrape_duration_seconds{job}[1h]))"))?,
        rss: some("process_resident_memory_bytes").unwrap_or(0.0),
        missed: own
            .0
            .iter()
            .filter(|(k, _)| k.starts_with("prometheus_rule_group_iterations_missed_total{"))
            .map(|(_, v)| v)
            .sum(),
        chunks: some("prometheus_tsdb_head_chunks"),
        chunk_bytes: some("prometheus_tsdb_head_chunks_storage_size_bytes"),
    };
    let targets = q(&format!("count(scrape_samples_scraped{job})"))?;
    if targets < n as f64 {
        bail!("{targets} of {n} targets have a sample count");
    }
    Ok(m)
}

/// One `cellwatch report --prometheus <url>`: its wall time, seconds. Fails if it fails
/// or takes longer than REPORT_LIMIT (it is killed then).
fn timed_report(bin: &Path, prom: &Prom) -> Result<f64> {
    let (out, err) = (prom.dir.0.join("report.txt"), prom.dir.0.join("report.err"));
    let t = Instant::now();
    let mut c = Command::new(bin)
        .args(["report", "--prometheus", &prom.url()])
        .stdin(Stdio::null())
        .stdout(File::create(&out)?)
        .stderr(File::create(&err)?)
        .spawn()
        .context("start cellwatch report")?;
    let status = wait_bounded(&mut c, REPORT_LIMIT)?;
    let secs = t.elapsed().as_secs_f64();
    if !status.success() {
        bail!("{status}: {}", std::fs::read_to_string(&err).unwrap_or_default().trim());
    }
    Ok(secs)
}

/// Waits at most `limit` for `c`, killing it after.
fn wait_bounded(c: &mut Child, limit: Duration) -> Result<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = c.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            bail!("still running after {limit:?}: killed");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// One table row.
fn row(n: usize, label: &str, m: &Measured, evals: &Evals, report: &str) -> String {
    let ms = |s: f64| format!("{:.1} ms", s * 1e3);
    let median = |e: &BTreeMap<u64, f64>| stats::median(&e.values().copied().collect::<Vec<_>>());
    let group = |g: &str| evals.get(g).map_or("-".to_owned(), |e| ms(median(e)));
    let all: f64 = evals.values().map(median).sum();
    let chunks = match (m.chunks, m.chunk_bytes) {
        (Some(c), Some(b)) => format!("{c:.0} ({:.1} MB)", b / 1e6),
        (Some(c), None) => format!("{c:.0}"),
        _ => "-".to_owned(),
    };
    format!(
        "| {n} | {label} | {:.0} | {:.0} | {:.0} / {:.0} | {} / {} | {} + {} = {} | {:.0} | {:.0} MiB | \
         {chunks} | {report} |\n",
        m.head_series,
        m.head_series / n as f64,
        m.samples,
        m.samples_one,
        ms(m.scrape_p50),
        ms(m.scrape_max),
        group(GROUPS[0]),
        group(GROUPS[1]),
        ms(all),
        m.missed,
        m.rss / f64::from(1u32 << 20),
    )
}
