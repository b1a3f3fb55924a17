//! The small HTTP/1.0 client that the demo and `top` read an agent's endpoints with, as
//! any scraper would, and `report` Prometheus' query API: one GET per connection, the
//! whole answer read until the server closes, bounded in time and in size. Plain http
//! only.
#![forbid(unsafe_code)]

use std::{io, net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The largest answer read (head and body): a `/metrics` of 10,000 cell pairs is about
/// 40 MB of text, a Prometheus answer for a report of a large fleet a few; a server that
/// sends more is refused rather than read whole.
pub(crate) const MAX_ANSWER: u64 = 256 << 20;

/// An answer, whatever its status.
pub(crate) struct Answer {
    /// The status code; 0 when the status line has none.
    pub(crate) status: u16,
    /// The status line, as `HTTP/1.1 200 OK`.
    pub(crate) status_line: String,
    pub(crate) body: String,
}

/// `GET path` from `addr`, naming `host` in the `Host` header: the answer, whatever its
/// status.
pub(crate) async fn request(
    addr: SocketAddr,
    host: &str,
    path: &str,
    limit: Duration,
) -> io::Result<Answer> {
    request_at_most(addr, host, path, limit, MAX_ANSWER).await
}

/// [`request`], refusing an answer of more than `max` bytes.
async fn request_at_most(
    addr: SocketAddr,
    host: &str,
    path: &str,
    limit: Duration,
    max: u64,
) -> io::Result<Answer> {
    let fetch = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes()).await?;
        let mut raw = Vec::new();
        (&mut s).take(max + 1).read_to_end(&mut raw).await?;
        if raw.len() as u64 > max {
            return Err(io::Error::other(format!(
                "the answer is larger than {max} bytes; refused"
            )));
        }
        Ok::<_, io::Error>(String::from_utf8_lossy(&raw).into_owned())
    };
    let raw = tokio::time::timeout(limit, fetch)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer in time"))??;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    let status_line = head.lines().next().unwrap_or("").to_owned();
    let status = match status_line.split_whitespace().collect::<Vec<_>>()[..] {
        [version, code, ..] if version.starts_with("HTTP/") => code.parse().unwrap_or(0),
        _ => 0,
    };
    Ok(Answer { status, status_line, body: body.to_owned() })
}

/// `GET path` from `addr`: the body of a 200 answer; any other status is an error
/// naming the status line.
pub(crate) async fn get(addr: SocketAddr, path: &str, limit: Duration) -> io::Result<String> {
    let answer = request(addr, "localhost", path, limit).await?;
    if answer.status == 200 {
        return Ok(answer.body);
    }
    let line = if answer.status_line.is_empty() { "nothing" } else { &answer.status_line };
    // The server's own sentence, when it gave one (the agent's 403 says why).
    let why = answer.body.lines().next().map(str::trim).filter(|l| !l.is_empty() && l.len() < 300);
    match why {
        Some(why) => Err(io::Error::other(format!(
            "answered `{line}`: {}",
            agent_view::format::printable(why)
        ))),
        None => Err(io::Error::other(format!("answered `{line}`"))),
    }
}

/// `http://host[:port][/prefix]` as (host, port, prefix); or why not. A URL without a
/// scheme is taken as http, with port 80 when it names none; https is refused.
pub(crate) fn split_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some(_) => return Err("only plain http:// is spoken".to_owned()),
        None => url,
    };
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    let prefix = path.trim_end_matches('/').to_owned();
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("an unclosed `[`")?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("no host".to_owned());
    }
    let port = match port {
        None => 80,
        Some(p) => p.parse().map_err(|_| format!("`{p}` is not a port"))?,
    };
    Ok((host.to_owned(), port, prefix))
}

#[cfg(test)]
mod tests;
