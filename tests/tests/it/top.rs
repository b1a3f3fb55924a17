//! `cellwatch top`: `--once` prints exact rows after known traffic; a dead URL is one
//! sentence and exit 1; the live view runs in a real terminal (tmux), shows the numbers
//! of the traffic the test makes, obeys its keys, follows an agent that restarts, and
//! gives the terminal back when it quits. [`Tmux`] is shared with the demo's test.
//!
//! The area's tests share the two cells of its block (127.246 and 127.247), so they take
//! turns ([`turn`]): two agents on the same cells would count each other's traffic.
use std::{
    fs::File,
    io::ErrorKind,
    net::{IpAddr, SocketAddr, TcpListener},
    process::{Child, Command, Stdio},
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use cellwatch_tests::{
    Agent, AgentOpts, Metrics, Pins, READY_TIMEOUT, Server, TempDir, agent_bin, cellwatch, clients,
    connect_from, free_port, http_get,
    ranges::{HARNESS, TOP},
};

/// Bytes each exchange sends and answers.
const REQ: usize = 100;
const RESP: usize = 200;
/// Known traffic: in-cell (allowed), cross-cell (a leak), refused (a leak that failed).
const IN_CELL: usize = 12;
const LEAKS: usize = 5;
const REFUSED: usize = 3;

fn turn() -> MutexGuard<'static, ()> {
    static CELLS: Mutex<()> = Mutex::new(());
    CELLS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn cells() -> String {
    format!(
        "cells:\n  - {{ name: top-a, cidrs: [{}] }}\n  - {{ name: top-b, cidrs: [{}] }}\n\
         external: ignore\nignore_cidrs: [{}]\n",
        TOP.cidr(0),
        TOP.cidr(1),
        HARNESS.cidr(0)
    )
}

fn a(host: u8) -> IpAddr {
    TOP.ip(0, 0, host)
}

fn b(host: u8) -> IpAddr {
    TOP.ip(1, 0, host)
}

/// `n` exchanges from `from` to a server at `to`; all of them complete.
fn exchanges(from: IpAddr, to: IpAddr, n: usize) -> SocketAddr {
    let s = Server::start(to, n, REQ, RESP);
    let addr = s.addr;
    assert_eq!(clients(from, addr, n, REQ, RESP), n, "{from} -> {addr}");
    assert_eq!(s.join(), n);
    addr
}

/// `n` connects from `from` to a port of `to` where nothing listens: all refused.
fn refused(from: IpAddr, to: IpAddr, n: usize) -> SocketAddr {
    let closed = TcpListener::bind((to, 0)).and_then(|l| l.local_addr()).expect("a free port");
    for _ in 0..n {
        let e = connect_from(from, closed).expect_err("nothing listens there");
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    }
    closed
}

/// The known traffic: a -> a in-cell, a -> b leaks, b -> a refused leaks.
fn known_traffic() -> (SocketAddr, SocketAddr) {
    exchanges(a(10), a(1), IN_CELL);
    let leak = exchanges(a(11), b(1), LEAKS);
    let closed = refused(b(10), a(2), REFUSED);
    (leak, closed)
}

/// Scrapes the agent on `port` until `f` holds (at most 10 s); panics otherwise.
fn scrape_until(port: u16, what: &str, f: impl Fn(&Metrics) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = http_get(port, "/metrics").map(|(_, body)| Metrics::parse(&body));
        if m.as_ref().is_ok_and(&f) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} not counted in 10 s: {m:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn pair<'a>(src: &'a str, dst: &'a str, more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut l = vec![("src_cell", src), ("dst_cell", dst), ("direction", "egress")];
    l.extend_from_slice(more);
    l
}

/// Waits until the agent counted `in_cell`, `leaks` and `refused` connections and
/// saw every one that opened close.
fn counted(port: u16, in_cell: usize, leaks: usize, refused: usize) {
    scrape_until(port, "the test's traffic", |m| {
        let aa = pair("top-a", "top-a", &[("verdict", "allowed")]);
        let ab = pair("top-a", "top-b", &[("verdict", "violation")]);
        let opened = |l: &[(&str, &str)]| m.get("cellwatch_connections_opened_total", l);
        let closed = |l: &[(&str, &str)]| m.get("cellwatch_connections_closed_total", l);
        opened(&aa) == in_cell as f64
            && closed(&aa) == in_cell as f64
            && opened(&ab) == leaks as f64
            && closed(&ab) == leaks as f64
            && m.get("cellwatch_boundary_violations_total", &pair("top-b", "top-a", &[]))
                == refused as f64
    });
}

/// The words of the table row `src dst ...` on a screen: the cells, then OPENED,
/// OPENED/S, ACTIVE, VIOLATIONS, VIOL/S, BYTES/S (a number and a unit), CONNECT, RTT.
fn row(screen: &str, src: &str, dst: &str) -> Option<Vec<String>> {
    screen.lines().find_map(|l| {
        let w: Vec<String> = l.split_whitespace().map(str::to_owned).collect();
        (w.len() >= 11 && w[0] == src && w[1] == dst).then_some(w)
    })
}

/// The order of the pairs in the table on a screen.
fn order(screen: &str) -> Vec<String> {
    screen
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() >= 11 && w[0].starts_with("top-") && w[1].starts_with("top-"))
                .then(|| format!("{}>{}", w[0], w[1]))
        })
        .collect()
}

