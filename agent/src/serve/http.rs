//! The HTTP endpoints: `/metrics`, `/healthz`, `/readyz`, `/connections` and
//! `/violations` (JSON). Hardened for a node agent:
//! bounded connections, header size and read-time limits, and a graceful drain with a
//! time limit on shutdown.
#![forbid(unsafe_code)]

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode, body::Incoming, header, server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinSet};
use tracing::{debug, warn};

use agent_core::query::{self, Query};

/// Most concurrent client connections; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 128;
/// A client must send its request headers within this time (slowloris guard).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How long shutdown waits for requests in flight.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What the endpoints answer from. Implemented by the running agent.
pub(crate) trait Endpoints: Send + Sync + 'static {
    /// The Prometheus text exposition, written to `out`, or a sentence saying why it is
    /// unavailable.
    fn metrics(&self, out: &mut dyn std::io::Write) -> Result<(), String>;
    /// Live connections as JSON.
    fn connections(&self, q: &Query) -> Result<String, Unanswered>;
    /// Recent violations as JSON.
    fn violations(&self, q: &Query) -> Result<String, Unanswered>;
}

/// Why a JSON endpoint has no answer, as one sentence.
#[derive(Debug)]
pub(crate) enum Unanswered {
    /// This agent cannot answer it on this node (503): e.g. a kernel that runs neither
    /// of the live sweep's iterators.
    Unavailable(String),
    /// Reading it failed (500).
    Failed(String),
}

/// The endpoints that name pods, processes and addresses: answered only to clients on
/// this node, whatever address the agent listens on (`/metrics`, `/healthz` and
/// `/readyz` answer everyone, as a scraper and the kubelet expect).
const DETAIL: [&str; 2] = ["/connections", "/violations"];

/// Whether a client is on this node: it connected from a loopback address (a pod, even
/// one reaching the agent's host-network listener, comes from its own address).
fn on_this_node(peer: SocketAddr) -> bool {
    peer.ip().to_canonical().is_loopback()
}

/// What each JSON endpoint accepts.
const CONNECTIONS_PARAMS: &[&str] = &["cell", "verdict", "limit"];
const VIOLATIONS_PARAMS: &[&str] = &["limit"];

pub(crate) struct Server<E> {
    pub(crate) endpoints: Arc<E>,
    /// Programs attached and config loaded.
    pub(crate) ready: Arc<AtomicBool>,
}

