//! `cargo xtask bench udp`: what the agent's cgroup skb programs cost UDP, on loopback
//! between cells of the bench's own. Two loads: iperf3 (`-u -b 0`, so CPU-bound) from
//! cell-a to cell-b at several datagram sizes, and a DNS query flood (dnsperf) from cell-a
//! against a real resolver (dnsmasq) in the global cell, a `protocol: udp` service on port
//! 53. Variants: no agent, cellwatch in audit mode, in audit mode `--without udp` (the skb
//! programs off), and in enforce mode, where iperf3 goes to the global cell instead (enforce
//! mode would refuse cell-a -> cell-b). Each round starts a fresh agent per variant, which
//! carries every load of the round in turn; rounds are interleaved. Every run with the
//! programs on checks the agent's counts against the tools' own (the datagrams iperf3 sent
//! and the server's socket got, the answers dnsperf got), and one more audit run with
//! `kernel.bpf_stats_enabled` gives each program's time per run.
use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    path::Path,
    process::{Child, Command, Stdio},
    str::FromStr,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use cellwatch_tests::{Agent, Metrics, TempDir, free_port, ranges::HARNESS, terminate};

use super::{
    harness::{
        Beside, Bins, BpfStats, SKB_PROGRAMS, Variant, interleaved_in, prog_runs, require_udp,
        start_agent,
    },
    record,
    stats::{median, min_max},
};
use crate::util::{ok, step};

/// The bench's /16s (second octets): global, cell-a, cell-b. Apart from the tests'
/// (`cellwatch_tests::ranges`) and the other benches' (127.170–173, 127.180–194).
const GLOBAL: u8 = 220;
const CELL_A: u8 = 221;
const CELL_B: u8 = 222;
/// Every client: iperf3's and dnsperf's.
const CLIENT: Ipv4Addr = Ipv4Addr::new(127, CELL_A, 0, 1);
/// iperf3's server in cell-b: cell-a -> cell-b is a violation (no rule allows it).
const SERVER: Ipv4Addr = Ipv4Addr::new(127, CELL_B, 0, 1);
/// iperf3's server in the global cell, which every cell may call: the enforce variant's.
const ALLOWED_SERVER: Ipv4Addr = Ipv4Addr::new(127, GLOBAL, 0, 1);
/// dnsmasq, the `dns` service.
const RESOLVER: Ipv4Addr = Ipv4Addr::new(127, GLOBAL, 0, 53);
/// What it answers for every name under `ok.test`.
const ANSWER: Ipv4Addr = Ipv4Addr::new(127, GLOBAL, 0, 9);

const VARIANTS: [Variant; 4] =
    [Variant::None, Variant::Audit, Variant::AuditWithoutUdp, Variant::Enforce];

/// The bench's cell map, in `mode`.
fn config(mode: &str) -> String {
    format!(
        "cells:\n  - {{ name: global, global: true, cidrs: [\"127.{GLOBAL}.0.0/16\"] }}\n  \
         - {{ name: cell-a, cidrs: [\"127.{CELL_A}.0.0/16\"] }}\n  \
         - {{ name: cell-b, cidrs: [\"127.{CELL_B}.0.0/16\"] }}\n\
         services:\n  - {{ name: dns, cidrs: [\"{RESOLVER}/32\"], ports: [53], protocol: udp }}\n\
         ignore_cidrs: [\"{}\"]\nmode: {mode}\n",
        HARNESS.cidr(0)
    )
}

/// Whether the variant runs the skb programs.
fn counts_udp(v: Variant) -> bool {
    matches!(v, Variant::Audit | Variant::Enforce)
}

/// Where a variant's iperf3 traffic goes, and that server's cell.
fn server_of(v: Variant) -> (Ipv4Addr, &'static str) {
    if v == Variant::Enforce { (ALLOWED_SERVER, "global") } else { (SERVER, "cell-b") }
}

struct Params {
    runs: usize,
    sizes: &'static [usize],
    /// iperf3's `-t`.
    secs: u32,
    /// dnsperf's `-l`.
    dns_secs: u32,
}