/// BYTES/S as bytes per second (`512 B`, `2.9 KiB`).
fn bytes(number: &str, unit: &str) -> f64 {
    let n: f64 = number.parse().expect("a number");
    n * match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        u => panic!("unit {u}"),
    }
}

#[test]
fn once_prints_exact_rows_after_known_traffic() {
    let _turn = turn();
    let agent = Agent::start(AgentOpts { config: Some(&cells()), ..AgentOpts::default() });
    let (leak, closed) = known_traffic();
    counted(agent.port, IN_CELL, LEAKS, REFUSED);
    let url = format!("http://127.0.0.1:{}", agent.port);
    let top = |more: &[&str]| {
        let mut args = vec!["top", "--once", "--url", url.as_str()];
        args.extend_from_slice(more);
        let (status, out, err) = cellwatch(&[], &args);
        assert!(status.success(), "top {more:?} exited with {status}: {err}\n{out}");
        assert!(err.is_empty(), "{err}");
        out
    };

    let out = top(&[]);
    // Nothing moved during the interval: every rate is exactly zero.
    let cols = |src, dst| row(&out, src, dst).unwrap_or_else(|| panic!("no {src} {dst}:\n{out}"));
    let aa = cols("top-a", "top-a");
    assert_eq!(
        aa[2..9],
        [
            IN_CELL.to_string(),
            "0.0".into(),
            "0".into(),
            "0".into(),
            "0.0".into(),
            "0".into(),
            "B".into()
        ],
        "{out}"
    );
    let ab = cols("top-a", "top-b");
    assert_eq!(
        ab[2..9],
        [
            LEAKS.to_string(),
            "0.0".into(),
            "0".into(),
            LEAKS.to_string(),
            "0.0".into(),
            "0".into(),
            "B".into()
        ],
        "{out}"
    );
    let ba = cols("top-b", "top-a");
    assert_eq!(
        ba[2..],
        ["0", "0.0", "0", &REFUSED.to_string(), "0.0", "0", "B", "-", "-"],
        "{out}"
    );
    // Latency and RTT were measured before the interval: since start, in parentheses.
    for q in [&aa[9], &aa[10], &ab[9], &ab[10]] {
        assert!(q.starts_with('(') && q.ends_with(')') && q.contains('/'), "{q}:\n{out}");
    }
    assert_eq!(order(&out), ["top-a>top-a", "top-a>top-b", "top-b>top-a"], "{out}");
    assert!(
        out.starts_with(&format!("cellwatch top  {url}  sort: opened  cell: all  pairs: 3 of 3")),
        "{out}"
    );
    // One violation line per pair, with the process (this test) and both addresses.
    let pid = format!("[{}]", std::process::id());
    for (pair, from, to) in [("top-a -> top-b", a(11), leak), ("top-b -> top-a", b(10), closed)] {
        let lines: Vec<&str> = out.lines().filter(|l| l.contains(pair)).collect();
        assert_eq!(lines.len(), 1, "{pair}:\n{out}");
        assert!(lines[0].contains(&pid), "{pid} in {}", lines[0]);
        assert!(
            lines[0].contains(&format!("{from}:")) && lines[0].ends_with(&format!(" -> {to}")),
            "{}",
            lines[0]
        );
    }

    let out = top(&["--sort", "violations"]);
    assert_eq!(order(&out), ["top-a>top-b", "top-b>top-a", "top-a>top-a"], "{out}");
    let out = top(&["--cell", "top-b", "--sort", "rtt"]);
    assert_eq!(order(&out).len(), 2, "{out}");
    assert!(out.contains("sort: rtt  cell: top-b  pairs: 2 of 3"), "{out}");
}

