//! `cellwatch drain-status`: whether a drained cell is empty yet, read from a Prometheus
//! that scrapes the agents, as an exit code (0 empty, 1 not empty, 2 cannot tell) and a
//! few lines or a JSON object. The queries, the verdict and both outputs are
//! `agent_view::drain`'s; Prometheus' HTTP API is `prometheus_api`'s; here is the command.
#![forbid(unsafe_code)]

#[cfg(test)]
mod tests;

use std::{
    io::{self, Write as _},
    process::ExitCode,
};

use agent_view::drain::{Answers, NotDrained, Query, Status};

use crate::{
    cli::{DrainFormat, DrainStatusArgs},
    cmd::prometheus_api::{self, ApiError, Prometheus},
};

/// The exit code of a cell still in use.
const EXIT_NOT_EMPTY: u8 = 1;

/// Why drain-status cannot tell: exit 2.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DrainError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("Prometheus at {url} has {source}")]
    NotDrained { url: String, source: NotDrained },
    #[error("cannot write the status: {0}")]
    Output(#[source] io::Error),
}

pub(crate) fn drain_status(args: &DrainStatusArgs) -> Result<ExitCode, DrainError> {
    let (status, out) = render(args)?;
    io::stdout().lock().write_all(out.as_bytes()).map_err(DrainError::Output)?;
    Ok(if status.empty { ExitCode::SUCCESS } else { ExitCode::from(EXIT_NOT_EMPTY) })
}

/// The status of the cell read from the Prometheus of `args`, and as `args.format`
/// writes it.
pub(crate) fn render(args: &DrainStatusArgs) -> Result<(Status, String), DrainError> {
    let prometheus = Prometheus::new(&args.prometheus)?;
    let status = read(&prometheus, args)?;
    let out = match args.format {
        DrainFormat::Text => status.text(),
        DrainFormat::Json => {
            status.json().map_err(|e| DrainError::Output(io::Error::other(e.to_string())))?
        }
    };
    Ok((status, out))
}

/// Every query, all at the same time, and the status they make.
fn read(prometheus: &Prometheus, args: &DrainStatusArgs) -> Result<Status, DrainError> {
    let now = prometheus_api::now();
    let mut answers = Answers::new();
    for q in Query::ALL {
        answers.insert(q, prometheus.query(&q.promql(&args.cell, args.window), now)?);
    }
    Status::build(&args.cell, args.window, now, &answers)
        .map_err(|source| DrainError::NotDrained { url: prometheus.url.clone(), source })
}
