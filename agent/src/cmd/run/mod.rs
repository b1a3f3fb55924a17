//! `cellwatch run`: check the node, load the config and the programs, serve the
//! endpoints, reload on SIGHUP and file changes ([`reload`]), count connections older
//! than the agent ([`seed`]), and stop cleanly on SIGINT/SIGTERM.
#![forbid(unsafe_code)]

mod reload;
mod seed;
mod vip;

use std::{
    future::Future,
    io,
    net::SocketAddr,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};
use tracing::{debug, info, warn};

use agent_core::{
    config::{Config, ConfigError},
    ids::{CellIds, IdsExhausted},
    policy::{compile, enforce_summary},
    query::Query,
};
use reload::{Reloader, Trigger};

use crate::{
    cli::RunArgs,
    host::{
        cgroups::Resolver,
        preflight::{self, PreflightError},
        sys,
    },
    kernel::{
        Feature, Found, Kernel, KernelError, LoadOptions, MapsHandle, UnknownFeature, Without,
    },
    serve::{
        connections,
        http::{Endpoints, Server, Unanswered},
        metrics::{AgentMetrics, DROPPED_QUEUE_FULL},
        violations::{self, Recent},
    },
    sync,
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Ids(#[from] IdsExhausted),
    #[error(transparent)]
    Without(#[from] UnknownFeature),
    #[error(
        "{addr} is already in use; stop what listens there or choose another address with --listen"
    )]
    PortInUse { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("cannot start the async runtime: {0}")]
    Runtime(io::Error),
    #[error("cannot install the signal handlers: {0}")]
    Signals(io::Error),
    /// What ran beside the agent (the demo) failed; the agent stopped cleanly.
    #[error("{0}")]
    Session(String),
}

/// Requests to find a Service backend waiting for the resolver, at most.
const RESOLVE_QUEUE: usize = 16_384;

/// Past this many pairs, a scrape's memory is handed back to the kernel when it is done.
const BIG: usize = 1000;

/// The running agent, as the HTTP endpoints see it.
struct Agent {
    maps: MapsHandle,
    ids: Arc<RwLock<CellIds>>,
    metrics: AgentMetrics,
    cgroups: Arc<Resolver>,
    recent: Arc<Recent>,
}

impl Endpoints for Agent {
    fn metrics(&self, out: &mut dyn std::io::Write) -> Result<(), String> {
        let t = std::time::Instant::now();
        let mut snap =
            self.maps.snapshot().map_err(|e| format!("reading kernel maps failed: {e}"))?;
        snap.undecodable_events = self.recent.undecodable();
        snap.log_suppressed = self.recent.log_suppressed();
        let read = t.elapsed();
        let ids = sync::read(&self.ids);
        let rendered = self.metrics.render(&snap, &ids, out).map_err(|e| e.to_string());
        let pairs = snap.pairs.len();
        if pairs > BIG {
            drop(snap);
            sys::release_free_memory();
        }
        debug!(pairs, ?read, total = ?t.elapsed(), "scrape");
        rendered
    }

    fn connections(&self, q: &Query) -> Result<String, Unanswered> {
        let ids = sync::read(&self.ids);
        let list = connections::list(&self.maps, &ids, &self.cgroups, q)?;
        let json = serde_json::to_string(&list).map_err(|e| Unanswered::Failed(e.to_string()));
        drop(list);
        // The sweep behind the list read every open connection, however few it shows.
        sys::release_free_memory();
        json
    }

    fn violations(&self, q: &Query) -> Result<String, Unanswered> {
        serde_json::to_string(&self.recent.latest(q.limit))
            .map_err(|e| Unanswered::Failed(e.to_string()))
    }
}

pub(crate) fn run(args: &RunArgs) -> Result<(), RunError> {
    let started = std::time::Instant::now();
    let (config, source) = match &args.config {
        Some(p) => {
            let bytes = agent_core::config::read_file(p)?;
            (Config::from_bytes(&p.display().to_string(), &bytes)?, bytes)
        }
        None => (Config::embedded_default(), Vec::new()),
    };
    let parsed_ms = started.elapsed().as_secs_f64() * 1e3;
    run_with(args, config, &source, parsed_ms, |_| std::future::pending())
}