/// `smoke`: one short run of each variant (one datagram size), nothing recorded.
pub(crate) fn udp(smoke: bool) -> Result<()> {
    let p = if smoke {
        Params { runs: 1, sizes: &[512], secs: 1, dns_secs: 1 }
    } else {
        Params { runs: 7, sizes: &[64, 512, 1400], secs: 3, dns_secs: 5 }
    };
    let bins = Bins::get(smoke, None)?;
    let dir = TempDir::new("bench-udp");
    // Bounds for the servers, which end by themselves after it if the bench does not stop
    // them: far more than the runs take.
    let limit = Duration::from_secs(if smoke { 300 } else { 3600 });
    let ports = (free_port(), free_port());
    let _servers = [
        iperf_server(SERVER, ports.0, limit)?,
        iperf_server(ALLOWED_SERVER, ports.1, limit)?,
        resolver(&dir, limit)?,
    ];
    let queries =
        dir.write("queries.txt", &(0..10).map(|i| format!("q{i}.ok.test A\n")).collect::<String>());
    step(&format!(
        "udp: iperf3 -u at {:?}-byte datagrams for {} s, then dnsperf for {} s, per agent; {} runs \
         of each variant, interleaved",
        p.sizes, p.secs, p.dns_secs, p.runs
    ));
    let mut rounds: Vec<Vec<Round>> = (0..VARIANTS.len()).map(|_| Vec::new()).collect();
    interleaved_in(
        p.runs,
        &bins,
        &VARIANTS,
        &config,
        |i, beside| {
            let v = VARIANTS[i];
            let (to, dst) = server_of(v);
            let port = if v == Variant::Enforce { ports.1 } else { ports.0 };
            let agent = agent_of(beside);
            let mut iperfs = Vec::new();
            for &len in p.sizes {
                let before = Counters::read(agent)?;
                let mut r = iperf(to, port, len, p.secs)?;
                r.exact = check_iperf(v, agent, &before, &r, dst)?;
                ok(&format!(
                    "{len:>4}-byte datagrams: {:>7.1} Mbit/s received, {:>7.0} sent/s, {:>4.1}% \
                     lost",
                    r.recv_mbit,
                    r.sent_per_sec(),
                    r.lost_percent()
                ));
                iperfs.push(r);
            }
            let before = Counters::read(agent)?;
            let mut dns = dnsperf(&queries, p.dns_secs)?;
            dns.counted = check_dns(v, agent, &before, &dns)?;
            dns.rcvbuf = rcvbuf_errors()? - before.rcvbuf_errors;
            let qps = dns.qps;
            rounds[i].push(Round { iperf: iperfs, dns });
            Ok(qps)
        },
        |qps| format!("{qps:>8.0} DNS queries/s"),
    )?;
    let costs = profile(&bins, &p, &queries, ports.0)?;
    if smoke {
        ok("smoke run done (nothing recorded)");
        return Ok(());
    }
    record::update("udp", &throughput_section(&p, &rounds, &costs))?;
    record::update("udp-dns", &dns_section(&p, &rounds, &costs))?;
    ok("BENCHMARKS.md updated");
    Ok(())
}

/// One variant's measurements in one round.
struct Round {
    iperf: Vec<Iperf>,
    dns: Dnsperf,
}

fn agent_of(beside: &Beside) -> Option<&Agent> {
    match beside {
        Beside::Agent(a) => Some(a),
        _ => None,
    }
}

/// A server of the bench's own (iperf3, dnsmasq), under `timeout` so that it ends by
/// itself if the bench does not stop it; stopped on drop (SIGTERM, which `timeout`
/// passes on).
struct Daemon(Child);

impl Daemon {
    fn start(what: &str, limit: Duration, argv: &[&str], ready: impl Fn() -> bool) -> Result<Self> {
        let child = Command::new("timeout")
            .args(["-k", "5", &limit.as_secs().to_string()])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {what} (run `cargo xtask setup`)"))?;
        let mut d = Self(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready() {
            if let Ok(Some(status)) = d.0.try_wait() {
                bail!("{what} exited with {status} before it was ready");
            }
            if Instant::now() > deadline {
                bail!("{what} not ready after 10 s");
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(d)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        terminate(&mut self.0);
    }
}

/// iperf3's server on `ip:port`, ready once it listens (its control connection is TCP).
fn iperf_server(ip: Ipv4Addr, port: u16, limit: Duration) -> Result<Daemon> {
    let (ip_s, port_s) = (ip.to_string(), port.to_string());
    Daemon::start("iperf3 -s", limit, &["iperf3", "-s", "-B", &ip_s, "-p", &port_s], || {
        // /proc/net/tcp: the address as the hex of its bytes read as a native u32.
        let want = format!("{:08X}:{port:04X}", u32::from_le_bytes(ip.octets()));
        std::fs::read_to_string("/proc/net/tcp").is_ok_and(|t| {
            t.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1] == want && f[3] == "0A"
            })
        })
    })
}