#[test]
fn a_dead_url_is_one_sentence_and_exit_1() {
    let url = format!("http://127.0.0.1:{}", free_port());
    for once in [true, false] {
        let mut args = vec!["top", "--url", url.as_str()];
        if once {
            args.push("--once");
        }
        let (status, out, err) = cellwatch(&[], &args);
        assert_eq!(status.code(), Some(1), "{args:?}: {out}{err}");
        assert!(out.is_empty(), "{out}");
        assert_eq!(err.lines().count(), 1, "one sentence: {err}");
        assert!(
            err.starts_with(&format!("cellwatch: cannot read a cellwatch agent at {url}")),
            "{err}"
        );
    }
    let (status, _, err) = cellwatch(&[], &["top", "--once", "--url", "https://127.0.0.1:1"]);
    assert_eq!((status.code(), err.lines().count()), (Some(1), 1), "{err}");
}

/// A tmux server of the test's own (its own socket) with one session running a shell
/// whose prompt is [`Tmux::PROMPT`]; dropping it kills the server, whatever the test's
/// outcome.
pub(crate) struct Tmux {
    socket: String,
}

impl Tmux {
    pub(crate) const PROMPT: &'static str = "cw-test>";

    pub(crate) fn start(width: u16, height: u16) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let version = Command::new("tmux").arg("-V").output();
        assert!(
            version.as_ref().is_ok_and(|o| o.status.success()),
            "tmux is missing ({version:?}): install it with `apt-get install tmux` \
             (`cargo xtask setup` and `cargo xtask ci` do)"
        );
        let socket =
            format!("cellwatch-test-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let t = Self { socket };
        let shell = format!("env PS1='{} ' LANG=C.UTF-8 sh", Self::PROMPT);
        let (w, h) = (width.to_string(), height.to_string());
        t.tmux(&["-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", &w, "-y", &h, &shell]);
        t.wait_for("the shell's prompt", Duration::from_secs(10), |s| s.contains(Self::PROMPT));
        t
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-u", "-L", &self.socket])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tmux");
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `text` and Enter.
    pub(crate) fn line(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "t", "-l", text]);
        self.tmux(&["send-keys", "-t", "t", "Enter"]);
    }

    /// Presses keys, in tmux's names (`s`, `Enter`, `Escape`).
    pub(crate) fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    /// What the screen shows now.
    pub(crate) fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "t"])
    }

    /// The screen and everything that scrolled off it.
    pub(crate) fn history(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "t", "-S", "-"])
    }

    /// A tmux format of the pane, e.g. `#{alternate_on}`.
    pub(crate) fn pane(&self, format: &str) -> String {
        self.tmux(&["display-message", "-p", "-t", "t", format]).trim().to_owned()
    }

    /// The screen once `f` holds of it; panics with the screen after `limit`.
    pub(crate) fn wait_for(&self, what: &str, limit: Duration, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.screen();
            if f(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "{what} not on screen after {limit:?}:\n{s}");
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Asserts that the terminal is the shell's again: the alternate screen left, the
    /// cursor shown, the prompt back, the last command's exit status 0, and the line
    /// discipline cooked (echo, canonical input and signals on, as raw mode turns off).
    pub(crate) fn assert_restored(&self, command: &str) {
        let prompt_last =
            |s: &str| s.lines().rev().find(|l| !l.trim().is_empty()) == Some(Self::PROMPT);
        self.wait_for("the prompt after the command", Duration::from_secs(15), |s| {
            prompt_last(s) && self.pane("#{pane_current_command}") == "sh"
        });
        assert_eq!(self.pane("#{alternate_on}"), "0", "still on the alternate screen");
        assert_eq!(self.pane("#{cursor_flag}"), "1", "the cursor is hidden");
        self.line(concat!(
            "echo status=$?; stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon ",
            "-e echo -e -echo -e isig -e -isig | sort | tr '\\n' ' '; echo"
        ));
        let s = self.wait_for("the exit status and stty", Duration::from_secs(10), |s| {
            s.contains("status=") && prompt_last(s)
        });
        assert!(s.contains("status=0"), "{command} did not exit 0:\n{s}");
        assert!(s.contains("echo icanon isig"), "the terminal is not cooked:\n{s}");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stdin(Stdio::null())
            .output();
    }
}

