//! The command line: `run`, `demo`, `top`, `report`, `drain-status`, `check-config` and
//! `uninstall`.
#![forbid(unsafe_code)]

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use agent_core::metrics::{Buckets, Detail};
use agent_view::{drain::cell_name, report::Range};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::logging::LogFormat;

/// Default pin directory of programs and maps.
pub(crate) const DEFAULT_BPFFS: &str = "/sys/fs/bpf/cellwatch";
/// The demo's pin directory, removed when the demo ends.
pub(crate) const DEFAULT_DEMO_BPFFS: &str = "/sys/fs/bpf/cellwatch-demo";
/// Default address of the HTTP endpoints.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:9473";
/// Where `top` finds the agent by default: `DEFAULT_LISTEN`.
pub(crate) const DEFAULT_TOP_URL: &str = "http://127.0.0.1:9473";
/// Default number of live connections tracked in the kernel.
pub(crate) const DEFAULT_CONN_CAPACITY: u32 = 131_072;
/// Default interval of the live sweep.
pub(crate) const DEFAULT_LIVE_INTERVAL: &str = "10s";
/// Shortest and longest live-sweep intervals.
const LIVE_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(3600));
/// Default size of the violation ring buffer, in KiB.
pub(crate) const DEFAULT_EVENTS_BUFFER_KIB: u32 = 256;

#[derive(Debug, Parser)]
#[command(
    name = "cellwatch",
    version,
    about = "Per-cell TCP telemetry and cross-cell leakage detection, from eBPF",
    propagate_version = true
)]
pub(crate) struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the agent: attach the eBPF programs and serve /metrics.
    Run(RunArgs),
    /// Run the agent on an embedded demo cell map over loopback with sample traffic,
    /// leakage included, showing a per-pair table and the newest violations; stops by
    /// itself or on Ctrl-C.
    Demo(DemoArgs),
    /// A live terminal view of a running agent: per cell pair, connections and
    /// violations per second, bytes per second, connect latency and RTT; and the newest
    /// violations. Keys: q quits, s cycles the sort, / filters by cell.
    Top(TopArgs),
    /// Read a Prometheus that scrapes the agents: the blast radius of each service (the
    /// cells that call it, with their share of its connections and bytes), each cell's
    /// dependencies and containment, and outlier cells.
    Report(ReportArgs),
    /// Read a Prometheus that scrapes the agents: whether a drained cell is empty yet. The
    /// drain's start, the connections opened into the cell over the window by client cell,
    /// and the connections still open by node, process and container. Exit 0: empty
    /// (nothing new over the window, nothing open); 1: not empty; 2: cannot tell
    /// (Prometheus unreachable or failing, or the cell not drained).
    DrainStatus(DrainStatusArgs),
    /// Check a config file: exit 0 with a summary, or 2 with FILE:LINE:COL per problem.
    CheckConfig {
        /// The YAML cell map to check.
        file: PathBuf,
    },
    /// Detach every program cellwatch pinned and remove its pinned maps and links.
    Uninstall {
        /// Where the agent pins its programs and maps.
        #[arg(long, default_value = DEFAULT_BPFFS)]
        bpffs: PathBuf,
    },
}

/// Where the agent serves and what it attaches to: shared by `run` and `demo`.
#[derive(Debug, Clone, Args)]
pub(crate) struct NodeArgs {
    /// Address of the HTTP endpoints (/metrics, /healthz, /readyz, /connections, /violations).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub(crate) listen: SocketAddr,
    /// bpffs directory where the programs' links and maps are pinned [default:
    /// /sys/fs/bpf/cellwatch; the demo's: /sys/fs/bpf/cellwatch-demo]. They outlive
    /// `run`, so a restart loses no connection; `cellwatch uninstall` removes them. The
    /// demo removes its own when it ends.
    #[arg(long)]
    pub(crate) bpffs: Option<PathBuf>,
    /// The cgroup v2 root to attach to (default: found in /proc/self/mounts).
    #[arg(long)]
    pub(crate) cgroup: Option<PathBuf>,
    /// Do without these optional kernel features, as if the kernel had refused them, to
    /// see a fallback on any kernel: the `feature` labels of `cellwatch_kernel_feature`
    /// (sk_storage_iter, tcp_iter, map_elem_iter, prog_test_run, destroy_sock_cookie,
    /// conntrack_lookup), comma-separated or the flag repeated.
    #[arg(long, value_name = "FEATURE[,FEATURE...]")]
    pub(crate) without: Vec<String>,
}

