//! `cellwatch run`: check the node, load the config and the programs, serve the
//! endpoints, reload on SIGHUP and file changes ([`reload`]), count connections older
//! than the agent ([`seed`]), answer where connections to Service addresses went
//! ([`service_addr`]), and stop cleanly on SIGINT/SIGTERM.
#![forbid(unsafe_code)]

mod reload;
mod seed;
mod service_addr;

use std::{
    future::Future,
    io,
    net::SocketAddr,
    path::Path,
    pin::Pin,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::{
    net::TcpListener,
    signal::unix::{Signal, SignalKind, signal},
};
use tracing::{debug, info, warn};

use agent_core::{
    config::{Config, ConfigError},
    ids::{CellIds, IdsExhausted},
    metrics::Options,
    policy::{compile, drains_summary, enforce_summary},
    query::Query,
};
use reload::{Reloader, Trigger};

use crate::{
    cli::RunArgs,
    host::{
        cgroups::Workloads,
        preflight::{self, PreflightError},
        sys,
    },
    kernel::{
        Feature, Found, Kernel, KernelError, LoadOptions, MapsHandle, UnknownFeature, Without,
    },
    serve::{
        connections,
        http::{Endpoints, Server, Unanswered},
        metrics::{AgentMetrics, DROPPED_QUEUE_FULL, Form},
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

/// Requests to find a Service backend waiting for the answerer, at most.
const REQUEST_QUEUE: usize = 16_384;

/// Past this many pairs, a scrape's memory is handed back to the kernel when it is done.
const BIG: usize = 1000;

/// The running agent, as the HTTP endpoints see it.
struct Agent {
    maps: MapsHandle,
    ids: Arc<RwLock<CellIds>>,
    metrics: AgentMetrics,
    cgroups: Arc<Workloads>,
    recent: Arc<Recent>,
}

impl Endpoints for Agent {
    fn metrics(&self, form: Form, out: &mut dyn std::io::Write) -> Result<(), String> {
        let t = std::time::Instant::now();
        let mut snap =
            self.maps.snapshot().map_err(|e| format!("reading kernel maps failed: {e}"))?;
        snap.undecodable_events = self.recent.undecodable();
        snap.log_suppressed = self.recent.log_suppressed();
        let ids = sync::read(&self.ids);
        if !snap.catalog.drains.is_empty() {
            snap.holdouts = connections::holdouts(&self.maps, &ids, &self.cgroups);
        }
        let read = t.elapsed();
        let rendered = self.metrics.render(&snap, &ids, form, out).map_err(|e| e.to_string());
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

/// The agent's life, step by step: bind, install the signals, load the programs, start
/// what runs beside the server, serve until told to stop, then [`stop`] it all.
async fn serve<F, Fut>(
    args: &RunArgs,
    config: Config,
    source: &[u8],
    node: preflight::Node,
    bpffs: &Path,
    without: Without,
    session: F,
) -> Result<(), RunError>
where
    F: FnOnce(SocketAddr) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    // Bind first: a taken port fails before anything touches the kernel.
    let listener = bind(args.node.listen).await?;
    let mut signals = Signals::install()?;
    let (mut kernel, ids) = load(args, &config, &node, bpffs, &without)?;
    let ids = Arc::new(RwLock::new(ids));
    let conntrack = conntrack_lookups(&without);
    let metrics = agent_metrics(args, &node, &kernel, conntrack);
    // The running config, for judging the backends of connections to service_cidrs.
    let shared_config = Arc::new(RwLock::new(config.clone()));
    let mut reloads =
        Reloads::start(args.config.as_deref(), source, &kernel, &ids, &shared_config, &metrics);
    let cgroups = Arc::new(Workloads::new(node.cgroup_root.clone()));
    let recent = Arc::new(Recent::default());
    let threads =
        Threads::spawn(&mut kernel, &ids, shared_config, &cgroups, &recent, &metrics, conntrack);
    let sweeps = spawn_sweeps(kernel.maps(), args.live_interval, args.udp_idle);
    let agent = Arc::new(Agent { maps: kernel.maps(), ids, metrics, cgroups, recent });
    // What the start parsed (the kernel's BTF among it) is freed: give it back.
    sys::release_free_memory();
    let http = Http::spawn(listener, agent.clone(), args.node.listen);
    reload::warn_of(&config);
    info!(
        listen = %http.bound,
        cells = config.cells.len(),
        prefixes = config.prefix_count(),
        mode = %config.mode,
        enforce = %enforce_summary(&config),
        drains = %drains_summary(&config),
        "cellwatch is running"
    );

    let mut session = Box::pin(session(http.bound));
    let outcome = until_stopped(&mut signals, &mut session, &mut reloads).await;
    stop(session, http, sweeps, threads, kernel).await;
    info!(
        bpffs = %bpffs.display(),
        "cellwatch stopped; its programs stay attached and counting (`cellwatch uninstall` removes them)"
    );
    outcome
}

/// The listener on `addr`; a taken port is said as such.
async fn bind(addr: SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr).await.map_err(|source| {
        if source.kind() == io::ErrorKind::AddrInUse {
            RunError::PortInUse { addr }
        } else {
            RunError::Listen { addr, source }
        }
    })
}

/// SIGTERM and SIGINT stop the agent; SIGHUP reloads its config.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> Result<Self, RunError> {
        let term = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
        let int = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
        let hup = signal(SignalKind::hangup()).map_err(RunError::Signals)?;
        Ok(Self { term, int, hup })
    }
}

/// Opens the pinned state, attaches the programs for `config`, and counts the
/// connections older than the agent where that is needed and possible; with the ids
/// the kernel's maps now use.
fn load(
    args: &RunArgs,
    config: &Config,
    node: &preflight::Node,
    bpffs: &Path,
    without: &Without,
) -> Result<(Kernel, CellIds), RunError> {
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
        udp_idle_secs: u32::try_from(args.udp_idle.as_secs()).unwrap_or(u32::MAX),
        udp_flows: args.udp_flow_table_capacity,
    };
    let staged = Kernel::open(&opts)?;
    // Ids the pinned state already uses first, so adopted counters keep their labels.
    let mut ids = staged.cell_ids();
    let compiled = compile(config, &mut ids)?;
    let mut kernel = staged.attach(&compiled)?;
    if kernel.pinned_state().is_new() && kernel.can_seed() {
        seed::seed(&mut kernel, config, &mut ids);
    } else if kernel.pinned_state().is_new() {
        warn!(
            "connections older than the agent are not counted: seeding needs the TCP iterator \
             and the destroy tracepoint's cookie (cellwatch_kernel_feature)"
        );
    } else {
        info!("the pinned programs ran throughout: no connection needs seeding");
    }
    Ok((kernel, ids))
}