/// An agent on a port the test chose, so that a second one can take its place at the
/// same URL; its pins of its own, removed after it stops.
struct FixedPortAgent {
    child: Child,
    dir: TempDir,
    _pins: Pins,
}

impl FixedPortAgent {
    fn start(port: u16, config: &str) -> Self {
        let dir = TempDir::new("top-agent");
        let cfg = dir.write("cells.yaml", config);
        let pins = Pins::new();
        let log = File::create(dir.0.join("stderr.log")).expect("stderr file");
        let child = Command::new(agent_bin())
            .args(["run", "--listen", &format!("127.0.0.1:{port}"), "--bpffs", pins.path()])
            .arg("--config")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start cellwatch run");
        let a = Self { child, dir, _pins: pins };
        let deadline = Instant::now() + READY_TIMEOUT;
        while !matches!(http_get(port, "/readyz"), Ok((200, _))) {
            let log = std::fs::read_to_string(a.dir.0.join("stderr.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "agent on {port} not ready:\n{log}");
            thread::sleep(Duration::from_millis(50));
        }
        a
    }
}

impl Drop for FixedPortAgent {
    fn drop(&mut self) {
        cellwatch_tests::terminate(&mut self.child);
    }
}

#[test]
fn the_live_view_in_a_terminal_counts_obeys_keys_follows_restarts_and_restores() {
    let _turn = turn();
    let port = free_port();
    let agent = FixedPortAgent::start(port, &cells());
    known_traffic();
    counted(port, IN_CELL, LEAKS, REFUSED);

    let tmux = Tmux::start(180, 40);
    let command = format!("{} top --url http://127.0.0.1:{port}", agent_bin().display());
    tmux.line(&command);
    // After the second scrape (rates over an interval, not `-`), the exact counts.
    let s = tmux.wait_for("the pairs over an interval", Duration::from_secs(15), |s| {
        row(s, "top-b", "top-a").is_some_and(|w| w[3] != "-")
    });
    assert!(s.contains("sort: opened  cell: all  pairs: 3 of 3  over "), "{s}");
    assert_eq!(tmux.pane("#{alternate_on}"), "1", "the view uses the alternate screen");
    let expect = |s: &str, src, dst, opened: usize, violations: usize| {
        let w = row(s, src, dst).unwrap_or_else(|| panic!("no {src} {dst}:\n{s}"));
        assert_eq!(
            (w[2].as_str(), w[4].as_str(), w[5].as_str()),
            (opened.to_string().as_str(), "0", violations.to_string().as_str()),
            "{src} {dst}:\n{s}"
        );
        w
    };
    expect(&s, "top-a", "top-a", IN_CELL, 0);
    expect(&s, "top-a", "top-b", LEAKS, LEAKS);
    expect(&s, "top-b", "top-a", 0, REFUSED);
    assert!(s.contains("top-a -> top-b") && s.contains("top-b -> top-a"), "violations panel:\n{s}");

    // Leaks made while the view runs: 20 over about 2 s. The rates seen are each one
    // interval's (2 s or more), so none is above 20 / 2 s; violations and openings
    // happen together; bytes are counted at close, so a window's bytes are its
    // connections' give or take the one that straddles its edge (300 B / 2 s), and the
    // screen rounds (a tenth of a connection per second, 15 B; a tenth of a KiB, 51 B).
    const LIVE: usize = 20;
    let traffic = thread::spawn(|| {
        let s = Server::start(b(2), LIVE, REQ, RESP);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut done = 0;
        for _ in 0..LIVE {
            if Instant::now() > deadline {
                break;
            }
            done += clients(a(12), s.addr, 1, REQ, RESP);
            thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(s.join(), LIVE);
        done
    });
    let mut rates = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let total = LEAKS + LIVE;
    let s = loop {
        let s = tmux.screen();
        let w = row(&s, "top-a", "top-b").expect("the leaking pair");
        let rate: f64 = w[3].parse().expect("OPENED/S");
        if rate > 0.0 {
            rates.push((rate, w[6].parse::<f64>().expect("VIOL/S"), bytes(&w[7], &w[8])));
        }
        if traffic.is_finished() && w[2] == total.to_string() && rate == 0.0 {
            break s;
        }
        assert!(Instant::now() < deadline, "the live leaks did not settle on screen:\n{s}");
        thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(traffic.join().expect("traffic"), LIVE);
    expect(&s, "top-a", "top-b", total, total);
    expect(&s, "top-a", "top-a", IN_CELL, 0);
    assert!(!rates.is_empty(), "no rate above zero was ever shown");
    let per = (REQ + RESP) as f64;
    for (opened, violations, b) in &rates {
        assert!(*opened <= LIVE as f64 / 2.0 + 0.05, "{opened}/s is more than was made: {rates:?}");
        assert!((opened - violations).abs() <= 0.6, "{rates:?}");
        assert!(
            (b - opened * per).abs() <= per / 2.0 + 70.0,
            "bytes/s {b} for {opened}/s: {rates:?}"
        );
    }

    // `s` cycles the sort: opened, then violations.
    assert_eq!(order(&s), ["top-a>top-b", "top-a>top-a", "top-b>top-a"], "{s}");
    tmux.keys(&["s"]);
    let s = tmux
        .wait_for("sort: violations", Duration::from_secs(5), |s| s.contains("sort: violations"));
    assert_eq!(order(&s), ["top-a>top-b", "top-b>top-a", "top-a>top-a"], "{s}");
    // `/` filters by a cell typed in; Esc clears it.
    tmux.keys(&["/"]);
    tmux.wait_for("the filter prompt", Duration::from_secs(5), |s| s.contains("filter by cell:"));
    tmux.tmux(&["send-keys", "-t", "t", "-l", "top-b"]);
    tmux.keys(&["Enter"]);
    // The header, not the prompt (whose "filter by cell: top-b" shows until Enter lands).
    let s = tmux.wait_for("cell: top-b", Duration::from_secs(5), |s| {
        s.contains("cell: top-b  pairs:") && !s.contains("filter by cell:")
    });
    assert_eq!(order(&s), ["top-a>top-b", "top-b>top-a"], "{s}");
    assert!(s.contains("pairs: 2 of 3"), "{s}");
    tmux.keys(&["Escape"]);
    let s = tmux.wait_for("cell: all", Duration::from_secs(5), |s| s.contains("cell: all"));
    assert_eq!(order(&s).len(), 3, "{s}");

    // The agent restarts with fresh state (another pin directory: every counter is back
    // to zero). The view says it cannot read it, keeps going, and follows the new one.
    drop(agent);
    tmux.wait_for("the agent gone", Duration::from_secs(10), |s| {
        s.contains("cannot read a cellwatch agent")
    });
    let _agent = FixedPortAgent::start(port, &cells());
    exchanges(a(13), a(3), 4);
    counted(port, 4, 0, 0);
    let s = tmux.wait_for("the restarted agent's count", Duration::from_secs(15), |s| {
        row(s, "top-a", "top-a").is_some_and(|w| w[2] == "4")
            && !s.contains("cannot read a cellwatch agent")
    });
    assert_eq!(tmux.pane("#{pane_current_command}"), "cellwatch", "top exited:\n{s}");
    let w = row(&s, "top-a", "top-a").expect("the in-cell pair");
    assert!(w[3].parse::<f64>().is_ok_and(|r| r >= 0.0), "{s}");
    assert!(row(&s, "top-a", "top-b").is_none(), "the new agent saw no leak yet:\n{s}");

    // `q` quits and gives the terminal back.
    tmux.keys(&["q"]);
    tmux.assert_restored(&command);
    let s = tmux.screen();
    assert!(s.contains(&command), "the shell's screen is back:\n{s}");
    assert!(!s.contains("SRC CELL"), "the view stayed on the shell's screen:\n{s}");
}