impl NodeArgs {
    /// `--bpffs`, or `default` when it was not given.
    pub(crate) fn bpffs_or(&self, default: &str) -> PathBuf {
        self.bpffs.clone().unwrap_or_else(|| PathBuf::from(default))
    }
}

#[derive(Debug, Clone, Args)]
pub(crate) struct RunArgs {
    /// YAML cell map; without it the embedded default (no cells, loopback ignored) is used.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) node: NodeArgs,
    /// Live connections the kernel tracks at once; more are counted as lost.
    #[arg(long, default_value_t = DEFAULT_CONN_CAPACITY, value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub(crate) conn_capacity: u32,
    /// How often open connections add what they moved (bytes, retransmits, an RTT
    /// sample) to the counters, e.g. `5s`, `500ms`: a scrape lags by at most this much.
    #[arg(long, default_value = DEFAULT_LIVE_INTERVAL, value_parser = live_interval)]
    pub(crate) live_interval: Duration,
    /// Upper bounds of the latency and RTT histogram buckets in /metrics, e.g.
    /// `100us,1ms,10ms,100ms,1s` (each rounds up to the next power of two of
    /// microseconds, the kernel's buckets), or `all` for all 27 [default: 64us, 256us,
    /// 512us, 1ms, 2ms, 4ms, 16ms, 65ms, 262ms and 1.05s].
    #[arg(long, value_parser = Buckets::parse)]
    pub(crate) histogram_buckets: Option<Buckets>,
    /// How much per-pair detail /metrics exports, the node's series budget: `full` (every
    /// family), `pairs` (every pair's counters; latency and RTT histograms only for pairs
    /// with violations, and for services) or `cells` (counters per source cell, summed
    /// over destination cells; no histograms). See the README's "Series budget".
    #[arg(long, default_value = "full", value_parser = Detail::parse)]
    pub(crate) metrics_detail: Detail,
    /// Time every sock_ops op and export it (`cellwatch_kernel_op_*`): for benchmarks, it
    /// costs two clock reads per run. Takes effect when the programs are loaded.
    #[arg(long, hide = true)]
    pub(crate) profile_kernel: bool,
    /// Violation events (logged, and served at /violations) per cell pair and direction
    /// per second on each CPU; more are counted as lost. Counters are exact either way.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub(crate) violation_event_rate: u32,
    /// Ring buffer for violation events, in KiB: a power of two, 4 to 65536.
    #[arg(long, default_value_t = DEFAULT_EVENTS_BUFFER_KIB, value_parser = pow2_kib)]
    pub(crate) events_buffer_kib: u32,
    /// Entries of each of the two pair tables, for tests that fill them (the default is
    /// the build's); only maps made by this start take it.
    #[arg(long, hide = true, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub(crate) pair_table_capacity: Option<u32>,
    /// Flows the UDP flow table holds, for tests that fill it (the default is the
    /// build's); only maps made by this start take it.
    #[arg(long, hide = true, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub(crate) udp_flow_table_capacity: Option<u32>,
    /// Swap this build's programs onto the pinned links even if they run them already
    /// (an upgrade does this by itself). Maps and counts are kept.
    #[arg(long)]
    pub(crate) replace_programs: bool,
    /// How long a UDP flow (a 5-tuple) may be silent before it ends: its next datagram
    /// opens a new flow. Whole seconds, 1s to 1h, e.g. `60s` or `5m`.
    #[arg(long, default_value = "60s", value_parser = udp_idle)]
    pub(crate) udp_idle: Duration,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct DemoArgs {
    /// How long the demo runs, in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) duration: u64,
    #[command(flatten)]
    pub(crate) node: NodeArgs,
    /// Log lines (the agent's, one per violation among them) on stderr instead of in a
    /// file; the screen is then appended to rather than redrawn in place.
    #[arg(long)]
    pub(crate) verbose: bool,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct TopArgs {
    /// The agent's HTTP endpoints (its `--listen` address).
    #[arg(long, default_value = DEFAULT_TOP_URL)]
    pub(crate) url: String,
    /// Print one plain table (two scrapes two seconds apart) and the newest violations,
    /// then exit: for scripts.
    #[arg(long)]
    pub(crate) once: bool,
    /// The order of the pairs, highest first (the `s` key cycles it).
    #[arg(long, value_enum, default_value_t = TopSort::Opened)]
    pub(crate) sort: TopSort,
    /// Show only the pairs with this cell at either end (the `/` key changes it).
    #[arg(long)]
    pub(crate) cell: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct ReportArgs {
    /// Prometheus' URL, plain http (a path prefix is kept), e.g. http://prometheus:9090.
    #[arg(long, value_name = "URL")]
    pub(crate) prometheus: String,
    /// The time range, up to now: 30m, 1h, 7d, ... (one unit: s, m, h, d or w; 1m to 366d).
    #[arg(long, default_value = "1h", value_parser = Range::parse)]
    pub(crate) range: Range,
    /// text for people, json for scripts, dot for graphviz (`| dot -Tsvg > cells.svg`),
    /// html for one self-contained page to look at (`> report.html`).
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub(crate) format: ReportFormat,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct DrainStatusArgs {
    /// The drained cell (`drained:` in the agents' config).
    #[arg(value_parser = cell_name)]
    pub(crate) cell: String,
    /// Prometheus' URL, plain http (a path prefix is kept), e.g. http://prometheus:9090.
    #[arg(long, value_name = "URL")]
    pub(crate) prometheus: String,
    /// How far back a new connection counts: 5m, 15m, 1h, ... (one unit: s, m, h, d or w;
    /// 1m to 366d).
    #[arg(long, default_value = "5m", value_parser = Range::parse)]
    pub(crate) window: Range,
    /// text for people, json for scripts.
    #[arg(long, value_enum, default_value_t = DrainFormat::Text)]
    pub(crate) format: DrainFormat,
}

/// `drain-status --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum DrainFormat {
    Text,
    Json,
}

/// `report --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ReportFormat {
    Text,
    Json,
    Dot,
    Html,
}

/// `top --sort`: opened or violations per second, bytes per second, or RTT p99.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum TopSort {
    Opened,
    Violations,
    Bytes,
    Rtt,
}

fn pow2_kib(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if n.is_power_of_two() && (4..=65536).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} is not a power of two from 4 to 65536"))
    }
}

/// A duration such as `10s`, `500ms`, `1m` or `1h`, from 100 ms to an hour.
fn live_interval(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    let (min, max) = LIVE_INTERVAL_RANGE;
    if d < min || d > max {
        return Err(format!("{s} is outside 100ms to 1h"));
    }
    Ok(d)
}

/// `--udp-idle`: whole seconds from 1 s to an hour.
fn udp_idle(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if d.subsec_nanos() != 0 || d < Duration::from_secs(1) || d > Duration::from_secs(3600) {
        return Err(format!("{s} is not a whole number of seconds from 1s to 1h"));
    }
    Ok(d)
}

/// A duration such as `10s`, `500ms`, `1m` or `1h` (a bare number is seconds).
fn duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a duration such as 5s or 500ms"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("`{s}` has an unknown unit: use ms, s, m or h")),
    };
    Ok(d)
}

#[cfg(test)]
mod tests;
