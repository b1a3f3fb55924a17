//! The HTTP endpoints: `/metrics`, `/healthz`, `/readyz`, `/connections` and
//! `/violations` (JSON). Hardened for a node agent: bounded connections, header size and
//! read-time limits, a write time limit (a client that stops reading is cut off), one
//! render of `/metrics` at a time per form and encoding (scrapes that arrive together share it),
//! the probes answered even when every connection slot is taken, the detail endpoints
//! for clients on the node only, and a graceful drain with a time limit on shutdown.
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

use super::{metrics::Form, timed::Timed};

/// Most concurrent client connections served in full.
const MAX_CONNECTIONS: usize = 128;
/// Past those, connections that may ask only for `/healthz` and `/readyz` (anything else
/// is a 503), so the kubelet's probes never wait behind busy clients; past these too, a
/// connection is closed at once.
const PROBE_CONNECTIONS: usize = 32;
/// A write that waits this long for the client to read fails, and the connection goes.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client must send its request headers within this time (slowloris guard).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How long shutdown waits for requests in flight.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What the endpoints answer from. Implemented by the running agent.
pub(crate) trait Endpoints: Send + Sync + 'static {
    /// The Prometheus exposition in `form`, written to `out`, or a sentence saying why
    /// it is unavailable.
    fn metrics(&self, form: Form, out: &mut dyn std::io::Write) -> Result<(), String>;
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
const CONNECTIONS_PARAMS: &[&str] = &["cell", "drained", "verdict", "limit"];
const VIOLATIONS_PARAMS: &[&str] = &["limit"];

pub(crate) struct Server<E> {
    pub(crate) endpoints: Arc<E>,
    /// Programs attached and config loaded.
    pub(crate) ready: Arc<AtomicBool>,
    /// The `/metrics` render in flight per form and encoding (see [`Server::render`]).
    pub(crate) renders: Renders,
}

/// A render's outcome, shared by every scrape that waited for it.
type Rendered = Option<Result<Bytes, String>>;

/// The renders in flight, by form and encoding (text or native, plain or gzip).
#[derive(Default)]
pub(crate) struct Renders(std::sync::Mutex<[Option<tokio::sync::watch::Receiver<Rendered>>; 4]>);

/// What a scrape asked for: the form (protobuf with native histograms when its
/// `Accept` asks for it, else text) and whether gzipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Asked {
    form: Form,
    gzip: bool,
}

impl Asked {
    fn of(headers: &header::HeaderMap) -> Self {
        let native = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(agent_core::metrics::proto::accepted);
        Self { form: if native { Form::Native } else { Form::Text }, gzip: accepts_gzip(headers) }
    }

    /// Its slot in [`Renders`].
    fn slot(self) -> usize {
        usize::from(self.gzip) + 2 * usize::from(self.form == Form::Native)
    }

    fn content_type(self) -> &'static str {
        match self.form {
            Form::Text => "text/plain; version=0.0.4; charset=utf-8",
            Form::Native => agent_core::metrics::proto::CONTENT_TYPE,
        }
    }
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

/// The exposition, gzipped at the fastest level as it is rendered when asked (a
/// 10,000-pair scrape shrinks about 17-fold, and the plain text is never held whole).
fn exposition(e: &impl Endpoints, asked: Asked) -> Result<Bytes, String> {
    if !asked.gzip {
        // As large as the last plain one: a 10,000-pair body grown from empty would be
        // copied about as many times again.
        let mut body = Vec::with_capacity(LAST_PLAIN.load(Ordering::Relaxed) + 64 * 1024);
        e.metrics(asked.form, &mut body)?;
        LAST_PLAIN.store(body.len(), Ordering::Relaxed);
        return Ok(body.into());
    }
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.metrics(asked.form, &mut z)?;
    z.finish().map(Bytes::from).map_err(|e| format!("compressing failed: {e}"))
}

impl<E: Endpoints> Server<E> {
    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        probes_only: bool,
    ) -> Result<Resp, Infallible> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET is supported\n");
            r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            return Ok(r);
        }
        let path = req.uri().path();
        if probes_only && !matches!(path, "/healthz" | "/readyz") {
            return Ok(text(
                StatusCode::SERVICE_UNAVAILABLE,
                "every connection slot is taken; only /healthz and /readyz are answered now\n",
            ));
        }
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
                let asked = Asked::of(req.headers());
                match self.render(asked).await {
                    Ok(body) => {
                        let mut r = text(StatusCode::OK, body);
                        let h = r.headers_mut();
                        h.insert(
                            header::CONTENT_TYPE,
                            header::HeaderValue::from_static(asked.content_type()),
                        );
                        if asked.gzip {
                            h.insert(
                                header::CONTENT_ENCODING,
                                header::HeaderValue::from_static("gzip"),
                            );
                        }
                        r
                    }
                    Err(why) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{why}\n")),
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

    /// The exposition as `asked`: the render in flight in that form and encoding, or a
    /// new one. A render runs on a task of its own, so a scraper that goes away leaves it
    /// to the others; at most one per form and encoding runs at a time, however many
    /// scrape.
    async fn render(self: &Arc<Self>, asked: Asked) -> Result<Bytes, String> {
        let slot = asked.slot();
        let mut rx = {
            let mut slots = crate::sync::lock(&self.renders.0);
            match &slots[slot] {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = tokio::sync::watch::channel(None);
                    slots[slot] = Some(rx.clone());
                    let me = self.clone();
                    tokio::spawn(async move {
                        let e = me.endpoints.clone();
                        let done = tokio::task::spawn_blocking(move || exposition(&*e, asked))
                            .await
                            .unwrap_or_else(|_| Err("metrics rendering failed".to_owned()));
                        // Scrapes from now on render anew; those waiting take this one.
                        crate::sync::lock(&me.renders.0)[slot] = None;
                        let _ = tx.send(Some(done));
                    });
                    rx
                }
            }
        };
        match rx.wait_for(Option::is_some).await {
            Ok(done) => done.clone().unwrap_or_else(|| Err("metrics rendering failed".to_owned())),
            Err(_) => Err("metrics rendering failed".to_owned()),
        }
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
        let probes = Arc::new(Semaphore::new(PROBE_CONNECTIONS));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => { warn!(error = %e, "accept failed"); continue; }
                },
                () = &mut shutdown => break,
            };
            let (permit, probes_only) = match limit.clone().try_acquire_owned() {
                Ok(p) => (p, false),
                Err(_) => match probes.clone().try_acquire_owned() {
                    Ok(p) => (p, true),
                    Err(_) => {
                        debug!(%peer, "every connection slot is taken: closed");
                        continue;
                    }
                },
            };
            let server = self.clone();
            let mut stop = stop_rx.clone();
            conns.spawn(async move {
                let _permit = permit;
                let svc = service_fn(move |req| server.clone().handle(req, peer, probes_only));
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(MAX_HEAD_BYTES)
                    .serve_connection(TokioIo::new(Timed::new(stream, WRITE_TIMEOUT)), svc);
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
mod tests;
