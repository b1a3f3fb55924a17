//! Harness for the privileged integration tests: start the real `cellwatch` binary,
//! drive bounded loopback TCP traffic, scrape its endpoints, and always clean up.
//! `cargo xtask bench` starts its agents with it too.
//!
//! Every test takes its own 127.x.0.0/16 ranges, from its area's block in [`ranges`], so
//! tests running side by side (each with its own agent) never count each other's
//! connections.
#![deny(unsafe_code)]

pub mod alertmanager;
pub mod churn;
pub mod kubeproxy;
pub mod netns;
pub mod prometheus;
pub mod ranges;
pub mod victoria;

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

/// How long an agent may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often [`Agent::start`] asks `/readyz`.
const READY_POLL: Duration = Duration::from_millis(50);

/// The agent binary under test: `$CELLWATCH_BIN`, else `target/debug/cellwatch`.
/// Panics (never skips) when it is missing.
pub fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CELLWATCH_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/cellwatch");
    assert!(
        p.exists(),
        "the cellwatch binary is not built at {}: run `cargo xtask test` (or `cargo build -p agent`)",
        p.display()
    );
    p
}

/// A unique scratch directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "cellwatch-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A pin directory of the test's own under /sys/fs/bpf, removed on drop: removing the
/// pins detaches what an agent left attached there (as `cellwatch uninstall` does).
pub struct Pins(pub PathBuf);

impl Pins {
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        Self(PathBuf::from(format!(
            "/sys/fs/bpf/cellwatch-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )))
    }

    pub fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }
}

impl Default for Pins {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The agent binary as a container image holds it: a copy carrying file capabilities
/// `caps` (e.g. `cap_bpf,cap_perfmon+ep`), which a process of another user gains at exec.
/// The copy lives in a directory every user may enter.
pub fn with_file_caps(caps: &str) -> (TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("image");
    let bin = dir.0.join("cellwatch");
    std::fs::copy(agent_bin(), &bin).expect("copy the agent binary");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setcap")
        .args([caps, bin.to_str().unwrap()])
        .output()
        .expect("setcap (libcap2-bin; run `cargo xtask setup`)");
    assert!(out.status.success(), "setcap {caps}: {}", String::from_utf8_lossy(&out.stderr));
    (dir, bin)
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

/// The environment variable that makes every agent a test starts do without these
/// optional kernel features (`--without`), so the same tests prove the fallbacks:
/// `cargo xtask test` runs the live, connection-listing, Service and restart areas once
/// more with it set.
pub const WITHOUT_ENV: &str = "CELLWATCH_TEST_WITHOUT";

/// The features forced off for this run of the tests, if any.
pub fn forced_without() -> Option<String> {
    std::env::var(WITHOUT_ENV).ok().filter(|v| !v.trim().is_empty())
}

/// A running agent. Dropping it stops it (SIGTERM, then SIGKILL after 10 s), then
/// removes its pins unless the test gave their directory (`AgentOpts::pins`).
pub struct Agent {
    child: Option<Child>,
    pub port: u16,
    pub dir: TempDir,
    stderr: PathBuf,
    /// When the process was spawned.
    spawned: Instant,
    /// The network namespace the agent runs in (`AgentOpts::netns`).
    netns: Option<String>,
    /// Dropped after the agent stops (fields drop after `Drop::drop`).
    _own_pins: Option<Pins>,
}

/// The options to start an agent with.
#[derive(Default, Clone, Copy)]
pub struct AgentOpts<'a> {
    /// Config YAML; `None` runs on the embedded default.
    pub config: Option<&'a str>,
    /// Commands the agent is run under, e.g. `["unshare", "-m", "sh", "-c", "...; exec \"$0\" \"$@\""]`.
    pub wrapper: &'a [&'a str],
    pub args: &'a [&'a str],
    /// The pin directory, kept by the test across agents; by default the agent gets one
    /// of its own, removed when it is dropped.
    pub pins: Option<&'a Pins>,
    /// The binary to run instead of [`agent_bin`] (e.g. a copy with file capabilities,
    /// or a release build).
    pub bin: Option<&'a Path>,
    /// A network namespace (`ip netns` name) to run the agent in, as a node's agent runs
    /// in the node's: its HTTP endpoints are then reached from inside it.
    pub netns: Option<&'a str>,
    /// Listen on every address (`0.0.0.0`, as the DaemonSet does) rather than loopback.
    pub listen_all: bool,
}

