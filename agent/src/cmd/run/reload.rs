//! Config reloads, on SIGHUP and when the config file changes. A Kubernetes ConfigMap
//! update is a symlink swap in the mounted directory (`..data` -> a new timestamped
//! directory), so the directory is watched, not the file; a change is applied once,
//! however many events it raised, because only a change of content is reloaded.
#![forbid(unsafe_code)]

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    io,
    path::{Path, PathBuf},
    sync::{Mutex, RwLock},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use inotify::{Inotify, WatchMask};
use prometheus::IntCounterVec;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use agent_core::{
    config::{Config, ConfigError},
    ids::CellIds,
    policy::{compile, drains_summary, enforce_summary},
};

use crate::{kernel::MapsHandle, sync};

/// Events closer together than this are one change (a ConfigMap swap raises several).
const DEBOUNCE: Duration = Duration::from_millis(150);

/// What asked for a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// SIGHUP: always re-applied.
    Signal,
    /// The directory changed: applied only if the file's content did.
    Watch,
}

/// Reloads one config file into the kernel maps.
pub(crate) struct Reloader {
    path: PathBuf,
    maps: MapsHandle,
    ids: std::sync::Arc<RwLock<CellIds>>,
    /// The running config, for whoever judges by it after the start.
    config: std::sync::Arc<RwLock<Config>>,
    results: IntCounterVec,
    /// Hash of the content now applied.
    applied: Mutex<Option<u64>>,
}

fn content_hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

impl Reloader {
    /// `initial` is the content the agent started with.
    pub(crate) fn new(
        path: PathBuf,
        initial: &[u8],
        maps: MapsHandle,
        ids: std::sync::Arc<RwLock<CellIds>>,
        config: std::sync::Arc<RwLock<Config>>,
        results: IntCounterVec,
    ) -> Self {
        Self { path, maps, ids, config, results, applied: Mutex::new(Some(content_hash(initial))) }
    }

    /// Reloads the file; a failure keeps the running config, logs each problem and is
    /// counted as `result="error"`.
    pub(crate) fn reload(&self, trigger: Trigger) {
        let started = Instant::now();
        // One reload at a time, from reading the file on: the newest content is applied
        // last.
        let mut applied = sync::lock(&self.applied);
        let bytes = match agent_core::config::read_file(&self.path) {
            Ok(b) => b,
            Err(ConfigError::Read { source: e, .. }) if e.kind() == io::ErrorKind::NotFound => {
                warn!(path = %self.path.display(), "the config file is gone; the running config stays");
                self.count("error");
                return;
            }
            Err(e) => {
                error!(error = %e, "cannot read the config; the running config stays");
                self.count("error");
                return;
            }
        };
        let hash = content_hash(&bytes);
        if trigger == Trigger::Watch && *applied == Some(hash) {
            debug!("config directory changed but the config did not");
            return;
        }
        let shown = self.path.display().to_string();
        let result =
            Config::from_bytes(&shown, &bytes).map_err(|e| e.to_string()).and_then(|cfg| {
                let mut ids = sync::write(&self.ids);
                let compiled = compile(&cfg, &mut ids).map_err(|e| e.to_string())?;
                compiled.fits().map_err(|e| e.to_string())?;
                self.maps.apply(&compiled).map_err(|e| e.to_string())?;
                Ok(cfg)
            });
        match result {
            Ok(cfg) => {
                *applied = Some(hash);
                self.count("success");
                warn_of(&cfg);
                info!(
                    ?trigger,
                    cells = cfg.cells.len(),
                    prefixes = cfg.prefix_count(),
                    enforce = %enforce_summary(&cfg),
                    drains = %drains_summary(&cfg),
                    elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                    "config reloaded"
                );
                *sync::write(&self.config) = cfg;
            }
            Err(e) => {
                self.count("error");
                for line in e.lines() {
                    error!(problem = line, "config reload failed; the running config stays");
                }
            }
        }
    }

    fn count(&self, result: &str) {
        self.results.with_label_values(&[result]).inc();
        if let Err(e) = self.maps.count_reload(result == "success") {
            warn!(error = %e, "cannot keep the reload count in the pinned maps");
        }
    }

    /// Watches the config's directory and sends [`Trigger::Watch`] after each burst of
    /// changes. Ends (with a warning) if the directory cannot be watched.
    pub(crate) fn spawn_watch(
        path: &Path,
        tx: mpsc::Sender<Trigger>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        let mut stream = match watch(&dir) {
            Ok(s) => s,
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "cannot watch the config directory; reload with SIGHUP");
                return None;
            }
        };
        info!(dir = %dir.display(), "watching the config directory for changes");
        Some(tokio::spawn(async move {
            while stream.next().await.is_some() {
                // Let the burst settle, drain what came meanwhile, then reload once.
                tokio::time::sleep(DEBOUNCE).await;
                while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, stream.next()).await {}
                if tx.send(Trigger::Watch).await.is_err() {
                    return;
                }
            }
        }))
    }
}

fn watch(dir: &Path) -> io::Result<inotify::EventStream<Vec<u8>>> {
    let inotify = Inotify::init()?;
    inotify.watches().add(
        dir,
        WatchMask::CLOSE_WRITE
            | WatchMask::MOVED_TO
            | WatchMask::MOVED_FROM
            | WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::ATTRIB,
    )?;
    inotify.into_event_stream(vec![0u8; 4096])
}

/// Says what in a config applied is valid but likely a mistake (an expired temporary
/// rule), each in one line.
pub(super) fn warn_of(cfg: &Config) {
    for w in cfg.warnings(std::time::SystemTime::now()) {
        tracing::warn!(line = w.line, column = w.column, "{}", w.message);
    }
}
