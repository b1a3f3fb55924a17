//! Where the demo's log lines go: to a file of their own, named on screen, so the
//! agent's lines (one per violation among them) do not scroll the table away; or to
//! stderr, as `cellwatch run` logs, with `--verbose`.
#![forbid(unsafe_code)]

use std::{fs::OpenOptions, path::PathBuf, sync::Mutex};

use tracing_subscriber::{EnvFilter, fmt};

use super::super::run::RunError;
use crate::logging::{self, LogFormat};

/// Installs the demo's log subscriber: stderr with `verbose`, else a new file in the
/// temporary directory, whose path it returns. `RUST_LOG` overrides the `info` level
/// either way.
pub(crate) fn init(format: LogFormat, verbose: bool) -> Result<Option<PathBuf>, RunError> {
    if verbose {
        logging::init(format);
        return Ok(None);
    }
    let path = std::env::temp_dir().join(format!("cellwatch-demo-{}.log", std::process::id()));
    // A new file only: never follow a link someone left at that name.
    let file = OpenOptions::new().write(true).create_new(true).open(&path).map_err(|e| {
        RunError::Session(format!(
            "cannot create the demo's log file {}: {e} (or run with --verbose to log on stderr)",
            path.display()
        ))
    })?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_ansi(false).with_writer(Mutex::new(file));
    // As in `logging::init`, try_init also bridges the `log` records (aya's) in.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    Ok(Some(path))
}
