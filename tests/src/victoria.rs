//! A real VictoriaMetrics (Debian's `victoria-metrics` package, single node) for the
//! tests: its own storage in a temporary directory, on a free loopback port, answering
//! Prometheus' query API. Two ways in: it scrapes one target itself every second
//! ([`VictoriaMetrics::start`] with a target, `-promscrape.config`), or it takes what a
//! Prometheus remote-writes to [`VictoriaMetrics::write_url`]
//! ([`Prometheus::start_remote_writing`](crate::prometheus::Prometheus::start_remote_writing)).
//! Tuned so a sample is queryable as soon as it is stored: no latency offset, no response
//! cache. [`Vmalert`] (the package's `vmalert`) evaluates a rule file against it every
//! second, writing the recorded series back into it and sending its alerts to an
//! [`Alertmanager`]. Each is stopped, and its directory removed, on drop.
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    TempDir,
    alertmanager::Alertmanager,
    free_port, http_get,
    prometheus::{http, instant_query},
    terminate,
};

/// The package's binaries.
pub const BIN: &str = "victoria-metrics";
pub const VMALERT: &str = "vmalert";
/// How long either may take to answer `/health`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the waits poll.
const POLL: Duration = Duration::from_millis(250);

pub struct VictoriaMetrics {
    child: Child,
    /// Its HTTP port on 127.0.0.1 (query API, `/api/v1/write`).
    pub port: u16,
    dir: TempDir,
}

/// `-promscrape.config`: `target` (a port on 127.0.0.1) scraped every second as job
/// `cellwatch`, the job the shipped rules and dashboards name.
pub fn scrape_config(target: u16) -> String {
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: \
         cellwatch\n    static_configs:\n      - targets: [\"127.0.0.1:{target}\"]\n"
    )
}

/// The command line: storage and port; data kept a day; every query reads the storage
/// up to now (`-search.latencyOffset=0s`, which is 30 s by default, and no response
/// cache); no deduplication, so each sample stored is one the source sent. With a
/// scrape config, its own scraping too.
pub fn args(data: &Path, port: u16, scrape: Option<&Path>) -> Vec<String> {
    let mut args = vec![
        format!("-storageDataPath={}", data.display()),
        format!("-httpListenAddr=127.0.0.1:{port}"),
        "-retentionPeriod=1d".to_owned(),
        "-search.latencyOffset=0s".to_owned(),
        "-search.disableCache".to_owned(),
    ];
    if let Some(config) = scrape {
        args.push(format!("-promscrape.config={}", config.display()));
    }
    args
}

impl VictoriaMetrics {
    /// Starts one and waits until it answers `/health`; with a `target` (a port on
    /// 127.0.0.1) it scrapes it every second as job `cellwatch`. Panics (never skips)
    /// when the package is missing, naming `cargo xtask setup`.
    pub fn start(target: Option<u16>) -> Self {
        let dir = TempDir::new("victoria");
        let scrape = target.map(|t| dir.write("scrape.yml", &scrape_config(t)));
        let port = free_port();
        let log = std::fs::File::create(dir.0.join("victoria-metrics.log")).expect("log file");
        let child = Command::new(BIN)
            .args(args(&dir.0.join("data"), port, scrape.as_deref()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{BIN} is needed (Debian's victoria-metrics: run `cargo xtask setup`): {e}")
            });
        let mut vm = Self { child, port, dir };
        await_health(&mut vm.child, port, BIN, || vm_log(&vm.dir, "victoria-metrics.log"));
        vm
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its Prometheus remote-write endpoint.
    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.url())
    }

    /// Its log (stderr).
    pub fn log(&self) -> String {
        vm_log(&self.dir, "victoria-metrics.log")
    }

    /// An instant query at now: (accepted: HTTP 200 and status success, result).
    pub fn query(&self, q: &str) -> (bool, Vec<Value>) {
        instant_query(self.port, q)
    }

    /// An instant query's error, as VictoriaMetrics words it (empty when accepted).
    pub fn query_error(&self, q: &str) -> String {
        let form = format!("query={}", crate::prometheus::encode(q));
        let (status, body) = http(self.port, "POST", "/api/v1/query", &form).expect("query");
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if status == 200 && v["status"] == "success" {
            return String::new();
        }
        format!("HTTP {status}: {}", v["error"].as_str().unwrap_or(&body))
    }

