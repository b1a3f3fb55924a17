//! The small HTTP/1.0 client that the demo and `top` read an agent's endpoints with, as
//! any scraper would: one GET per connection, the whole answer read until the server
//! closes, bounded in time.
#![forbid(unsafe_code)]

use std::{io, net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// `GET path` from `addr`: the body of a 200 answer; any other status is an error
/// naming the status line.
pub(crate) async fn get(addr: SocketAddr, path: &str, limit: Duration) -> io::Result<String> {
    let fetch = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        Ok::<_, io::Error>(String::from_utf8_lossy(&raw).into_owned())
    };
    let raw = tokio::time::timeout(limit, fetch)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer in time"))??;
    match raw.split_once("\r\n\r\n") {
        Some((head, body))
            if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") =>
        {
            Ok(body.to_owned())
        }
        _ => Err(io::Error::other(format!(
            "answered `{}`",
            raw.lines().next().filter(|l| !l.is_empty()).unwrap_or("nothing")
        ))),
    }
}
