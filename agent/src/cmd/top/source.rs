//! Where `top` reads an agent: the `--url` parsed and resolved, and one reading of it
//! (`/metrics` and `/violations`, through the shared HTTP/1.0 client).
#![forbid(unsafe_code)]

use std::{
    io,
    net::{SocketAddr, ToSocketAddrs},
    time::{Duration, Instant},
};

use agent_core::{metrics::families, promtext};
use agent_view::{
    scrape::{self, Scrape},
    violations::{self, Violation},
};

use super::TopError;
use crate::cmd::fetch;

/// How long one GET may take: a hung agent must not freeze the view for long.
const LIMIT: Duration = Duration::from_secs(2);
/// How many recent violations are asked for (the panel shows one per pair).
const VIOLATIONS: &str = "/violations?limit=256";

/// A reading of the agent.
pub(crate) struct Reading {
    pub(crate) at: Instant,
    pub(crate) pairs: Scrape,
    /// `/violations`, or why it could not be read (the table is shown either way).
    pub(crate) violations: Result<Vec<Violation>, String>,
}

/// The agent at `--url`.
pub(crate) struct Source {
    pub(crate) url: String,
    addr: SocketAddr,
    /// A path before `/metrics`, when the URL has one (a proxy's).
    prefix: String,
    rt: tokio::runtime::Runtime,
}

impl Source {
    pub(crate) fn new(url: &str) -> Result<Self, TopError> {
        let (host, port, prefix) = split_url(url)?;
        let addr =
            (host.as_str(), port).to_socket_addrs().ok().and_then(|mut a| a.next()).ok_or_else(
                || TopError::Url { url: url.to_owned(), why: format!("`{host}` does not resolve") },
            )?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(TopError::Runtime)?;
        Ok(Self { url: url.trim_end_matches('/').to_owned(), addr, prefix, rt })
    }

    fn get(&self, path: &str) -> io::Result<String> {
        self.rt.block_on(fetch::get(self.addr, &format!("{}{path}", self.prefix), LIMIT))
    }

    /// One reading: `/metrics` must answer with cellwatch's families; `/violations` may
    /// fail on its own.
    pub(crate) fn read(&self) -> Result<Reading, TopError> {
        let text = self
            .get("/metrics")
            .map_err(|source| TopError::Unreachable { url: self.url.clone(), source })?;
        let at = Instant::now();
        let samples = promtext::parse(&text);
        if !samples.iter().any(|s| s.name == families::BUILD_INFO) {
            return Err(TopError::NotCellwatch { url: self.url.clone() });
        }
        let violations = self
            .get(VIOLATIONS)
            .map_err(|e| format!("reading /violations failed: {e}"))
            .and_then(|body| violations::parse_violations(&body).map_err(|e| e.to_string()));
        Ok(Reading { at, pairs: scrape::read(&samples), violations })
    }
}

/// `--url` as (host, port, prefix): see [`fetch::split_url`].
fn split_url(url: &str) -> Result<(String, u16, String), TopError> {
    fetch::split_url(url).map_err(|why| TopError::Url { url: url.to_owned(), why })
}
