//! `cellwatch report`: the blast radius of each service, each cell's dependencies and
//! containment, and the outlier cells, read from a Prometheus that scrapes the agents.
//! The queries, the model and the three outputs are `agent_view::report`'s; here are
//! Prometheus' HTTP API ([`api`]) and the command.
#![forbid(unsafe_code)]

mod api;
#[cfg(test)]
mod tests;

use std::io::{self, Write as _};

use agent_view::report::{NoData, Range};

use crate::cli::{ReportArgs, ReportFormat};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReportError {
    #[error("`{url}` is not a Prometheus URL: {why} (e.g. --prometheus http://prometheus:9090)")]
    Url { url: String, why: String },
    #[error(
        "cannot reach Prometheus at {url}: {source} (is it running there? --prometheus names \
         its address)"
    )]
    Unreachable { url: String, source: io::Error },
    #[error("Prometheus at {url} refused a query (HTTP {status}): {why}")]
    Refused { url: String, status: u16, why: String },
    #[error("{url} does not answer as Prometheus' query API: HTTP {status}, {why}")]
    NotPrometheus { url: String, status: u16, why: String },
    #[error("Prometheus at {url} has {source}: does it scrape the agents?")]
    NoData { url: String, source: NoData },
    #[error("cannot write the report: {0}")]
    Output(#[source] io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] io::Error),
}

pub(crate) fn report(args: &ReportArgs) -> Result<(), ReportError> {
    let out = render(&args.prometheus, args.range, args.format)?;
    io::stdout().lock().write_all(out.as_bytes()).map_err(ReportError::Output)
}

/// The report of the Prometheus at `url` over `range`, as `format` writes it.
pub(crate) fn render(url: &str, range: Range, format: ReportFormat) -> Result<String, ReportError> {
    let prometheus = api::Prometheus::new(url)?;
    let report = prometheus.report(range)?;
    Ok(match format {
        ReportFormat::Text => report.text(&prometheus.url),
        ReportFormat::Json => {
            report.json().map_err(|e| ReportError::Output(io::Error::other(e.to_string())))?
        }
        ReportFormat::Dot => report.dot(),
    })
}