/// dnsmasq on RESOLVER:53: every name under `ok.test` is ANSWER, anything else under `test`
/// NXDOMAIN, nothing forwarded. Ready once it logs that it started.
fn resolver(dir: &TempDir, limit: Duration) -> Result<Daemon> {
    let log = dir.0.join("dnsmasq.log");
    let args = [
        format!("--listen-address={RESOLVER}"),
        format!("--address=/ok.test/{ANSWER}"),
        format!("--log-facility={}", log.display()),
        format!("--pid-file={}", dir.0.join("dnsmasq.pid").display()),
    ];
    let mut argv = vec!["/usr/sbin/dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null"];
    argv.extend(["--bind-interfaces", "--port=53", "--no-resolv", "--no-hosts", "--local=/test/"]);
    argv.extend(["--user=root", "--group=root"]);
    argv.extend(args.iter().map(String::as_str));
    Daemon::start("dnsmasq", limit, &argv, || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("started"))
    })
}

/// What one iperf3 run reports: the client's sent datagrams, the server's received ones.
struct Iperf {
    sent: u64,
    sent_bytes: u64,
    sent_secs: f64,
    /// The highest sequence number the server saw, and the gaps below it.
    packets: u64,
    lost: u64,
    recv_mbit: f64,
    exact: Option<Exact>,
}

impl Iperf {
    fn sent_per_sec(&self) -> f64 {
        self.sent as f64 / self.sent_secs
    }

    /// Datagrams iperf3's server read.
    fn read(&self) -> u64 {
        self.packets - self.lost
    }

    /// Of those sent, not read.
    fn lost_percent(&self) -> f64 {
        100.0 * self.sent.saturating_sub(self.read()) as f64 / self.sent as f64
    }
}

/// iperf3 `-u` from CLIENT to `to:port`: `len`-byte datagrams, as fast as it can, `secs`.
fn iperf(to: Ipv4Addr, port: u16, len: usize, secs: u32) -> Result<Iperf> {
    let run = || {
        Command::new("timeout")
            .args(["-k", "5", &(secs + 30).to_string(), "iperf3", "-c", &to.to_string()])
            .args(["-p", &port.to_string(), "-B", &CLIENT.to_string(), "-u", "-b", "0"])
            .args(["-l", &len.to_string(), "-t", &secs.to_string(), "--json"])
            .stdin(Stdio::null())
            .output()
            .context("iperf3 (run `cargo xtask setup`)")
    };
    // The server takes a moment after a test to take the next one: until then it answers
    // that it is busy. A few tries.
    let mut out = run()?;
    for _ in 0..5 {
        if out.status.success() || !String::from_utf8_lossy(&out.stdout).contains("busy") {
            break;
        }
        thread::sleep(Duration::from_millis(200));
        out = run()?;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let brief = || {
        let at = text.find("\"error\"").unwrap_or(0);
        text[at..].chars().take(300).collect::<String>()
    };
    if !out.status.success() {
        bail!("iperf3 -c {to}:{port} -l {len}: {}: {}", out.status, brief());
    }
    let obj = |k: &str| json_obj(&text, k).with_context(|| format!("iperf3: no {k}: {}", brief()));
    let (s, r) = (obj("sum_sent")?, obj("sum_received")?);
    fn num<T: FromStr>(o: &str, k: &str) -> Result<T> {
        json_num(o, k).with_context(|| format!("iperf3: no {k} in {o}"))
    }
    Ok(Iperf {
        sent: num(s, "packets")?,
        sent_bytes: num(s, "bytes")?,
        sent_secs: num(s, "seconds")?,
        packets: num(r, "packets")?,
        lost: num(r, "lost_packets")?,
        recv_mbit: num::<f64>(r, "bits_per_second")? / 1e6,
        exact: None,
    })
}

/// The flat object after `"key":` in iperf3's JSON, up to its closing brace.
fn json_obj<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let rest = &text[text.find(&format!("\"{key}\":"))?..];
    Some(&rest[..rest.find('}')?])
}

/// The number after `"key":` in `obj`.
fn json_num<T: FromStr>(obj: &str, key: &str) -> Option<T> {
    let at = obj.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = obj[at..].trim_start();
    let end = rest.find(|c: char| !(c.is_ascii_digit() || ".-+eE".contains(c)))?;
    rest[..end].parse().ok()
}

/// What the agent and the kernel had counted before a load.
struct Counters {
    metrics: Option<Metrics>,
    rcvbuf_errors: u64,
    backlog_drops: u64,
}

