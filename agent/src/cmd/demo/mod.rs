//! `cellwatch demo`: the agent on an embedded demo cell map over loopback addresses,
//! with sample traffic (leakage included) and a live per-pair table on stdout.
#![forbid(unsafe_code)]

mod table;
mod traffic;

use std::{
    io::IsTerminal,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
    time::{Instant, MissedTickBehavior},
};

use agent_core::{config::Config, promtext};

use super::run::{self, RunError};
use crate::{
    cli::{self, DemoArgs, RunArgs},
    kernel::unpin,
};

/// The demo's cell map: global and cell-1 to cell-3 on 127.100.0.0/16.
pub(crate) const DEMO_YAML: &str = include_str!("demo.yaml");

/// How often the table is printed.
const TABLE_EVERY: Duration = Duration::from_secs(3);

/// Runs the agent and the demo traffic for `args.duration`, or until SIGINT/SIGTERM.
pub(crate) fn demo(args: &DemoArgs) -> Result<(), RunError> {
    let started = std::time::Instant::now();
    let config = Config::parse("<embedded demo>", DEMO_YAML)?;
    let parsed_ms = started.elapsed().as_secs_f64() * 1e3;
    let bpffs = args.node.bpffs_or(cli::DEFAULT_DEMO_BPFFS);
    let mut node = args.node.clone();
    node.bpffs = Some(bpffs.clone());
    let run_args = RunArgs {
        config: None,
        node,
        conn_capacity: cli::DEFAULT_CONN_CAPACITY,
        live_interval: std::time::Duration::from_secs(1),
        histogram_buckets: None,
        profile_kernel: false,
        // A few violation log lines a second per pair keep the log readable.
        violation_event_rate: 2,
        events_buffer_kib: cli::DEFAULT_EVENTS_BUFFER_KIB,
        replace_programs: false,
    };
    let duration = Duration::from_secs(args.duration);
    let outcome = run::run_with(&run_args, config, DEMO_YAML.as_bytes(), parsed_ms, move |addr| {
        session(addr, duration)
    });
    // The demo leaves nothing behind: its pinned programs and maps go with it.
    let removed = unpin::uninstall(&bpffs);
    match (outcome, removed) {
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => Err(RunError::Session(e.to_string())),
        (Ok(()), Ok(_)) => {
            tracing::info!(bpffs = %bpffs.display(), "demo programs detached and unpinned");
            Ok(())
        }
    }
}

/// The demo proper, once the agent serves at `addr`: traffic, a table every few seconds,
/// and a summary. Dropping it (on a signal) stops the traffic and the servers.
async fn session(addr: SocketAddr, duration: Duration) -> Result<(), String> {
    let base = format!("http://{}", local(addr));
    println!(
        "cellwatch demo: the agent watches cells global, cell-1, cell-2 and cell-3 on \
         127.100.0.0/16 for {} s (Ctrl-C stops it sooner).\n  metrics:     {base}/metrics\n  \
         connections: {base}/connections\n  violations:  {base}/violations\n  try:         curl -s \
         {base}/metrics | grep cellwatch_boundary_violations_total\n",
        duration.as_secs()
    );
    // Dropping these sets (at the end, or on a signal) stops every task in them.
    let mut servers = JoinSet::new();
    let traffic = traffic::Traffic::start(&mut servers).await.map_err(|e| e.to_string())?;
    let deadline = Instant::now() + duration;
    let mut generator = JoinSet::new();
    generator.spawn(async move { traffic.generate(deadline).await });
    let color = std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut tick = tokio::time::interval_at(Instant::now() + TABLE_EVERY, TABLE_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let done = loop {
        tokio::select! {
            _ = tick.tick() => {
                print_table(addr, color, &format!("after {} s", started.elapsed().as_secs())).await;
            }
            done = generator.join_next() => break done,
        }
    };
    let Some(Ok(tally)) = done else {
        return Err("the demo traffic generator stopped unexpectedly".to_owned());
    };
    print_table(addr, color, "final").await;
    println!(
        "cellwatch demo: made {} connections: {} allowed in-cell or to global, {} allowed by \
         the cell-1 -> cell-2 rule, {} cross-cell leaks, {} refused leaks{}. Stopping.",
        tally.total(),
        tally.allowed,
        tally.allowed_by_rule,
        tally.leaks,
        tally.refused,
        if tally.unexpected > 0 {
            format!(", {} that went otherwise (timeouts?)", tally.unexpected)
        } else {
            String::new()
        }
    );
    Ok(())
}

/// The address to reach the agent at: loopback when it listens on every address.
fn local(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => {
            (IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]), addr.port()).into()
        }
        _ => addr,
    }
}

async fn print_table(addr: SocketAddr, color: bool, when: &str) {
    match scrape(local(addr)).await {
        Ok(text) => {
            let t = table::build(&promtext::parse(&text));
            println!("cell pairs, client side ({when}):\n{}", table::render(&t, color));
        }
        Err(e) => println!("cellwatch demo: reading {addr}/metrics failed: {e}"),
    }
}

/// GET /metrics from the agent itself, as any scraper would.
async fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    let fetch = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").await?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    match raw.split_once("\r\n\r\n") {
        Some((head, body))
            if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") =>
        {
            Ok(body.to_owned())
        }
        _ => Err(std::io::Error::other(raw.lines().next().unwrap_or("empty answer").to_owned())),
    }
}