/// Whether connections to Service addresses can be looked up in conntrack, said as the
/// kernel's optional features are.
fn conntrack_lookups(without: &Without) -> bool {
    let conntrack = if without.has(Feature::ConntrackLookup) {
        Found::Forced
    } else if service_addr::probe() {
        Found::Works
    } else {
        Found::Refused(
            "this network namespace answers no conntrack lookups (nf_conntrack_netlink)".into(),
        )
    };
    crate::kernel::say_feature(Feature::ConntrackLookup, &conntrack);
    conntrack.works()
}

/// The agent's own metrics, the reloads of the agents before it on the same pinned maps
/// counted in.
fn agent_metrics(
    args: &RunArgs,
    node: &preflight::Node,
    kernel: &Kernel,
    conntrack: bool,
) -> AgentMetrics {
    let mut features = kernel.features();
    features.push((Feature::ConntrackLookup, conntrack));
    let metrics = AgentMetrics::new(
        env!("CARGO_PKG_VERSION"),
        &node.kernel,
        kernel.pinned_state(),
        &features,
        Options {
            buckets: args.histogram_buckets.clone().unwrap_or_default(),
            detail: args.metrics_detail,
        },
    );
    let (succeeded, failed) = kernel.maps().reloads();
    metrics.config_reloads.with_label_values(&["success"]).inc_by(succeeded);
    metrics.config_reloads.with_label_values(&["error"]).inc_by(failed);
    metrics
}