impl Counters {
    fn read(agent: Option<&Agent>) -> Result<Self> {
        Ok(Self {
            metrics: agent.map(Agent::metrics),
            rcvbuf_errors: rcvbuf_errors()?,
            backlog_drops: backlog_drops()?,
        })
    }
}

/// `Udp: RcvbufErrors` of /proc/net/snmp: datagrams a socket dropped, its receive buffer
/// full (after the cgroup ingress program ran on them).
fn rcvbuf_errors() -> Result<u64> {
    let t = std::fs::read_to_string("/proc/net/snmp")?;
    let mut udp = t.lines().filter(|l| l.starts_with("Udp:")).map(|l| l.split_whitespace());
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        bail!("/proc/net/snmp: no Udp lines");
    };
    let at = names.clone().position(|n| n == "RcvbufErrors").context("no RcvbufErrors")?;
    values.clone().nth(at).and_then(|v| v.parse().ok()).context("RcvbufErrors")
}

/// Packets the CPUs' backlog queues dropped (the second column of /proc/net/softnet_stat):
/// on loopback, the only place between a socket's send and the receiving socket where a
/// datagram can be lost before the ingress program.
fn backlog_drops() -> Result<u64> {
    let t = std::fs::read_to_string("/proc/net/softnet_stat")?;
    Ok(t.lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|v| u64::from_str_radix(v, 16).ok())
        .sum())
}

/// One run's counts of cell-a -> `dst` by the agent, beside iperf3's and the kernel's.
struct Exact {
    sent: u64,
    egress: u64,
    ingress: u64,
    read: u64,
    rcvbuf: u64,
    backlog: u64,
}

const SENT: &str = "cellwatch_udp_datagrams_sent_total";
const RECEIVED: &str = "cellwatch_udp_datagrams_received_total";
const BYTES_SENT: &str = "cellwatch_udp_bytes_sent_total";

/// With the programs on, the agent's counts of the run must be iperf3's, exactly:
/// - egress, at the client's socket: every datagram iperf3 sent, and its one 4-byte
///   "connect" message before them (iperf3's UDP handshake: the server answers it with
///   another 4-byte datagram, the only one the other way);
/// - ingress, at the server's socket: every one of those that the loopback's backlog did
///   not drop, which is more than iperf3's server read: the socket then drops some for a
///   full receive buffer (`RcvbufErrors`), and leaves some unread when the test ends.
///
/// Without them, the agent counts no datagram. Returns the counts, with the programs on.
fn check_iperf(
    v: Variant,
    agent: Option<&Agent>,
    before: &Counters,
    r: &Iperf,
    dst: &str,
) -> Result<Option<Exact>> {
    let (Some(agent), Some(m0)) = (agent, &before.metrics) else { return Ok(None) };
    if !counts_udp(v) {
        return without_udp(agent).map(|()| None);
    }
    require_udp(agent)?;
    let labels = |dir| [("src_cell", "cell-a"), ("dst_cell", dst), ("direction", dir)];
    let delta =
        |m: &Metrics, name, dir| whole(m.get(name, &labels(dir)) - m0.get(name, &labels(dir)));
    let backlog = backlog_drops()? - before.backlog_drops;
    let want_ingress = (r.sent + 1).saturating_sub(backlog);
    let m = cellwatch_tests::scrape_until(agent, |m| delta(m, RECEIVED, "ingress") >= want_ingress);
    let rcvbuf = rcvbuf_errors()? - before.rcvbuf_errors;
    let e = Exact {
        sent: r.sent,
        egress: delta(&m, SENT, "egress"),
        ingress: delta(&m, RECEIVED, "ingress"),
        read: r.read(),
        rcvbuf,
        backlog,
    };
    let (bytes, replies) = (
        delta(&m, BYTES_SENT, "egress"),
        (delta(&m, RECEIVED, "egress"), delta(&m, SENT, "ingress")),
    );
    if e.egress != r.sent + 1 || bytes != r.sent_bytes + 4 {
        bail!(
            "cell-a -> {dst}, egress: the agent counted {} datagrams, {bytes} bytes; iperf3 \
             sent {} datagrams, {} bytes, and one 4-byte connect message",
            e.egress,
            r.sent,
            r.sent_bytes
        );
    }
    if e.ingress != want_ingress || e.ingress < e.read + 1 || replies != (1, 1) {
        bail!(
            "cell-a -> {dst}, ingress: the agent counted {} datagrams ({:?} the other way, at the \
             client's and the server's end); sent {} with the connect message, {backlog} dropped \
             by the backlog, {} read by the server",
            e.ingress,
            replies,
            r.sent + 1,
            e.read + 1
        );
    }
    Ok(Some(e))
}

