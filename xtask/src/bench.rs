//! `cargo xtask bench`: benchmarks whose results go into BENCHMARKS.md ([`record`]), each
//! measured side by side in one run (interleaved, several runs each, median and spread).
//! This module is their command line and dispatch. One module per benchmark
//! ([`churn`], [`bulk`], [`udp`], [`scale`], [`sweep`], [`micro`], [`config_load`],
//! [`service_addr`], [`fleet`]) uses
//! what they share,
//! the bench harness ([`harness`]), [`stats`] and [`record`]; none of those imports this
//! module or a benchmark.
mod bulk;
mod churn;
mod config_load;
mod fleet;
mod harness;
mod micro;
mod record;
mod scale;
mod service_addr;
mod stats;
mod sweep;
mod udp;

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

pub(crate) use scale::hold;

#[derive(Subcommand)]
pub(crate) enum Bench {
    /// Config load at 1,000 cells and 100,000 prefixes: parse, validate, write to the kernel.
    ConfigLoad,
    /// One connection moving several GiB: no agent, audit, audit `--without udp`, enforce,
    /// and tcplife.
    Bulk {
        /// One short run of each variant, nothing recorded (what CI runs).
        #[arg(long)]
        smoke: bool,
        /// An earlier agent binary to measure beside this one (audit mode).
        #[arg(long, value_name = "BINARY")]
        baseline: Option<PathBuf>,
    },
    /// UDP through the cgroup skb programs: iperf3 `-u` at several datagram sizes and a DNS
    /// flood (dnsperf against dnsmasq): no agent, audit, audit `--without udp`, enforce.
    Udp {
        /// One short run of each variant, nothing recorded (what CI runs).
        #[arg(long)]
        smoke: bool,
    },
    /// Criterion microbenchmarks of the hot paths, recorded.
    Micro,
    /// 10, 100 and 1,000 cells, and 50,000 connections held: render time, memory.
    Scale {
        /// A small run, nothing recorded (what CI runs).
        #[arg(long)]
        smoke: bool,
        /// An earlier agent binary whose `/connections` is timed beside this one's.
        #[arg(long, value_name = "BINARY")]
        baseline: Option<PathBuf>,
    },
    /// Connection churn between two cells (allowed and violation, FIN and RST close): no
    /// agent, audit, enforce, and tcplife.
    Churn {
        /// One short run of each variant, nothing recorded (what CI runs).
        #[arg(long)]
        smoke: bool,
        /// An earlier agent binary to measure beside this one (audit mode): before and
        /// after in one run.
        #[arg(long, value_name = "BINARY")]
        baseline: Option<PathBuf>,
    },
    /// The live sweep's CPU by mechanism (the socket-storage iterator, the TCP iterator in
    /// each network namespace) at 10,000 and 100,000 tracked sockets, and per namespace.
    Sweep {
        /// One short run of each, nothing recorded (what CI runs).
        #[arg(long)]
        smoke: bool,
    },
    /// Churn through a Kubernetes Service address and directly, with and without the
    /// agent, in kube-proxy's layout in network namespaces.
    ServiceAddr {
        /// One short run of each variant, nothing recorded (what CI runs).
        #[arg(long)]
        smoke: bool,
    },
    /// A fleet on one machine: one agent's `/metrics` served under N loopback targets, each
    /// scraped by one real Prometheus with the shipped rules: its series, ingestion, rule
    /// time and memory, and `cellwatch report`'s time (printed; `--record` writes it).
    Fleet(fleet::FleetArgs),
}

pub(crate) fn run(which: Bench) -> Result<()> {
    match which {
        Bench::ConfigLoad => config_load::config_load(),
        Bench::Bulk { smoke, baseline } => bulk::bulk(smoke, baseline),
        Bench::Udp { smoke } => udp::udp(smoke),
        Bench::Micro => micro::micro(),
        Bench::Scale { smoke, baseline } => scale::scale(smoke, baseline),
        Bench::Churn { smoke, baseline } => churn::churn(smoke, baseline),
        Bench::ServiceAddr { smoke } => service_addr::service_addr(smoke),
        Bench::Sweep { smoke } => sweep::sweep(smoke),
        Bench::Fleet(args) => fleet::fleet(&args),
    }
}

/// What `cargo xtask test` runs: one short run of churn, bulk, udp, scale, sweep and
/// service-addr, nothing recorded.
pub(crate) fn smoke() -> Result<()> {
    churn::churn(true, None)?;
    bulk::bulk(true, None)?;
    udp::udp(true)?;
    scale::scale(true, None)?;
    sweep::sweep(true)?;
    service_addr::service_addr(true)
}