/// Config reloads: the triggers (SIGHUP, changes in the config file's directory) and
/// what applies them (nothing on the embedded config).
struct Reloads {
    tx: tokio::sync::mpsc::Sender<Trigger>,
    rx: tokio::sync::mpsc::Receiver<Trigger>,
    reloader: Option<Arc<Reloader>>,
    /// The watch of the config file's directory, when it could be set up; it runs as
    /// long as the runtime does.
    _watch: Option<tokio::task::JoinHandle<()>>,
}

impl Reloads {
    /// Starts the watch of `path`'s directory (none without a config file).
    fn start(
        path: Option<&Path>,
        source: &[u8],
        kernel: &Kernel,
        ids: &Arc<RwLock<CellIds>>,
        config: &Arc<RwLock<Config>>,
        metrics: &AgentMetrics,
    ) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel::<Trigger>(4);
        let (reloader, watch) = match path {
            Some(path) => {
                let r = Reloader::new(
                    path.to_owned(),
                    source,
                    kernel.maps(),
                    ids.clone(),
                    config.clone(),
                    metrics.config_reloads.clone(),
                );
                (Some(Arc::new(r)), Reloader::spawn_watch(path, tx.clone()))
            }
            None => (None, None),
        };
        Self { tx, rx, reloader, _watch: watch }
    }

    /// Applies a trigger off the async threads, so a signal to stop is not kept waiting
    /// by a reload (the reloads themselves take turns on the reloader's lock).
    fn apply(&self, trigger: Trigger) {
        match &self.reloader {
            Some(r) => {
                let r = r.clone();
                drop(tokio::task::spawn_blocking(move || r.reload(trigger)));
            }
            None => info!("running on an embedded config; nothing to reload"),
        }
    }
}

/// The threads beside the async runtime: the ring buffer's drain (violations, and the
/// requests to find a Service backend) and the answerer that answers those requests.
struct Threads {
    /// Set to stop both.
    stop: Arc<AtomicBool>,
    drain: Option<std::thread::JoinHandle<()>>,
    answerer: std::thread::JoinHandle<()>,
}

impl Threads {
    fn spawn(
        kernel: &mut Kernel,
        ids: &Arc<RwLock<CellIds>>,
        config: Arc<RwLock<Config>>,
        cgroups: &Arc<Workloads>,
        recent: &Arc<Recent>,
        metrics: &AgentMetrics,
        conntrack: bool,
    ) -> Self {
        // Bounded: a flood of connections to Service addresses cannot grow the agent.
        let (request_tx, request_rx) =
            std::sync::mpsc::sync_channel::<agent_common::ViolationEvent>(REQUEST_QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let drain = kernel.take_events().map(|ring| {
            violations::spawn_drain(
                ring,
                ids.clone(),
                cgroups.clone(),
                recent.clone(),
                request_tx,
                metrics.service_lookups_dropped.with_label_values(&[DROPPED_QUEUE_FULL]),
                stop.clone(),
            )
        });
        let answerer = service_addr::spawn(service_addr::Answerer {
            maps: kernel.maps(),
            config,
            ids: ids.clone(),
            requests: request_rx,
            stop: stop.clone(),
            conntrack,
            dropped: metrics.service_lookups_dropped.clone(),
        });
        Self { stop, drain, answerer }
    }

    /// Tells both to stop, and waits for the drain, then for the answerer it feeds.
    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        if let Some(d) = self.drain {
            let _ = d.join();
        }
        let _ = self.answerer.join();
    }
}

