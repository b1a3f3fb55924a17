//! A real Prometheus (Debian's `prometheus` package) for the tests: its own config and
//! storage in a temporary directory, scraping one target every second and evaluating the
//! shipped rule file (or another, e.g. the shipped one with shorter windows:
//! [`shipped_rules_with`]) every second, optionally on a history written into its storage
//! first (`promtool tsdb create-blocks-from openmetrics`), optionally sending its alerts
//! to an [`Alertmanager`] of the harness ([`Prometheus::start_alerting`]), optionally
//! remote-writing all it stores to another store ([`Prometheus::start_remote_writing`]),
//! optionally with native histograms (`PromOpts::native_histograms`).
//! Stopped and removed on drop.
use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{TempDir, alertmanager::Alertmanager, free_port};

/// What a Prometheus runs with.
#[derive(Default)]
pub struct PromOpts<'a> {
    /// The port on 127.0.0.1 it scrapes as job `cellwatch`; none: it scrapes nothing.
    pub target: Option<u16>,
    /// The rule file; the shipped one (`deploy/prometheus/cellwatch-rules.yaml`) if none.
    pub rules: Option<&'a Path>,
    /// OpenMetrics text (with timestamps, ending `# EOF`) written into the storage as
    /// past blocks before it starts.
    pub history: Option<&'a str>,
    /// Run with `--enable-feature=native-histograms`: it then asks its targets for the
    /// protobuf exposition and stores their histograms as native ones.
    pub native_histograms: bool,
}

pub struct Prometheus {
    child: Child,
    pub port: u16,
    dir: TempDir,
}

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The shipped rule file.
pub fn shipped_rules() -> PathBuf {
    repo().join("deploy/prometheus/cellwatch-rules.yaml")
}

/// The shipped rule file with each `(from, to)` of `edits` replaced (every occurrence),
/// written into `dir` as `rules.yaml`: e.g. `("[5m]", "[20s]")` and `("for: 5m", "for: 5s")`
/// for an alert a test can see fire and resolve. Panics when a `from` does not occur (a
/// rule changed under the test), or promtool rejects the result.
pub fn shipped_rules_with(dir: &TempDir, edits: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(shipped_rules()).expect("the shipped rule file");
    for (from, to) in edits {
        assert!(text.contains(from), "the shipped rules have no {from:?} to replace");
        text = text.replace(from, to);
    }
    let path = dir.write("rules.yaml", &text);
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("promtool is needed (run `cargo xtask setup`): {e}"));
    assert!(
        out.status.success(),
        "promtool rejects the edited rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

impl Prometheus {
    /// Starts one and waits until it is ready; its alerts stay in it.
    pub fn start(opts: PromOpts<'_>) -> Self {
        Self::launch(&opts, None, None)
    }

    /// As [`start`](Self::start), sending its alerts (every second's evaluation, the
    /// resolved ones too) to `am`.
    pub fn start_alerting(opts: PromOpts<'_>, am: &Alertmanager) -> Self {
        Self::launch(&opts, Some(am), None)
    }

    /// As [`start`](Self::start), sending every sample it stores (scraped and recorded)
    /// to the remote-write endpoint `url` (e.g. VictoriaMetrics' `/api/v1/write`), in
    /// batches at least every second.
    pub fn start_remote_writing(opts: PromOpts<'_>, url: &str) -> Self {
        Self::launch(&opts, None, Some(url))
    }

    fn launch(opts: &PromOpts<'_>, am: Option<&Alertmanager>, remote_write: Option<&str>) -> Self {
        let dir = TempDir::new("prometheus");
        let rules = opts.rules.map_or_else(shipped_rules, Path::to_path_buf);
        let mut config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n",
            rules.canonicalize().expect("rule file").display()
        );
        if let Some(t) = opts.target {
            config.push_str(&format!(
                "scrape_configs:\n  - job_name: cellwatch\n    static_configs:\n      - targets: \
                 [\"127.0.0.1:{t}\"]\n"
            ));
        }
        if let Some(am) = am {
            config.push_str(&format!(
                "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: \
                 [\"127.0.0.1:{}\"]\n",
                am.port
            ));
        }
        if let Some(url) = remote_write {
            config.push_str(&format!(
                "remote_write:\n  - url: \"{url}\"\n    queue_config:\n      batch_send_deadline: 1s\n"
            ));
        }
        let config = dir.write("prometheus.yml", &config);
        let data = dir.0.join("data");
        if let Some(history) = opts.history {
            let input = dir.write("history.om", history);
            let out = Command::new("promtool")
                .args(["tsdb", "create-blocks-from", "openmetrics"])
                .arg(&input)
                .arg(&data)
                .output()
                .unwrap_or_else(|e| panic!("promtool is needed (run `cargo xtask setup`): {e}"));
            assert!(
                out.status.success(),
                "promtool could not write the history: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let port = free_port();
        let log = std::fs::File::create(dir.0.join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(opts.native_histograms.then_some("--enable-feature=native-histograms"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("prometheus is needed (run `cargo xtask setup`): {e}"));
        let p = Self { child, port, dir };
        p.wait_for("ready", Duration::from_secs(30), || {
            http(p.port, "GET", "/-/ready", "").is_ok_and(|(s, _)| s == 200)
        });
        p
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("prometheus.log")).unwrap_or_default()
    }

    /// Waits until `ok`, polling; fails the test with Prometheus' log after `limit`.
    pub fn wait_for(&self, what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !ok() {
            assert!(
                Instant::now() < deadline,
                "prometheus: not {what} in {limit:?}:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// An instant query: (accepted, result).
    pub fn query(&self, q: &str) -> (bool, Vec<Value>) {
        instant_query(self.port, q)
    }

    /// The alerts pending or firing now.
    pub fn alerts(&self) -> Vec<Value> {
        let (_, body) = http(self.port, "GET", "/api/v1/alerts", "").expect("alerts");
        let v: Value = serde_json::from_str(&body).expect("alerts JSON");
        v["data"]["alerts"].as_array().cloned().unwrap_or_default()
    }

    /// The firing alerts named `name`.
    pub fn firing(&self, name: &str) -> Vec<Value> {
        self.alerts()
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == name && a["state"] == "firing")
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An instant query (`POST /api/v1/query`) of the Prometheus query API on loopback `port`:
/// (accepted: HTTP 200 and status success, result).
pub fn instant_query(port: u16, q: &str) -> (bool, Vec<Value>) {
    let (status, body) =
        http(port, "POST", "/api/v1/query", &format!("query={}", encode(q))).expect("query");
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let accepted = status == 200 && v["status"] == "success";
    (accepted, v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// A minimal HTTP/1.0 request on loopback: (status, body).
pub fn http(port: u16, method: &str, path: &str, form: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{form}",
        form.len()
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}

/// A query string value, percent-encoded.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
