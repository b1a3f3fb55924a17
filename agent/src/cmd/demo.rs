//! `cellwatch demo`: the agent on an embedded demo cell map over loopback addresses,
//! with sample traffic (leakage included) and a live screen on stdout: the per-pair
//! table and the newest violation of each pair, redrawn in place on a terminal
//! ([`screen`]). Log lines go to a file named on screen, or to stderr ([`log`]). The
//! traffic is [`traffic`]'s; the table and the blast radius, [`table`]'s and [`blast`]'s
//! (both drawn with `agent-view`).
#![forbid(unsafe_code)]

mod blast;
mod log;
mod screen;
mod table;
mod traffic;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use tokio::{
    task::JoinSet,
    time::{Instant, MissedTickBehavior},
};

use agent_core::{config::Config, metrics::families, promtext};
use agent_view::violations;

use super::{
    fetch,
    run::{self, RunError},
};
use crate::{
    cli::{self, DemoArgs, RunArgs},
    kernel::unpin,
    logging::LogFormat,
};
use screen::Screen;

/// The demo's cell map: global and cell-1 to cell-3 on 127.100.0.0/16.
pub(crate) const DEMO_YAML: &str = include_str!("demo/demo.yaml");

/// How long a read of the agent's own endpoints may take.
const FETCH_LIMIT: Duration = Duration::from_secs(5);
/// How many pairs the violation panel shows at most.
const PANEL_PAIRS: usize = 6;

/// Runs the agent and the demo traffic for `args.duration`, or until SIGINT/SIGTERM.
/// It sets up its own logging (a file, or stderr with `--verbose`).
pub(crate) fn demo(args: &DemoArgs, log_format: LogFormat) -> Result<(), RunError> {
    let started = std::time::Instant::now();
    let log = log::init(log_format, args.verbose)?;
    let screen = Screen::new(args.verbose);
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
        metrics_detail: agent_core::metrics::Detail::Full,
        profile_kernel: false,
        // A few violation log lines a second per pair keep the log readable.
        violation_event_rate: 2,
        events_buffer_kib: cli::DEFAULT_EVENTS_BUFFER_KIB,
        replace_programs: false,
        pair_table_capacity: None,
        udp_flow_table_capacity: None,
        udp_idle: std::time::Duration::from_secs(u64::from(agent_common::UDP_IDLE_DEFAULT_SECS)),
    };
    let duration = Duration::from_secs(args.duration);
    let outcome = run::run_with(&run_args, config, DEMO_YAML.as_bytes(), parsed_ms, move |addr| {
        session(addr, duration, screen, log)
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

/// The demo proper, once the agent serves at `addr`: traffic, a frame every second or
/// few, and a summary. Dropping it (on a signal) stops the traffic and the servers.
async fn session(
    addr: SocketAddr,
    duration: Duration,
    mut screen: Screen,
    log: Option<PathBuf>,
) -> Result<(), String> {
    let base = format!("http://{}", local(addr));
    let log = match log {
        Some(p) => format!("{} (--verbose puts it on stderr)", p.display()),
        None => "stderr".to_owned(),
    };
    println!(
        "cellwatch demo: the agent watches cells global, cell-1, cell-2 and cell-3 on \
         127.100.0.0/16\nfor {} s (Ctrl-C stops it sooner).\n  metrics:     {base}/metrics\n  \
         connections: {base}/connections\n  violations:  {base}/violations\n  try:         curl -s \
         {base}/metrics | grep {family}\n  live view:   cellwatch top --url {base}\n  log:         \
         {log}\n",
        duration.as_secs(),
        family = families::BOUNDARY_VIOLATIONS_TOTAL,
    );
    // Dropping these sets (at the end, or on a signal) stops every task in them.
    let mut servers = JoinSet::new();
    let traffic = traffic::Traffic::start(&mut servers).await.map_err(|e| e.to_string())?;
    let deadline = Instant::now() + duration;
    let mut generator = JoinSet::new();
    generator.spawn(async move { traffic.generate(deadline).await });
    let started = Instant::now();
    let every = screen.every();
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let done = loop {
        tokio::select! {
            _ = tick.tick() => {
                let (now, all) = (started.elapsed().as_secs(), duration.as_secs());
                screen.show(&frame(addr, screen.color(), &format!("after {now} s of {all}")).await);
            }
            done = generator.join_next() => break done,
        }
    };
    let Some(Ok(tally)) = done else {
        return Err("the demo traffic generator stopped unexpectedly".to_owned());
    };
    screen.show(&frame(addr, screen.color(), "final").await);
    match fetch::get(local(addr), "/metrics", FETCH_LIMIT).await {
        Ok(text) => print!("{}", blast::render(&blast::radius(&promtext::parse(&text)))),
        Err(e) => println!("reading the blast radius failed: {e}"),
    }
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

/// One frame, read from the agent's own `/metrics` and `/violations`.
async fn frame(addr: SocketAddr, color: bool, when: &str) -> String {
    let at = local(addr);
    let heading = format!("cell pairs, client side ({when}):");
    let table = match fetch::get(at, "/metrics", FETCH_LIMIT).await {
        Ok(text) => table::render(&table::build(&promtext::parse(&text)), color),
        Err(e) => format!("  reading {at}/metrics failed: {e}\n"),
    };
    let panel = match fetch::get(at, "/violations?limit=256", FETCH_LIMIT).await {
        Ok(body) => match violations::parse_violations(&body) {
            Ok(events) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                violations::latest_per_pair(&events, None, PANEL_PAIRS)
                    .into_iter()
                    .map(|v| violations::violation_line(v, now))
                    .collect()
            }
            Err(e) => vec![e.to_string()],
        },
        Err(e) => vec![format!("reading {at}/violations failed: {e}")],
    };
    screen::frame(&heading, &table, &panel)
}