/// The HTTP server's task, and what stops it.
struct Http {
    /// The address it listens on (the port chosen, for `--listen` on port 0).
    bound: SocketAddr,
    /// `/readyz`: ready from the start until the shutdown begins.
    ready: Arc<AtomicBool>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Http {
    fn spawn(listener: TcpListener, agent: Arc<Agent>, listen: SocketAddr) -> Self {
        let ready = Arc::new(AtomicBool::new(true));
        let server = Arc::new(Server {
            endpoints: agent,
            ready: ready.clone(),
            renders: Default::default(),
        });
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let bound = listener.local_addr().unwrap_or(listen);
        let task = tokio::spawn(server.serve(listener, async {
            let _ = stop_rx.await;
        }));
        Self { bound, ready, stop, task }
    }

    /// Not ready from now on; no new connection, and those in flight drained (for at
    /// most [`DRAIN_TIMEOUT`](crate::serve::http::DRAIN_TIMEOUT)).
    async fn stop(self) {
        self.ready.store(false, Ordering::Release);
        let _ = self.stop.send(());
        if let Err(e) = self.task.await {
            warn!(error = %e, "HTTP server task failed");
        }
    }
}

/// Serves until SIGTERM or SIGINT, or until the session ends (its outcome is then the
/// run's); SIGHUP and changes of the config file reload meanwhile.
async fn until_stopped<Fut>(
    signals: &mut Signals,
    session: &mut Pin<Box<Fut>>,
    reloads: &mut Reloads,
) -> Result<(), RunError>
where
    Fut: Future<Output = Result<(), String>>,
{
    loop {
        tokio::select! {
            _ = signals.term.recv() => { info!("SIGTERM: stopping"); return Ok(()); }
            _ = signals.int.recv() => { info!("SIGINT: stopping"); return Ok(()); }
            done = &mut *session => return done.map_err(RunError::Session),
            _ = signals.hup.recv() => { let _ = reloads.tx.try_send(Trigger::Signal); }
            Some(trigger) = reloads.rx.recv() => reloads.apply(trigger),
        }
    }
}

/// The shutdown, in this order:
/// 1. the session (what ran beside the agent, such as the demo) is dropped, so nothing
///    of it outlives the programs;
/// 2. `/readyz` turns not-ready, then the HTTP server stops taking connections and
///    drains those in flight (for at most its drain timeout), waited for: the requests
///    are answered while everything they read from still runs;
/// 3. the live sweeps are aborted (not waited for: a sweep already on its blocking
///    thread runs to its end);
/// 4. the drain and the answerer threads are told to stop and joined, the drain first
///    (it feeds the answerer's queue);
/// 5. the kernel handle goes last. The programs stay attached and counting (they and
///    their maps are pinned); the handles on the maps that the endpoints and reloads
///    hold go when [`serve`] returns.
async fn stop<S>(
    session: S,
    http: Http,
    sweeps: tokio::task::JoinHandle<()>,
    threads: Threads,
    kernel: Kernel,
) {
    drop(session);
    http.stop().await;
    sweeps.abort();
    threads.stop();
    drop(kernel);
}

/// The live sweep every `interval`: open connections add what they moved to the
/// counters. Once no connection older than the agent is left, the tracepoint that
/// watched for their ends goes. About every half `udp_idle`, the UDP flows idle longer
/// than that leave the flow table.
fn spawn_sweeps(
    maps: MapsHandle,
    interval: std::time::Duration,
    udp_idle: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // The first sweep one interval after the start (the seeding just read everything).
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seeded_close = true;
        let mut expired = std::time::Instant::now();
        loop {
            tick.tick().await;
            let m = maps.clone();
            let expire = expired.elapsed() >= udp_idle / 2;
            if expire {
                expired = std::time::Instant::now();
            }
            let swept = tokio::task::spawn_blocking(move || {
                let retired = if seeded_close { m.retire_seeded_close() } else { Ok(false) };
                if expire && let Err(e) = m.expire_udp(udp_idle) {
                    warn!(error = %e, "removing idle UDP flows failed");
                }
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