/// `--without udp`: no UDP feature, and no datagram counted.
fn without_udp(agent: &Agent) -> Result<()> {
    let m = agent.metrics();
    let counted: f64 =
        m.0.iter().filter(|(k, _)| k.starts_with("cellwatch_udp_datagrams_")).map(|(_, v)| v).sum();
    let feature = m.get("cellwatch_kernel_feature", &[("feature", "udp")]);
    if counted != 0.0 || feature != 0.0 {
        bail!("--without udp, yet udp is {feature} and {counted} datagrams were counted");
    }
    Ok(())
}

/// What one dnsperf run reports.
struct Dnsperf {
    sent: u64,
    completed: u64,
    noerror: u64,
    qps: f64,
    /// The agent's `cellwatch_dns_queries_total` for cell-a's NOERROR answers, and its
    /// `dns_answer_unmatched` losses, with the programs on.
    counted: Option<(u64, u64)>,
    /// `Udp: RcvbufErrors` during the run: queries (or answers) a socket dropped.
    rcvbuf: u64,
}

impl Dnsperf {
    fn lost(&self) -> u64 {
        self.sent - self.completed
    }
}

/// dnsperf from CLIENT against the resolver for `secs`, the queries from `file` in turn.
fn dnsperf(file: &Path, secs: u32) -> Result<Dnsperf> {
    let out = Command::new("timeout")
        .args(["-k", "5", &(secs + 30).to_string(), "dnsperf", "-s", &RESOLVER.to_string()])
        .args(["-a", &CLIENT.to_string(), "-d"])
        .arg(file)
        // Four sockets, 100 queries outstanding (its default); a query unanswered after 1 s
        // is lost (answers take milliseconds), so the run ends at most 1 s after `secs`.
        .args(["-l", &secs.to_string(), "-c", "4", "-t", "1"])
        .stdin(Stdio::null())
        .output()
        .context("dnsperf (run `cargo xtask setup`)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("dnsperf: {}: {}{}", out.status, text, String::from_utf8_lossy(&out.stderr));
    }
    let after = |key: &str| -> Result<&str> {
        let at = text.find(key).with_context(|| format!("dnsperf: no {key:?} in {text}"))?;
        text[at + key.len()..]
            .split_whitespace()
            .next()
            .with_context(|| format!("dnsperf: {key:?} has no number"))
    };
    let int = |key: &str| -> Result<u64> { Ok(after(key)?.parse()?) };
    Ok(Dnsperf {
        sent: int("Queries sent:")?,
        completed: int("Queries completed:")?,
        noerror: int("NOERROR")?,
        qps: after("Queries per second:")?.parse()?,
        counted: None,
        rcvbuf: 0,
    })
}

/// A counter's value as an integer (counters are whole numbers, exact in an f64 below 2^53).
#[expect(clippy::cast_possible_truncation, reason = "a whole number below 2^53")]
fn whole(v: f64) -> u64 {
    v.round().max(0.0) as u64
}

const DNS_QUERIES: &str = "cellwatch_dns_queries_total";

/// With the programs on, the agent's answered queries of cell-a must be the ones dnsperf
/// saw completed (all NOERROR), and its sent datagrams to the resolver dnsperf's queries.
fn check_dns(
    v: Variant,
    agent: Option<&Agent>,
    before: &Counters,
    d: &Dnsperf,
) -> Result<Option<(u64, u64)>> {
    let (Some(agent), Some(m0)) = (agent, &before.metrics) else { return Ok(None) };
    if !counts_udp(v) {
        return without_udp(agent).map(|()| None);
    }
    let noerror = [("src_cell", "cell-a"), ("service", "dns"), ("rcode", "NOERROR")];
    let answered = |m: &Metrics| {
        m.0.iter().filter(|(k, _)| k.starts_with(DNS_QUERIES)).map(|(_, v)| v).sum::<f64>()
    };
    let m =
        cellwatch_tests::scrape_until(agent, |m| answered(m) - answered(m0) >= d.completed as f64);
    let counted = whole(m.get(DNS_QUERIES, &noerror) - m0.get(DNS_QUERIES, &noerror));
    let all = whole(answered(&m) - answered(m0));
    let to = [("src_cell", "cell-a"), ("dst_cell", "global"), ("direction", "egress")];
    let sent = whole(m.get(SENT, &to) - m0.get(SENT, &to));
    let lost = [("source", "dns_answer_unmatched")];
    let unmatched = whole(
        m.get("cellwatch_events_lost_total", &lost) - m0.get("cellwatch_events_lost_total", &lost),
    );
    if counted != d.noerror || all != d.completed || d.noerror != d.completed || sent != d.sent {
        bail!(
            "DNS: the agent counted {counted} NOERROR answers of {all}, {sent} datagrams sent; \
             dnsperf sent {}, {} completed, {} NOERROR",
            d.sent,
            d.completed,
            d.noerror
        );
    }
    Ok(Some((counted, unmatched)))
}