type Resp = Response<Full<Bytes>>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Whether the client takes a gzip body (Prometheus and VictoriaMetrics ask for one).
fn accepts_gzip(headers: &header::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            // `gzip;q=0` refuses it.
            let refused = parts.any(|p| p.replace(' ', "") == "q=0");
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

/// The size of the last plain exposition.
static LAST_PLAIN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The exposition, gzipped at the fastest level as it is rendered when `gzip` (a
/// 10,000-pair scrape shrinks about 17-fold, and the plain text is never held whole).
fn exposition(e: &impl Endpoints, gzip: bool) -> Result<Bytes, String> {
    if !gzip {
        // As large as the last plain one: a 10,000-pair body grown from empty would be
        // copied about as many times again.
        let mut body = Vec::with_capacity(LAST_PLAIN.load(Ordering::Relaxed) + 64 * 1024);
        e.metrics(&mut body)?;
        LAST_PLAIN.store(body.len(), Ordering::Relaxed);
        return Ok(body.into());
    }
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.metrics(&mut z)?;
    z.finish().map(Bytes::from).map_err(|e| format!("compressing failed: {e}"))
}

impl<E: Endpoints> Server<E> {
    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Resp, Infallible> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET is supported\n");
            r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            return Ok(r);
        }
        let path = req.uri().path();
        if DETAIL.contains(&path) && !on_this_node(peer) {
            return Ok(text(
                StatusCode::FORBIDDEN,
                format!(
                    "{path} names this node's pods and processes, so it is served only to \
                     clients on the node (loopback), not to {}\n",
                    peer.ip()
                ),
            ));
        }
        Ok(match path {
            "/metrics" => {
                let e = self.endpoints.clone();
                let gzip = accepts_gzip(req.headers());
                let answer = tokio::task::spawn_blocking(move || exposition(&*e, gzip));
                match answer.await {
                    Ok(Ok(body)) => {
                        let mut r = text(StatusCode::OK, body);
                        let h = r.headers_mut();
                        h.insert(
                            header::CONTENT_TYPE,
                            header::HeaderValue::from_static(
                                "text/plain; version=0.0.4; charset=utf-8",
                            ),
                        );
                        if gzip {
                            h.insert(
                                header::CONTENT_ENCODING,
                                header::HeaderValue::from_static("gzip"),
                            );
                        }
                        r
                    }
                    Ok(Err(why)) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{why}\n")),
                    Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "metrics rendering failed\n"),
                }
            }
            "/connections" => {
                self.json(req.uri().query(), CONNECTIONS_PARAMS, |e, q| e.connections(q)).await
            }
            "/violations" => {
                self.json(req.uri().query(), VIOLATIONS_PARAMS, |e, q| e.violations(q)).await
            }
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" if self.ready.load(Ordering::Acquire) => text(StatusCode::OK, "ready\n"),
            "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; try /metrics, /healthz, /readyz, /connections or /violations\n",
            ),
        })
    }

    /// A JSON endpoint: the query checked first (400 with a sentence), then the answer
    /// built off the async threads.
    async fn json(
        &self,
        raw: Option<&str>,
        allowed: &'static [&'static str],
        f: fn(&E, &Query) -> Result<String, Unanswered>,
    ) -> Resp {
        let q = match query::parse(raw, allowed) {
            Ok(q) => q,
            Err(why) => return text(StatusCode::BAD_REQUEST, format!("{why}\n")),
        };
        let e = self.endpoints.clone();
        match tokio::task::spawn_blocking(move || f(&e, &q)).await {
            Ok(Ok(body)) => {
                let mut r = text(StatusCode::OK, body);
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                r
            }
            Ok(Err(Unanswered::Unavailable(why))) => {
                text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"))
            }
            Ok(Err(Unanswered::Failed(why))) => {
                text(StatusCode::INTERNAL_SERVER_ERROR, format!("{why}\n"))
            }
            Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "the request failed\n"),
        }
    }

    /// Serves until `shutdown` resolves, then drains for at most [`DRAIN_TIMEOUT`].
    pub(crate) async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) {
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                () = &mut shutdown => break,
            };
            let (stream, peer) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => { warn!(error = %e, "accept failed"); continue; }
                },
                () = &mut shutdown => break,
            };
            let server = self.clone();
            let mut stop = stop_rx.clone();
            conns.spawn(async move {
                let _permit = permit;
                let svc = service_fn(move |req| server.clone().handle(req, peer));
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(MAX_HEAD_BYTES)
                    .serve_connection(TokioIo::new(stream), svc);
                tokio::pin!(conn);
                let res = tokio::select! {
                    r = conn.as_mut() => r,
                    _ = stop.changed() => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(e) = res {
                    debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
            });
            while conns.try_join_next().is_some() {}
        }
        let _ = stop_tx.send(true);
        drop(listener);
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(left = conns.len(), "HTTP drain timed out; closing the remaining connections");
            conns.abort_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> header::HeaderMap {
        let mut h = header::HeaderMap::new();
        for v in values {
            h.append(header::ACCEPT_ENCODING, header::HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn gzip_when_asked_for_and_not_refused() {
        assert!(accepts_gzip(&headers(&["gzip"])));
        assert!(accepts_gzip(&headers(&["identity, GZIP;q=0.5"])));
        assert!(accepts_gzip(&headers(&["br", "gzip"])));
        assert!(!accepts_gzip(&headers(&[])));
        assert!(!accepts_gzip(&headers(&["br, deflate"])));
        assert!(!accepts_gzip(&headers(&["gzip;q=0"])));
        assert!(!accepts_gzip(&headers(&["xgzip"])));
    }

    /// Endpoints whose exposition is one line written many times, in pieces.
    struct Repeat(&'static str, usize);

    impl Endpoints for Repeat {
        fn metrics(&self, out: &mut dyn std::io::Write) -> Result<(), String> {
            for _ in 0..self.1 {
                out.write_all(self.0.as_bytes()).map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        fn connections(&self, _: &Query) -> Result<String, Unanswered> {
            Ok("[]".into())
        }
        fn violations(&self, _: &Query) -> Result<String, Unanswered> {
            Ok("[]".into())
        }
    }

    #[test]
    fn a_compressed_exposition_inflates_to_the_plain_one() {
        use std::io::Read;
        let e = Repeat("cellwatch_connections_opened_total{src_cell=\"a\"} 1\n", 1000);
        let plain = exposition(&e, false).unwrap();
        let gz = exposition(&e, true).unwrap();
        assert_eq!(plain.len(), e.0.len() * 1000);
        assert!(gz.len() < plain.len() / 10);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut back).unwrap();
        assert_eq!(back, plain);
    }
}