/// Checks the node, loads the programs and serves until SIGINT/SIGTERM or until the
/// future `session` makes from the bound address ends; then stops cleanly either way.
pub(crate) fn run_with<F, Fut>(
    args: &RunArgs,
    config: Config,
    source: &[u8],
    parsed_ms: f64,
    session: F,
) -> Result<(), RunError>
where
    F: FnOnce(SocketAddr) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    // A wrong feature name is a usage error: said before anything else is looked at.
    let without = parse_without(&args.node.without)?;
    // A config the kernel's maps cannot hold is refused before they are touched (the
    // counts do not depend on the ids the pinned state hands out).
    let shown =
        args.config.as_ref().map_or_else(|| "<embedded>".into(), |p| p.display().to_string());
    compile(&config, &mut CellIds::default())?
        .fits()
        .map_err(|e| RunError::Config(e.located(&shown)))?;
    let bpffs = args.node.bpffs_or(crate::cli::DEFAULT_BPFFS);
    let node = preflight::check(args.node.cgroup.as_deref(), &bpffs)?;
    // Logged only once the node checks passed: a run that cannot start prints nothing
    // but its one sentence.
    info!(
        cells = config.cells.len(),
        prefixes = config.prefix_count(),
        elapsed_ms = parsed_ms,
        "config parsed and validated"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    rt.block_on(serve(args, config, source, node, &bpffs, without, session))
}

/// `--without`'s values, each a comma-separated list of feature labels.
fn parse_without(values: &[String]) -> Result<Without, UnknownFeature> {
    let mut all = Without::default();
    for v in values {
        all.extend(&Without::parse(v)?);
    }
    Ok(all)
}

