//! A real Alertmanager (Debian's `prometheus-alertmanager` package) for the tests: its own
//! config and storage in a temporary directory, on a free loopback port, alone (no
//! cluster). It routes every alert, each label set a group of its own (group_wait and
//! group_interval 1 s, repeat_interval 1 h), to a webhook receiver with `send_resolved`
//! that the harness serves itself on loopback, keeping each notification's JSON body.
//! A Prometheus started with [`Prometheus::start_alerting`](crate::prometheus::Prometheus::start_alerting)
//! sends it its alerts. Stopped, and its directory removed, on drop.
use std::{
    io::{self, BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{TempDir, free_port, http_get};

/// The package's binary.
pub const BIN: &str = "/usr/bin/prometheus-alertmanager";
/// How long Alertmanager may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the waits poll.
const POLL: Duration = Duration::from_millis(100);

pub struct Alertmanager {
    child: Child,
    /// Its API's port on 127.0.0.1.
    pub port: u16,
    webhook: Webhook,
    dir: TempDir,
}

impl Alertmanager {
    /// Starts one and waits until it is ready (`GET /-/ready`); panics (never skips)
    /// when the package is missing or it does not get ready, with its log.
    pub fn start() -> Self {
        let webhook = Webhook::start();
        let dir = TempDir::new("alertmanager");
        let config = dir.write("alertmanager.yml", &config(webhook.port));
        let data = dir.0.join("data");
        let port = free_port();
        let log = std::fs::File::create(dir.0.join("alertmanager.log")).expect("log file");
        let child = Command::new(BIN)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // Alone: no gossip port, which tests side by side would fight over.
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{BIN} is needed (Debian's prometheus-alertmanager: run `cargo xtask setup`): {e}")
            });
        let mut am = Self { child, port, webhook, dir };
        am.await_ready();
        am
    }

    fn await_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        for _ in 0..READY_TIMEOUT.as_millis() / POLL.as_millis() + 1 {
            if http_get(self.port, "/-/ready").is_ok_and(|(s, _)| s == 200) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("alertmanager exited ({status}) before it was ready:\n{}", self.log());
            }
            if Instant::now() >= deadline {
                break;
            }
            thread::sleep(POLL);
        }
        panic!("alertmanager: not ready in {READY_TIMEOUT:?}:\n{}", self.log());
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its log (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("alertmanager.log")).unwrap_or_default()
    }

    /// The alerts it holds now (`GET /api/v2/alerts`), as its API gives them.
    pub fn alerts(&self) -> Vec<Value> {
        let (_, body) = http_get(self.port, "/api/v2/alerts").expect("alertmanager alerts");
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// Every notification the webhook received so far, in order: Alertmanager's webhook
    /// JSON (`status`, `receiver`, `groupLabels`, `alerts`: each with `status`, `labels`,
    /// `annotations`, `startsAt`, `endsAt`, ...).
    pub fn notifications(&self) -> Vec<Value> {
        self.webhook.bodies.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits (polling, at most `limit`) for a notification at index `from` or later
    /// (`notifications()`'s) that `pred` accepts; its index and body. Panics after
    /// `limit` with what arrived and Alertmanager's log.
    pub fn wait_for_notification(
        &self,
        from: usize,
        limit: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> (usize, Value) {
        let deadline = Instant::now() + limit;
        for _ in 0..limit.as_millis() / POLL.as_millis() + 1 {
            let got = self.notifications();
            if let Some((i, n)) = got.iter().enumerate().skip(from).find(|(_, n)| pred(n)) {
                return (i, n.clone());
            }
            if Instant::now() >= deadline {
                break;
            }
            thread::sleep(POLL);
        }
        panic!(
            "alertmanager: no matching notification (from #{from}) in {limit:?}; received:\n{}\n\
             its alerts now: {:?}\nits log:\n{}",
            self.notifications().iter().map(Value::to_string).collect::<Vec<_>>().join("\n"),
            self.alerts(),
            self.log()
        );
    }

    /// Waits for an alert named `name` with `status` ("firing" or "resolved") in a
    /// notification at index `from` or later; the notification's index and the alert.
    pub fn wait_for_alert(
        &self,
        from: usize,
        name: &str,
        status: &str,
        limit: Duration,
    ) -> (usize, Value) {
        let (i, n) =
            self.wait_for_notification(from, limit, |n| !alerts_in(n, name, status).is_empty());
        let alert = alerts_in(&n, name, status)[0].clone();
        (i, alert)
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut exited = false;
        while !exited && Instant::now() < deadline {
            exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if !exited {
                thread::sleep(Duration::from_millis(50));
            }
        }
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.webhook.stop();
    }
}

/// The alerts of a webhook notification named `name` with `status`.
pub fn alerts_in<'a>(notification: &'a Value, name: &str, status: &str) -> Vec<&'a Value> {
    notification["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["labels"]["alertname"] == name && a["status"] == status)
        .collect()
}

/// The config: everything to the webhook, each alert alone, quickly, resolved included.
fn config(webhook: u16) -> String {
    format!(
        "route:\n  receiver: webhook\n  group_by: ['...']\n  group_wait: 1s\n  \
         group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: webhook\n    \
         webhook_configs:\n      - url: http://127.0.0.1:{webhook}/\n        \
         send_resolved: true\n"
    )
}

/// The webhook receiver: a loopback HTTP server on a thread of its own, answering each
/// POST of a JSON body with 200 (and anything else with 400), one request a connection.
struct Webhook {
    port: u16,
    bodies: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The webhook serves at most this many requests, for at most this long: far more than
/// a test needs.
const MAX_REQUESTS: usize = 10_000;
const MAX_LIFE: Duration = Duration::from_secs(3600);
/// The most a request may hold, headers and body; and its body.
const MAX_REQUEST: u64 = 4 << 20;
const MAX_BODY: usize = 4 << 20;

impl Webhook {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("the webhook's listener");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let port = listener.local_addr().expect("the webhook's address").port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (bodies, stop) = (Arc::clone(&bodies), Arc::clone(&stop));
            thread::spawn(move || serve(&listener, &bodies, &stop))
        };
        Self { port, bodies, stop, thread: Some(thread) }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: &TcpListener, bodies: &Mutex<Vec<Value>>, stop: &AtomicBool) {
    let deadline = Instant::now() + MAX_LIFE;
    let mut served = 0;
    while served < MAX_REQUESTS && !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => {
                served += 1;
                answer(stream, bodies);
            }
            // Nothing to accept (or a connection gone before it was): look again soon.
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Reads one request, keeps its body when it is a JSON POST, and answers.
fn answer(stream: TcpStream, bodies: &Mutex<Vec<Value>>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let body = read_request(&mut BufReader::new((&stream).take(MAX_REQUEST)));
    let json = body.ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let status = if json.is_some() { "200 OK" } else { "400 Bad Request" };
    if let Some(v) = json {
        bodies.lock().unwrap_or_else(PoisonError::into_inner).push(v);
    }
    let _ = write!(&stream, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = (&stream).flush();
}

/// The most header lines, and body chunks, a request may have.
const MAX_LINES: usize = 200;

/// One HTTP/1.1 POST: its body, by Content-Length or chunked. Anything else is an error.
pub(crate) fn read_request(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut line = String::new();
    r.read_line(&mut line)?;
    if !line.starts_with("POST ") {
        return Err(bad("not a POST"));
    }
    let (mut length, mut chunked) = (None, false);
    for _ in 0..MAX_LINES {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("the headers do not end"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            return match (length, chunked) {
                (_, true) => read_chunks(r),
                (Some(n), false) if n <= MAX_BODY => {
                    let mut body = vec![0; n];
                    r.read_exact(&mut body)?;
                    Ok(body)
                }
                (Some(_), false) => Err(bad("too long")),
                (None, false) => Err(bad("no Content-Length")),
            };
        }
        let Some((name, value)) = header.split_once(':') else { return Err(bad("a bad header")) };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse().map_err(|_| bad("a bad Content-Length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    Err(bad("too many headers"))
}

/// A chunked body: hex sizes, each chunk, until the empty one.
fn read_chunks(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut body = Vec::new();
    let mut line = String::new();
    for _ in 0..MAX_LINES {
        line.clear();
        r.read_line(&mut line)?;
        let size = line.trim_end().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size, 16).map_err(|_| bad("a bad chunk size"))?;
        if body.len() + size > MAX_BODY {
            return Err(bad("too long"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        r.read_exact(&mut crlf)?;
        if size == 0 {
            return Ok(body);
        }
    }
    Err(bad("too many chunks"))
}

#[cfg(test)]
mod tests;