impl Agent {
    /// Starts an agent and waits until `/readyz` answers 200; panics with its stderr if
    /// it exits or does not get ready in time.
    pub fn start(opts: AgentOpts<'_>) -> Self {
        Self::try_start(opts).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Agent::start`], with the failure (its stderr included) returned instead.
    pub fn try_start(opts: AgentOpts<'_>) -> Result<Self, String> {
        let forced = forced_without().filter(|_| !opts.args.contains(&"--without"));
        // The port was free when chosen; another test's socket may take it before the
        // agent binds (ports chosen by the kernel come from one range for everyone):
        // then a new one, a few times.
        let mut tries = 0;
        let a = loop {
            let mut a = Self::launch(opts)?;
            match a.wait_ready(READY_POLL) {
                Ok(_) => break a,
                Err(e) if e.contains("is already in use") && tries < 4 => tries += 1,
                Err(e) => return Err(e),
            }
        };
        // A forced run proves the fallbacks only if the agent really went without.
        if let Some(forced) = forced {
            let m = a.metrics();
            for f in forced.split(',').map(str::trim) {
                if m.get("cellwatch_kernel_feature", &[("feature", f)]) != 0.0 {
                    return Err(format!("{WITHOUT_ENV}={forced}, but the agent reports {f}"));
                }
            }
        }
        Ok(a)
    }

    /// Starts an agent without waiting for it; panics if it cannot be run at all.
    pub fn spawn(opts: AgentOpts<'_>) -> Self {
        Self::launch(opts).unwrap_or_else(|e| panic!("{e}"))
    }

    fn launch(opts: AgentOpts<'_>) -> Result<Self, String> {
        let dir = TempDir::new("agent");
        let host = if opts.listen_all { "0.0.0.0" } else { "127.0.0.1" };
        // Free on the address the agent binds: a port free on 127.0.0.1 may be held on
        // another loopback address by a test's server, which 0.0.0.0 would clash with.
        let port =
            TcpListener::bind((host, 0)).and_then(|l| l.local_addr()).expect("free port").port();
        let listen = format!("{host}:{port}");
        let stderr = dir.0.join("stderr.log");
        let mut argv: Vec<String> = opts.wrapper.iter().map(|s| (*s).to_owned()).collect();
        if let Some(ns) = opts.netns {
            // The network namespace only: the mounts (cgroup2, bpffs) stay the host's.
            argv.extend(["nsenter".to_owned(), format!("--net=/run/netns/{ns}")]);
        }
        argv.push(opts.bin.map_or_else(agent_bin, Path::to_owned).display().to_string());
        argv.extend(["run".into(), "--listen".into(), listen]);
        let own_pins = match (opts.pins, opts.args.contains(&"--bpffs")) {
            (Some(p), _) => {
                argv.extend(["--bpffs".into(), p.path().to_owned()]);
                None
            }
            (None, true) => None,
            (None, false) => {
                let p = Pins::new();
                argv.extend(["--bpffs".into(), p.path().to_owned()]);
                Some(p)
            }
        };
        if let Some(cfg) = opts.config {
            argv.push("--config".into());
            argv.push(dir.write("cells.yaml", cfg).display().to_string());
        }
        argv.extend(opts.args.iter().map(|s| (*s).to_owned()));
        if let Some(forced) = forced_without().filter(|_| !opts.args.contains(&"--without")) {
            argv.extend(["--without".to_owned(), forced]);
        }
        let log = std::fs::File::create(&stderr).map_err(|e| format!("stderr file: {e}"))?;
        let spawned = Instant::now();
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {argv:?}: {e}"))?;
        Ok(Self {
            child: Some(child),
            port,
            dir,
            stderr,
            spawned,
            netns: opts.netns.map(str::to_owned),
            _own_pins: own_pins,
        })
    }

    /// Asks `/readyz` every `every` until it answers 200: the time from spawning the
    /// agent to that answer. Fails, with the agent's stderr, if it exits first or is not
    /// ready within [`READY_TIMEOUT`].
    pub fn wait_ready(&mut self, every: Duration) -> Result<Duration, String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok((200, _)) = self.get("/readyz") {
                return Ok(self.spawned.elapsed());
            }
            if let Some(status) = self.try_wait() {
                self.child = None;
                return Err(format!(
                    "agent exited with {status} before it was ready:\n{}",
                    self.stderr()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!("agent not ready after {READY_TIMEOUT:?}:\n{}", self.stderr()));
            }
            thread::sleep(every);
        }
    }

    /// The config file the agent was started with (when `AgentOpts::config` was given).
    pub fn config_path(&self) -> PathBuf {
        self.dir.0.join("cells.yaml")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends a signal to the agent.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]).status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -{sig} {} failed", self.pid());
    }

    /// Waits for the agent to exit, at most `limit`.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(s) = self.try_wait() {
                self.child = None;
                return Some(s);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILL and wait: a crash, as far as the agent can tell.
    pub fn kill(&mut self) {
        self.signal("KILL");
        assert!(self.wait(Duration::from_secs(10)).is_some(), "agent survived SIGKILL");
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("agent ignored SIGTERM:\n{}", self.stderr()))
    }

    /// A GET of one of the agent's endpoints, from inside its network namespace.
    pub fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        match &self.netns {
            None => http_get(self.port, path),
            Some(ns) => netns::enter(ns, || http_get(self.port, path)),
        }
    }

    /// Scrapes `/metrics`.
    pub fn metrics(&self) -> Metrics {
        let (status, body) = self.get("/metrics").expect("scrape");
        assert_eq!(status, 200, "/metrics answered {status}: {body}");
        Metrics::parse(&body)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(&mut c);
        }
    }
}

/// Stops a child process: SIGTERM, then SIGKILL if it has not exited after 10 s.
pub fn terminate(c: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// Runs the agent binary to completion (for commands that end by themselves).
pub fn cellwatch(wrapper: &[&str], args: &[&str]) -> (ExitStatus, String, String) {
    let mut argv: Vec<String> = wrapper.iter().map(|s| (*s).to_owned()).collect();
    argv.push(agent_bin().display().to_string());
    argv.extend(args.iter().map(|s| (*s).to_owned()));
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A minimal HTTP/1.0 GET on loopback: (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    http_get_at(SocketAddr::from(([127, 0, 0, 1], port)), path)
}

/// [`http_get`] from any address: the status code and the body.
pub fn http_get_at(at: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&at, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// A parsed Prometheus exposition: `name{labels}` -> value, labels sorted by name.
#[derive(Debug, Default)]
pub struct Metrics(pub BTreeMap<String, f64>);

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let samples = agent_core::promtext::parse(text);
        Self(samples.into_iter().map(|s| (key(&s.name, s.labels.iter()), s.value)).collect())
    }

    /// The value of `name` with exactly these labels (0 when absent, as for a counter
    /// not yet created).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let sorted: BTreeMap<&str, &str> = labels.iter().copied().collect();
        self.0.get(&key(name, sorted.iter())).copied().unwrap_or(0.0)
    }

    /// Every series of `name` whose only label is `label`: (its value, the sample).
    pub fn by_label(&self, name: &str, label: &str) -> Vec<(String, f64)> {
        let prefix = format!("{name}{{{label}=\"");
        self.0
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, v)| Some((k[prefix.len()..].strip_suffix("\"}")?.to_owned(), *v)))
            .filter(|(value, _)| !value.contains('"'))
            .collect()
    }
}

/// `name{k="v",...}` with the labels in the order given (sorted by name by the callers).
fn key<K: AsRef<str>, V: AsRef<str>>(name: &str, labels: impl Iterator<Item = (K, V)>) -> String {
    let l: Vec<String> =
        labels.map(|(k, v)| format!("{}=\"{}\"", k.as_ref(), v.as_ref())).collect();
    if l.is_empty() { name.to_owned() } else { format!("{name}{{{}}}", l.join(",")) }
}

/// The ids of the BPF programs process `pid` holds open (from its fdinfo).
pub fn prog_ids_of(pid: u32) -> Vec<u32> {
    bpf_ids_of(pid, "prog_id:")
}

/// The ids of the BPF maps process `pid` holds open (from its fdinfo).
pub fn map_ids_of(pid: u32) -> Vec<u32> {
    bpf_ids_of(pid, "map_id:")
}

fn bpf_ids_of(pid: u32, key: &str) -> Vec<u32> {
    let mut ids = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("fdinfo").flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        ids.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix(key))
                .filter_map(|v| v.trim().parse::<u32>().ok()),
        );
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Asserts that none of these programs is loaded any more. The kernel frees a program
/// after an RCU grace period once its last link and fd are gone, so this waits up to
/// 5 s for it.
pub fn assert_unloaded(ids: &[u32], after: &str) {
    let loaded = |id: &u32| {
        let out = Command::new("bpftool").args(["prog", "show", "id", &id.to_string()]).output();
        out.expect("bpftool (run `cargo xtask setup`)").status.success()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left: Vec<u32> = ids.to_vec();
    while !left.is_empty() && Instant::now() < deadline {
        left.retain(loaded);
        thread::sleep(Duration::from_millis(50));
    }
    assert!(left.is_empty(), "programs {left:?} still loaded 5 s after {after}");
}

/// The cgroup v2 root, as the agent finds it.
pub fn cgroup2_root() -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let roots: Vec<&str> = mounts
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("cgroup2"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    roots
        .iter()
        .find(|r| **r == "/sys/fs/cgroup")
        .or(roots.first())
        .expect("a cgroup2 mount")
        .to_string()
}

/// Scrapes until `f` holds or 10 s pass.
pub fn scrape_until(agent: &Agent, f: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = agent.metrics();
        if f(&m) || Instant::now() > deadline {
            return m;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn json(agent: &Agent, path: &str) -> serde_json::Value {
    let (status, body) = agent.get(path).unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// A loopback server that, for each of `n` connections, reads `req` bytes and answers
/// `resp` bytes, then closes. Bounded: it stops after `n` connections or `limit`.
pub struct Server {
    pub addr: SocketAddr,
    handle: Option<thread::JoinHandle<usize>>,
}

impl Server {
    pub fn start(ip: IpAddr, n: usize, req: usize, resp: usize) -> Self {
        Self::start_on(SocketAddr::new(ip, 0), n, req, resp)
    }

    /// [`Server::start`] on a given port (0: one the kernel picks).
    pub fn start_on(at: SocketAddr, n: usize, req: usize, resp: usize) -> Self {
        let l = TcpListener::bind(at).unwrap_or_else(|e| panic!("bind {at}: {e}"));
        let addr = l.local_addr().expect("local addr");
        l.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + Duration::from_secs(60);
        let handle = thread::spawn(move || {
            let mut served = 0;
            while served < n && Instant::now() < deadline {
                match l.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).ok();
                        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
                        let mut buf = vec![0u8; req];
                        if s.read_exact(&mut buf).is_ok() {
                            let _ = s.write_all(&vec![b'r'; resp]);
                            // Wait for the client's close so the client closes first.
                            let _ = s.read(&mut [0u8; 1]);
                        }
                        served += 1;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) => break,
                }
            }
            served
        });
        Self { addr, handle: Some(handle) }
    }

    /// Waits for the server thread; returns how many connections it served.
    pub fn join(mut self) -> usize {
        self.handle.take().map_or(0, |h| h.join().unwrap_or(0))
    }
}

/// A connection that stays open while a test runs: what it moves reaches a store only
/// through the agent's live sweeps. Its server reads until the client closes (or for
/// `read_for` without a byte).
pub struct Open {
    client: TcpStream,
    server: thread::JoinHandle<usize>,
}

/// What [`Open::send_mib`] sends.
pub const MIB: usize = 1 << 20;

impl Open {
    /// Connects from `client` to a listener of its own on `server`.
    pub fn start(client: IpAddr, server: IpAddr, read_for: Duration) -> Self {
        let l = TcpListener::bind((server, 0)).expect("the open connection's listener");
        let client = connect_from(client, l.local_addr().expect("its address"))
            .expect("the open connection");
        let (mut s, _) = l.accept().expect("the open connection's server side");
        let server = thread::spawn(move || {
            s.set_read_timeout(Some(read_for)).expect("a read timeout");
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0;
            while let Ok(n @ 1..) = s.read(&mut buf) {
                got += n;
            }
            got
        });
        Self { client, server }
    }

    pub fn send_mib(&mut self) {
        self.client.write_all(&vec![b'o'; MIB]).expect("send on the open connection");
    }

    /// Closes it; the bytes the server read.
    pub fn close(self) -> usize {
        drop(self.client);
        self.server.join().unwrap_or(0)
    }
}

/// `n` sequential client connections from `from` (port chosen by the kernel) to `to`:
/// send `req` bytes, read `resp` bytes, close. Returns how many completed.
pub fn clients(from: IpAddr, to: SocketAddr, n: usize, req: usize, resp: usize) -> usize {
    let mut done = 0;
    for _ in 0..n {
        let Ok(mut s) = connect_from(from, to) else { continue };
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        if s.write_all(&vec![b'q'; req]).is_err() {
            continue;
        }
        let mut buf = vec![0u8; resp];
        if s.read_exact(&mut buf).is_ok() {
            done += 1;
        }
    }
    done
}

/// Connects from a chosen local address (std cannot bind before connect).
pub fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let domain = if to.is_ipv6() { socket2::Domain::IPV6 } else { socket2::Domain::IPV4 };
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    s.bind(&SocketAddr::new(from, 0).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(5))?;
    Ok(s.into())
}

/// A small deterministic PRNG (xorshift64*), so a failing property test can be replayed
/// from the seed it prints.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `$CELLWATCH_SEED` when set, else from the clock; prints the seed.
    pub fn from_env(test: &str) -> Self {
        let seed = std::env::var("CELLWATCH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    // The clock's low 64 bits of nanoseconds: any seed will do.
                    .map_or(1, |d| u64::try_from(d.as_nanos() & u128::from(u64::MAX)).unwrap_or(1))
            });
        eprintln!("{test}: CELLWATCH_SEED={seed}");
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `0..n`, as a byte.
    pub fn byte(&mut self, n: u8) -> u8 {
        u8::try_from(self.below(u64::from(n))).expect("below a byte's bound")
    }

    /// Uniform in `0..n`, as an index.
    pub fn index(&mut self, n: usize) -> usize {
        usize::try_from(self.below(n as u64)).expect("below an index's bound")
    }

    /// Uniform in `0..n`, as a u32.
    pub fn small(&mut self, n: u32) -> u32 {
        u32::try_from(self.below(u64::from(n))).expect("below a u32's bound")
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }
}

/// Writes `text` to `path` atomically (a temp file renamed over it), as config tools do.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write temp config");
    std::fs::rename(&tmp, path).expect("rename config");
}

/// Waits until `cellwatch_config_reloads_total{result}` reaches `n`; panics after 10 s.
pub fn await_reloads(agent: &Agent, result: &str, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = agent.metrics().get("cellwatch_config_reloads_total", &[("result", result)]);
        if got >= n {
            assert_eq!(got, n, "more {result} reloads than expected");
            return;
        }
        assert!(Instant::now() < deadline, "reloads {result}: {got}, want {n}\n{}", agent.stderr());
        thread::sleep(Duration::from_millis(10));
    }
}

/// `dot -Tsvg` of a graph (Debian's graphviz); fails the test if it cannot draw it.
pub fn dot_to_svg(dot: &str) -> String {
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("graphviz's dot is needed (run `cargo xtask setup`): {e}"));
    child.stdin.take().expect("stdin").write_all(dot.as_bytes()).expect("write the graph");
    let out = child.wait_with_output().expect("dot's output");
    assert!(
        out.status.success(),
        "dot refused the graph: {}\n{dot}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("SVG is text")
}

/// `tcpi_rtt` (µs, the kernel's smoothed RTT) of the TCP socket bound to `local` in the
/// caller's network namespace, from `ss`'s view of it: the tests have no unsafe code, so
/// they read a socket's tcp_info through the same netlink the agent uses.
pub fn srtt_us(local: SocketAddr) -> u32 {
    let out = Command::new("ss")
        .args(["-tin", "src", &local.to_string()])
        .output()
        .expect("ss (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    let rtt = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rtt:"))
        .unwrap_or_else(|| panic!("no rtt for {local} in ss's output: {text}"));
    let ms: f64 = rtt.split('/').next().unwrap().parse().unwrap();
    let us = (ms * 1000.0).round();
    assert!((0.0..1e9).contains(&us), "an RTT of {ms} ms");
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "checked above")]
    let us = us as u32;
    us
}