async fn serve<F, Fut>(
    args: &RunArgs,
    config: Config,
    source: &[u8],
    node: preflight::Node,
    bpffs: &std::path::Path,
    without: Without,
    session: F,
) -> Result<(), RunError>
where
    F: FnOnce(SocketAddr) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    // Bind first: a taken port fails before anything touches the kernel.
    let listener = TcpListener::bind(args.node.listen).await.map_err(|source| {
        if source.kind() == io::ErrorKind::AddrInUse {
            RunError::PortInUse { addr: args.node.listen }
        } else {
            RunError::Listen { addr: args.node.listen, source }
        }
    })?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(RunError::Signals)?;

    let opts = LoadOptions {
        cgroup_root: node.cgroup_root.clone(),
        bpffs: bpffs.to_owned(),
        replace_programs: args.replace_programs,
        conn_capacity: args.conn_capacity,
        events_bytes: args.events_buffer_kib * 1024,
        event_rate: args.violation_event_rate,
        profile_kernel: args.profile_kernel,
        without: without.clone(),
        pair_tables: args.pair_table_capacity,
    };
    let staged = Kernel::open(&opts)?;
    // Ids the pinned state already uses first, so adopted counters keep their labels.
    let mut ids = staged.cell_ids();
    let compiled = compile(&config, &mut ids)?;
    let mut kernel = staged.attach(&compiled)?;
    if kernel.pinned_state().is_new() && kernel.can_seed() {
        seed::seed(&mut kernel, &config, &mut ids);
    } else if kernel.pinned_state().is_new() {
        warn!(
            "connections older than the agent are not counted: seeding needs the TCP iterator \
             and the destroy tracepoint's cookie (cellwatch_kernel_feature)"
        );
    } else {
        info!("the pinned programs ran throughout: no connection needs seeding");
    }

    let ids = Arc::new(RwLock::new(ids));
    let conntrack = if without.has(Feature::ConntrackLookup) {
        Found::Forced
    } else if vip::probe() {
        Found::Works
    } else {
        Found::Refused(
            "this network namespace answers no conntrack lookups (nf_conntrack_netlink)".into(),
        )
    };
    crate::kernel::say_feature(Feature::ConntrackLookup, &conntrack);
    let mut features = kernel.features();
    let conntrack_works = conntrack.works();
    features.push((Feature::ConntrackLookup, conntrack_works));
    let metrics = AgentMetrics::new(
        env!("CARGO_PKG_VERSION"),
        &node.kernel,
        kernel.pinned_state(),
        &features,
        args.histogram_buckets.clone().unwrap_or_default(),
    );
    // Reloads counted by the agents before this one on the same pinned maps.
    let (succeeded, failed) = kernel.maps().reloads();
    metrics.config_reloads.with_label_values(&["success"]).inc_by(succeeded);
    metrics.config_reloads.with_label_values(&["error"]).inc_by(failed);
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel::<Trigger>(4);
    // The running config, for judging the backends of connections to service_cidrs.
    let shared_config = Arc::new(RwLock::new(config.clone()));
    // Bounded: a flood of connections to Service addresses cannot grow the agent.
    let (resolve_tx, resolve_rx) =
        std::sync::mpsc::sync_channel::<agent_common::ViolationEvent>(RESOLVE_QUEUE);
    let reloader = args.config.as_ref().map(|path| {
        let r = Reloader::new(
            path.clone(),
            source,
            kernel.maps(),
            ids.clone(),
            shared_config.clone(),
            metrics.config_reloads.clone(),
        );
        (Arc::new(r), Reloader::spawn_watch(path, reload_tx.clone()))
    });
    let cgroups = Arc::new(Resolver::new(node.cgroup_root.clone()));
    let recent = Arc::new(Recent::default());
    let stop_drain = Arc::new(AtomicBool::new(false));
    let drain = kernel.take_events().map(|ring| {
        violations::spawn_drain(
            ring,
            ids.clone(),
            cgroups.clone(),
            recent.clone(),
            resolve_tx,
            metrics.service_lookups_dropped.with_label_values(&[DROPPED_QUEUE_FULL]),
            stop_drain.clone(),
        )
    });
    let resolver = vip::spawn(vip::Resolver {
        maps: kernel.maps(),
        config: shared_config,
        ids: ids.clone(),
        requests: resolve_rx,
        stop: stop_drain.clone(),
        conntrack: conntrack_works,
        dropped: metrics.service_lookups_dropped.clone(),
    });
    let sweeps = spawn_sweeps(kernel.maps(), args.live_interval);
    let agent = Arc::new(Agent { maps: kernel.maps(), ids, metrics, cgroups, recent });
    // What the start parsed (the kernel's BTF among it) is freed: give it back.
    sys::release_free_memory();
    let ready = Arc::new(AtomicBool::new(true));
    let server = Arc::new(Server {
        endpoints: agent.clone(),
        ready: ready.clone(),
        renders: Default::default(),
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let bound = listener.local_addr().unwrap_or(args.node.listen);
    let http = tokio::spawn(server.serve(listener, async {
        let _ = stop_rx.await;
    }));
    info!(
        listen = %bound,
        cells = config.cells.len(),
        prefixes = config.prefix_count(),
        mode = %config.mode,
        enforce = %enforce_summary(&config),
        "cellwatch is running"
    );

    let mut session = Box::pin(session(bound));
    let outcome = loop {
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break Ok(()); }
            _ = sigint.recv() => { info!("SIGINT: stopping"); break Ok(()); }
            done = &mut session => break done.map_err(RunError::Session),
            _ = sighup.recv() => { let _ = reload_tx.try_send(Trigger::Signal); }
            Some(trigger) = reload_rx.recv() => match &reloader {
                // Off the loop, so a signal to stop is not kept waiting by a reload (the
                // reloads themselves take turns on the reloader's lock).
                Some((r, _)) => {
                    let r = r.clone();
                    drop(tokio::task::spawn_blocking(move || r.reload(trigger)));
                }
                None => info!("running on an embedded config; nothing to reload"),
            },
        }
    };

    // Whatever ran beside the agent stops first, so nothing of it outlives the programs.
    drop(session);
    ready.store(false, Ordering::Release);
    let _ = stop_tx.send(());
    if let Err(e) = http.await {
        warn!(error = %e, "HTTP server task failed");
    }
    sweeps.abort();
    stop_drain.store(true, Ordering::Release);
    if let Some(d) = drain {
        let _ = d.join();
    }
    let _ = resolver.join();
    drop(kernel);
    info!(
        bpffs = %bpffs.display(),
        "cellwatch stopped; its programs stay attached and counting (`cellwatch uninstall` removes them)"
    );
    outcome
}

/// The live sweep every `interval`: open connections add what they moved to the
/// counters. Once no connection older than the agent is left, the tracepoint that
/// watched for their ends goes.
fn spawn_sweeps(maps: MapsHandle, interval: std::time::Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // The first sweep one interval after the start (the seeding just read everything).
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seeded_close = true;
        loop {
            tick.tick().await;
            let m = maps.clone();
            let swept = tokio::task::spawn_blocking(move || {
                let retired = if seeded_close { m.retire_seeded_close() } else { Ok(false) };
                let swept = m.sweep();
                // What a large scrape's response freed after it was sent goes back too.
                sys::release_free_memory();
                (swept, retired)
            })
            .await;
            match swept {
                Ok((Ok(()), Ok(retired))) => {
                    if retired {
                        info!("no connection older than the agent is left open");
                        seeded_close = false;
                    }
                }
                Ok((Err(e), _)) | Ok((_, Err(e))) => warn!(error = %e, "live sweep failed"),
                Err(e) => warn!(error = %e, "live sweep task failed"),
            }
        }
    })
}
