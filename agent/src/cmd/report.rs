//! `cellwatch report`: the blast radius of each service, each cell's dependencies and
//! containment, the outlier cells and the temporary allow rules in force, read from a
//! Prometheus that scrapes the agents. The queries, the model and the four outputs are
//! `agent_view::report`'s; Prometheus' HTTP API is `prometheus_api`'s; here is the command.
#![forbid(unsafe_code)]

#[cfg(test)]
mod tests;

use std::io::{self, Write as _};

use agent_view::report::{Answers, NoData, Range, Reading, Report};

use crate::{
    cli::{ReportArgs, ReportFormat},
    cmd::prometheus_api::{self, ApiError, Prometheus},
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReportError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("Prometheus at {url} has {source}: does it scrape the agents?")]
    NoData { url: String, source: NoData },
    #[error("cannot write the report: {0}")]
    Output(#[source] io::Error),
}

pub(crate) fn report(args: &ReportArgs) -> Result<(), ReportError> {
    let out = render(&args.prometheus, args.range, args.format)?;
    io::stdout().lock().write_all(out.as_bytes()).map_err(ReportError::Output)
}

/// The report of the Prometheus at `url` over `range`, as `format` writes it.
pub(crate) fn render(url: &str, range: Range, format: ReportFormat) -> Result<String, ReportError> {
    let prometheus = Prometheus::new(url)?;
    let report = read(&prometheus, range)?;
    Ok(match format {
        ReportFormat::Text => report.text(&prometheus.url),
        ReportFormat::Json => {
            report.json().map_err(|e| ReportError::Output(io::Error::other(e.to_string())))?
        }
        ReportFormat::Dot => report.dot(),
        ReportFormat::Html => report.html(&prometheus.url),
    })
}

/// Every reading over `range` up to now, all at the same time, and the report they make.
fn read(prometheus: &Prometheus, range: Range) -> Result<Report, ReportError> {
    let now = prometheus_api::now();
    let mut answers = Answers::new();
    for family in Reading::ALL {
        answers.insert(family, prometheus.query(&family.query(range), now)?);
    }
    Report::build(range, now, &answers)
        .map_err(|source| ReportError::NoData { url: prometheus.url.clone(), source })
}