    /// Waits until `ok`, polling; fails the test with its log after `limit`.
    pub fn wait_for(&self, what: &str, limit: Duration, ok: impl FnMut() -> bool) {
        wait(what, limit, ok, || format!("victoria-metrics:\n{}", self.log()));
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// vmalert evaluating a rule file against a [`VictoriaMetrics`] every second.
pub struct Vmalert {
    child: Child,
    /// Its HTTP port on 127.0.0.1 (`/api/v1/alerts`, `/api/v1/rules`).
    pub port: u16,
    dir: TempDir,
}

impl Vmalert {
    /// Starts one reading from and writing its recorded series (flushed every second)
    /// into `vm`, evaluating `rules` every second, notifying `am`; waits until it answers
    /// `/health`. Panics (never skips) when the package is missing, or it refuses the rules.
    pub fn start(vm: &VictoriaMetrics, rules: &Path, am: &Alertmanager) -> Self {
        let dir = TempDir::new("vmalert");
        let port = free_port();
        let log = std::fs::File::create(dir.0.join("vmalert.log")).expect("log file");
        let child = Command::new(VMALERT)
            .arg(format!("-datasource.url={}", vm.url()))
            .arg(format!("-remoteWrite.url={}", vm.url()))
            .arg("-remoteWrite.flushInterval=1s")
            .arg(format!("-rule={}", rules.display()))
            .arg("-evaluationInterval=1s")
            .arg(format!("-notifier.url={}", am.url()))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{VMALERT} is needed (Debian's victoria-metrics: run `cargo xtask setup`): {e}"
                )
            });
        let mut va = Self { child, port, dir };
        await_health(&mut va.child, port, VMALERT, || vm_log(&va.dir, "vmalert.log"));
        va
    }

    pub fn log(&self) -> String {
        vm_log(&self.dir, "vmalert.log")
    }

    /// The alerts pending or firing now (`GET /api/v1/alerts`): each with `name`,
    /// `state`, `labels`.
    pub fn alerts(&self) -> Vec<Value> {
        self.get("/api/v1/alerts")["data"]["alerts"].as_array().cloned().unwrap_or_default()
    }

    /// Every rule of every group (`GET /api/v1/rules`): each with `name`, `type`
    /// (`alerting` or `recording`), `health`, `lastError`, `lastEvaluation`.
    pub fn rules(&self) -> Vec<Value> {
        let v = self.get("/api/v1/rules");
        let groups = v["data"]["groups"].as_array().cloned().unwrap_or_default();
        groups.iter().flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default()).collect()
    }

    fn get(&self, path: &str) -> Value {
        let (status, body) = http_get(self.port, path).expect("vmalert API");
        assert_eq!(status, 200, "vmalert {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("vmalert {path}: {e}: {body}"))
    }

    /// Waits until `ok`, polling; fails the test with its log after `limit`.
    pub fn wait_for(&self, what: &str, limit: Duration, ok: impl FnMut() -> bool) {
        wait(what, limit, ok, || format!("vmalert:\n{}", self.log()));
    }
}

impl Drop for Vmalert {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

fn vm_log(dir: &TempDir, name: &str) -> String {
    std::fs::read_to_string(dir.0.join(name)).unwrap_or_default()
}

/// Waits until `/health` on `port` answers 200; panics with `log()` when the process
/// exits first or after [`READY_TIMEOUT`].
fn await_health(child: &mut Child, port: u16, what: &str, log: impl Fn() -> String) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if http_get(port, "/health").is_ok_and(|(s, _)| s == 200) {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) before it was ready:\n{}", log());
        }
        assert!(Instant::now() < deadline, "{what}: not ready in {READY_TIMEOUT:?}:\n{}", log());
        thread::sleep(POLL);
    }
}

fn wait(what: &str, limit: Duration, mut ok: impl FnMut() -> bool, log: impl Fn() -> String) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "not {what} in {limit:?}; {}", log());
        thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests;
