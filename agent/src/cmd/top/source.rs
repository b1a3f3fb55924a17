//! Where `top` reads an agent: the `--url` parsed and resolved, and one reading of it
//! (`/metrics` and `/violations`, through the shared HTTP/1.0 client).
#![forbid(unsafe_code)]

use std::{
    io,
    net::{SocketAddr, ToSocketAddrs},
    time::{Duration, Instant},
};

use agent_core::{
    promtext,
    top::{self, Scrape, Violation},
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
        if !samples.iter().any(|s| s.name == "cellwatch_build_info") {
            return Err(TopError::NotCellwatch { url: self.url.clone() });
        }
        let violations = self
            .get(VIOLATIONS)
            .map_err(|e| format!("reading /violations failed: {e}"))
            .and_then(|body| top::parse_violations(&body).map_err(|e| e.to_string()));
        Ok(Reading { at, pairs: top::read(&samples), violations })
    }
}

/// `http://host[:port][/prefix]` as (host, port, prefix). A URL without a scheme is
/// taken as http; https is refused (the agent serves plain HTTP).
fn split_url(url: &str) -> Result<(String, u16, String), TopError> {
    let bad = |why: &str| TopError::Url { url: url.to_owned(), why: why.to_owned() };
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some(_) => return Err(bad("the agent serves plain http://")),
        None => url,
    };
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    let prefix = path.trim_end_matches('/').to_owned();
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| bad("an unclosed `[`"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        None => 80,
        Some(p) => p.parse().map_err(|_| bad(&format!("`{p}` is not a port")))?,
    };
    Ok((host.to_owned(), port, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(url: &str) -> (String, u16, String) {
        split_url(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn urls() {
        assert_eq!(parts("http://127.0.0.1:9473"), ("127.0.0.1".into(), 9473, String::new()));
        assert_eq!(parts("http://127.0.0.1:9473/"), ("127.0.0.1".into(), 9473, String::new()));
        assert_eq!(parts("127.0.0.1:1"), ("127.0.0.1".into(), 1, String::new()));
        assert_eq!(parts("HTTP://[::1]:9/agent/"), ("::1".into(), 9, "/agent".into()));
        assert_eq!(parts("http://localhost"), ("localhost".into(), 80, String::new()));
        for bad in ["https://x:1", "http://:1", "http://x:port", "http://[::1:9"] {
            assert!(split_url(bad).is_err(), "{bad}");
        }
    }
}