/// The skb programs' time in one more audit run of each load, `kernel.bpf_stats_enabled`
/// on (it adds two clock reads to every program run, so the throughput runs go without).
struct Costs {
    /// Per datagram size: (egress, ingress) runs and ns, and iperf3's sent datagrams.
    iperf: Vec<([(u64, u64); 2], u64)>,
    /// The same for the DNS load, with dnsperf's queries sent.
    dns: ([(u64, u64); 2], u64),
}

fn profile(bins: &Bins, p: &Params, queries: &Path, port: u16) -> Result<Costs> {
    step("udp: one more audit run of each load, kernel.bpf_stats_enabled on");
    let stats = BpfStats::enable()?;
    let agent = start_agent(&bins.agent, &config("audit"), &[])?;
    require_udp(&agent)?;
    let beside = Beside::Agent(agent);
    let runs = || -> Result<[(u64, u64); 2]> {
        let v = prog_runs(&beside, &SKB_PROGRAMS)?;
        Ok([v[0], v[1]])
    };
    let diff =
        |a: [(u64, u64); 2], b: [(u64, u64); 2]| [0, 1].map(|i| (b[i].0 - a[i].0, b[i].1 - a[i].1));
    let mut iperf_costs = Vec::new();
    for &len in p.sizes {
        let before = runs()?;
        let r = iperf(SERVER, port, len, p.secs)?;
        let d = diff(before, runs()?);
        ok(&format!("{len:>4}-byte datagrams: {}", show_cost(&d)));
        iperf_costs.push((d, r.sent));
    }
    let before = runs()?;
    let dns = dnsperf(queries, p.dns_secs)?;
    let d = diff(before, runs()?);
    ok(&format!("DNS: {}", show_cost(&d)));
    drop(beside);
    drop(stats);
    Ok(Costs { iperf: iperf_costs, dns: (d, dns.sent) })
}

fn ns_per_run((runs, ns): (u64, u64)) -> f64 {
    if runs == 0 { 0.0 } else { ns as f64 / runs as f64 }
}

fn show_cost(d: &[(u64, u64); 2]) -> String {
    format!(
        "egress {} runs, {:.0} ns each; ingress {} runs, {:.0} ns each",
        d[0].0,
        ns_per_run(d[0]),
        d[1].0,
        ns_per_run(d[1])
    )
}

/// `median [min, max]` with `d` decimals.
fn spread(v: &[f64], d: usize) -> String {
    let (min, max) = min_max(v);
    format!("{:.d$} [{min:.d$}, {max:.d$}]", median(v))
}

/// Per size and variant: sent datagrams/s, received Mbit/s, each with its ratio to no
/// agent, and the share not read.
fn rate_table(p: &Params, rounds: &[Vec<Round>]) -> String {
    let mut t = String::from(
        "| datagram | variant | sent, datagrams/s, median [min, max] | ratio to no agent | received, Mbit/s, median [min, max] | ratio to no agent | not read |\n\
         |---|---|---|---|---|---|---|\n",
    );
    let of = |i: usize, k: usize, f: fn(&Iperf) -> f64| -> Vec<f64> {
        rounds[i].iter().map(|r| f(&r.iperf[k])).collect()
    };
    for (k, len) in p.sizes.iter().enumerate() {
        let base_sent = median(&of(0, k, Iperf::sent_per_sec));
        let base_mbit = median(&of(0, k, |r| r.recv_mbit));
        for (i, v) in VARIANTS.iter().enumerate() {
            let sent = of(i, k, Iperf::sent_per_sec);
            let mbit = of(i, k, |r| r.recv_mbit);
            let label = if *v == Variant::Enforce {
                "cellwatch, enforce (to global)".to_owned()
            } else {
                v.label().to_owned()
            };
            let _ = writeln!(
                t,
                "| {len} B | {label} | {} | {:.3} | {} | {:.3} | {:.1}% |",
                spread(&sent, 0),
                median(&sent) / base_sent,
                spread(&mbit, 1),
                median(&mbit) / base_mbit,
                median(&of(i, k, Iperf::lost_percent)),
            );
        }
    }
    t
}

