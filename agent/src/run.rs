//! `cellwatch run`: check the node, load the config and the programs, serve the
//! endpoints, reload on SIGHUP, and stop cleanly on SIGINT/SIGTERM.
#![forbid(unsafe_code)]

use std::{
    io,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};
use tracing::{error, info, warn};

use crate::{
    cli::RunArgs,
    config::{Config, ConfigError},
    http::{Endpoints, Server},
    kernel::{Kernel, KernelError, LoadOptions, MapsHandle},
    metrics::AgentMetrics,
    policy::{CellIds, IdsExhausted, compile},
    preflight::{self, PreflightError},
};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Ids(#[from] IdsExhausted),
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
}

/// The running agent, as the HTTP endpoints and the reload path see it.
struct Agent {
    maps: MapsHandle,
    ids: RwLock<CellIds>,
    metrics: AgentMetrics,
    config_path: Option<PathBuf>,
}

impl Endpoints for Agent {
    fn metrics(&self) -> Result<String, String> {
        let snap = self.maps.snapshot().map_err(|e| format!("reading kernel maps failed: {e}"))?;
        let ids = self.ids.read().unwrap_or_else(|p| p.into_inner());
        self.metrics.render(&snap, &ids).map_err(|e| format!("encoding metrics failed: {e}"))
    }
}

impl Agent {
    /// Re-reads the config file and swaps it in; a failure keeps the running config.
    fn reload(&self) {
        let Some(path) = &self.config_path else {
            info!("SIGHUP: running on the embedded default config; nothing to reload");
            return;
        };
        let result = Config::load(path).map_err(|e| e.to_string()).and_then(|cfg| {
            let mut ids = self.ids.write().unwrap_or_else(|p| p.into_inner());
            let compiled = compile(&cfg, &mut ids).map_err(|e| e.to_string())?;
            self.maps.apply(&compiled).map_err(|e| e.to_string())?;
            Ok(cfg)
        });
        match result {
            Ok(cfg) => {
                self.metrics.config_reloads.with_label_values(&["success"]).inc();
                info!(cells = cfg.cells.len(), prefixes = cfg.prefix_count(), "config reloaded");
            }
            Err(e) => {
                self.metrics.config_reloads.with_label_values(&["error"]).inc();
                for line in e.lines() {
                    error!(problem = line, "config reload failed; the running config stays");
                }
            }
        }
    }
}

pub fn run(args: &RunArgs) -> Result<(), RunError> {
    let config = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::embedded_default(),
    };
    let node = preflight::check(args.cgroup.as_deref(), &args.bpffs)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    rt.block_on(serve(args, config, node))
}

async fn serve(args: &RunArgs, config: Config, node: preflight::Node) -> Result<(), RunError> {
    // Bind first: a taken port fails before anything touches the kernel.
    let listener = TcpListener::bind(args.listen).await.map_err(|source| {
        if source.kind() == io::ErrorKind::AddrInUse {
            RunError::PortInUse { addr: args.listen }
        } else {
            RunError::Listen { addr: args.listen, source }
        }
    })?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(RunError::Signals)?;

    if config.mode == crate::config::Mode::Enforce {
        warn!(
            "mode: enforce is not implemented in this version: connections are flagged, not refused"
        );
    }
    let mut ids = CellIds::default();
    let compiled = compile(&config, &mut ids)?;
    let opts =
        LoadOptions { cgroup_root: node.cgroup_root.clone(), conn_capacity: args.conn_capacity };
    let kernel = Kernel::load(&opts, &compiled)?;

    let agent = Arc::new(Agent {
        maps: kernel.maps(),
        ids: RwLock::new(ids),
        metrics: AgentMetrics::new(env!("CARGO_PKG_VERSION"), &node.kernel),
        config_path: args.config.clone(),
    });
    let ready = Arc::new(AtomicBool::new(true));
    let server = Arc::new(Server { endpoints: agent.clone(), ready: ready.clone() });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(server.serve(listener, async {
        let _ = stop_rx.await;
    }));
    info!(
        listen = %args.listen,
        cells = config.cells.len(),
        prefixes = config.prefix_count(),
        mode = %config.mode,
        "cellwatch is running"
    );

    loop {
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
            _ = sigint.recv() => { info!("SIGINT: stopping"); break; }
            _ = sighup.recv() => {
                let a = agent.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || a.reload()).await {
                    warn!(error = %e, "config reload task failed");
                }
            }
        }
    }

    ready.store(false, Ordering::Release);
    let _ = stop_tx.send(());
    if let Err(e) = http.await {
        warn!(error = %e, "HTTP server task failed");
    }
    drop(kernel);
    info!("eBPF programs detached; cellwatch stopped");
    Ok(())
}