/// Per size: the skb programs' ns per run and their runs per datagram sent, beside the
/// time per datagram the sender lost in audit mode (from the medians of the rates).
fn cost_table(p: &Params, rounds: &[Vec<Round>], costs: &Costs) -> String {
    let mut c = String::from(
        "| datagram | egress program, ns per run | ingress program, ns per run | runs per datagram sent, egress + ingress | the sender's time per datagram, audit minus no agent |\n|---|---|---|---|---|\n",
    );
    for (k, (len, (d, sent))) in p.sizes.iter().zip(&costs.iperf).enumerate() {
        let rate = |i: usize| {
            median(&rounds[i].iter().map(|r| r.iperf[k].sent_per_sec()).collect::<Vec<_>>())
        };
        let _ = writeln!(
            c,
            "| {len} B | {:.0} | {:.0} | {:.3} + {:.3} | {:.0} ns |",
            ns_per_run(d[0]),
            ns_per_run(d[1]),
            d[0].0 as f64 / *sent as f64,
            d[1].0 as f64 / *sent as f64,
            (1.0 / rate(1) - 1.0 / rate(0)) * 1e9,
        );
    }
    c
}

/// Per size, the first audit run's counts: iperf3's, the agent's and the kernel's.
fn exact_table(p: &Params, rounds: &[Vec<Round>]) -> String {
    let mut e = String::from(
        "| datagram | iperf3 sent | agent, egress (client's socket) | agent, ingress (server's socket) | read by iperf3's server | dropped, receive buffer full (`RcvbufErrors`) | left unread at the end |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for (k, len) in p.sizes.iter().enumerate() {
        let Some(x) = rounds[1].first().and_then(|r| r.iperf[k].exact.as_ref()) else { continue };
        let unread = i128::from(x.ingress) - i128::from(x.read + 1) - i128::from(x.rcvbuf);
        let _ = writeln!(
            e,
            "| {len} B | {} | {} | {} | {} | {} | {unread} |",
            x.sent,
            x.egress,
            x.ingress,
            x.read + 1,
            x.rcvbuf
        );
    }
    e
}

fn throughput_section(p: &Params, rounds: &[Vec<Round>], costs: &Costs) -> String {
    let (t, c, e) = (rate_table(p, rounds), cost_table(p, rounds, costs), exact_table(p, rounds));
    let backlog: u64 = rounds
        .iter()
        .flatten()
        .flat_map(|r| &r.iperf)
        .filter_map(|r| r.exact.as_ref())
        .map(|x| x.backlog)
        .sum();
    let checked =
        rounds.iter().flatten().flat_map(|r| &r.iperf).filter(|r| r.exact.is_some()).count();
    format!(
        "### UDP throughput through the cgroup skb programs\n\n\
         `cargo xtask bench udp`: iperf3 `-u -b 0` (as fast as the sender can) over loopback \
         from cell-a to cell-b, {} s per run at each datagram size (`-l`), one client socket; \
         {runs} runs of each variant, interleaved (each round starts with the next variant, and \
         a fresh agent per variant carries every load of the round); median [min, max]. \
         cell-a -> cell-b is a violation (audit mode counts it and lets it through); enforce \
         mode would refuse it, so its run goes from cell-a to the global cell, an allowed pair \
         (per datagram the two modes take the same path; a datagram of a violating flow adds \
         one check of the mode at egress, in either mode). Sent is the client's rate: on \
         loopback the sending CPU carries each datagram through the egress program, the \
         loopback device and the ingress program up to the server's socket queue, so this is the \
         figure the programs slow. Received is the payload iperf3's server read: its reads, which no program \
         touches, are slower than the sends, so its socket drops the rest (not read: of those \
         sent), and it moves with the share of the 2 CPUs the receiver gets more than with the \
         programs.\n\n{t}\n\
         Kernel time of the two programs (one more audit run of each size with \
         `kernel.bpf_stats_enabled`, which adds two clock reads to each run; a run per datagram \
         at each end, and a few for iperf3's TCP control connection):\n\n{c}\n\
         **Counted exactly.** In each of the {checked} runs with the programs on, the agent's \
         `cellwatch_udp_datagrams_sent_total{{direction=\"egress\"}}` (and `_bytes_`) equalled \
         iperf3's sent datagrams (and bytes) plus its one 4-byte UDP connect message, and \
         `cellwatch_udp_datagrams_received_total{{direction=\"ingress\"}}` every one of them \
         that reached the server's socket ({backlog} dropped on the way, by the backlog queue, \
         over all those runs). The ingress program runs before the socket queues a datagram, \
         so its count is more than the server read: the socket drops what finds its receive \
         buffer full (`Udp: RcvbufErrors`), and what is still queued when iperf3 stops reading \
         is never read. The first audit run of each size:\n\n{e}",
        p.secs,
        runs = p.runs,
    )
}

fn dns_section(p: &Params, rounds: &[Vec<Round>], costs: &Costs) -> String {
    let qps: Vec<Vec<f64>> = rounds.iter().map(|r| r.iter().map(|r| r.dns.qps).collect()).collect();
    let base = median(&qps[0]);
    let mut t = String::from(
        "| variant | queries/s, median [min, max] | ratio to no agent | lost (no answer in 1 s), median |\n|---|---|---|---|\n",
    );
    for (i, v) in VARIANTS.iter().enumerate() {
        let lost: Vec<f64> = rounds[i].iter().map(|r| r.dns.lost() as f64).collect();
        let _ = writeln!(
            t,
            "| {} | {} | {:.3} | {:.0} |",
            v.label(),
            spread(&qps[i], 0),
            median(&qps[i]) / base,
            median(&lost)
        );
    }
    let (d, sent) = costs.dns;
    let (runs, ns) = (d[0].0 + d[1].0, d[0].1 + d[1].1);
    // Each equal to dnsperf's (`check_dns`).
    let counted: Vec<u64> =
        rounds.iter().flatten().filter_map(|r| r.dns.counted.map(|(c, _)| c)).collect();
    let (fewest, most) =
        (counted.iter().min().copied().unwrap_or(0), counted.iter().max().copied().unwrap_or(0));
    let unmatched: u64 =
        rounds.iter().flatten().filter_map(|r| r.dns.counted.map(|(_, u)| u)).sum();
    let lost: u64 = rounds.iter().flatten().map(|r| r.dns.lost()).sum();
    let dropped: u64 = rounds.iter().flatten().map(|r| r.dns.rcvbuf).sum();
    format!(
        "### DNS query flood through the cgroup skb programs\n\n\
         `cargo xtask bench udp`: dnsperf from cell-a (`-a`), 4 sockets, 100 queries \
         outstanding, {} s per run, against dnsmasq in the global cell (the config's `dns` \
         service, `protocol: udp`, port 53; it answers ten names under `ok.test` from its own \
         config, nothing forwarded); both on loopback, sharing the 2 CPUs. Variants as in UDP \
         throughput (every one to the resolver: an allowed pair); {runs} runs of each, \
         interleaved; median [min, max]. With the programs on, each query is four program runs \
         (the client's egress and ingress, the resolver's ingress and egress), the client's \
         ones also reading the DNS header: queries remembered by address, port and id, answers \
         counted by response code.\n\n{t}\n\
         Kernel time of the two programs (one more audit run, `kernel.bpf_stats_enabled`): \
         {:.0} ns per run, {:.2} runs and {:.0} ns per query (egress {:.0} ns, ingress {:.0} ns \
         per run).\n\n\
         **Counted exactly.** In each of the {} runs with the programs on ({fewest} to {most} \
         answered queries a run), the agent's \
         `cellwatch_dns_queries_total{{src_cell=\"cell-a\",service=\"dns\",rcode=\"NOERROR\"}}` \
         equalled dnsperf's \"Queries completed\" (all of them NOERROR), and \
         its datagrams sent from cell-a to the global cell dnsperf's \"Queries sent\"; \
         `cellwatch_events_lost_total{{source=\"dns_answer_unmatched\"}}` rose by {unmatched} \
         over those runs. Lost queries, over all runs: {lost}; datagrams dropped by a socket \
         whose receive buffer was full (`Udp: RcvbufErrors`) in the same runs: {dropped} (a \
         query dnsmasq never read is never answered, so counted by neither).\n",
        p.dns_secs,
        ns_per_run((runs, ns)),
        runs as f64 / sent as f64,
        ns as f64 / sent as f64,
        ns_per_run(d[0]),
        ns_per_run(d[1]),
        counted.len(),
        runs = p.runs,
    )
}
