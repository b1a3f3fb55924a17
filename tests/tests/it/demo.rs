//! `cellwatch demo`: it runs the agent with its sample traffic, prints where to look and
//! a table whose numbers match the traffic it made, marks the leaks, shows the newest
//! violation of each pair, keeps its log lines in a file (on stderr with `--verbose`),
//! and stops by itself or on SIGINT, leaving no program loaded and no server listening.
//! On a pipe it appends its frames; in a terminal (tmux) it redraws them in place.
//!
//! Two demos side by side would count each other's connections (both watch
//! 127.100.0.0/16), so the tests take turns ([`turn`]).
use std::{
    io::{BufRead, BufReader, Read},
    net::TcpListener,
    process::{Child, Command, Stdio},
    sync::{Mutex, MutexGuard, mpsc},
    thread,
    time::{Duration, Instant},
};

use cellwatch_tests::{agent_bin, prog_ids_of, ranges::DEMO};

use crate::top::Tmux;

fn turn() -> MutexGuard<'static, ()> {
    static DEMO_CELLS: Mutex<()> = Mutex::new(());
    DEMO_CELLS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts `cellwatch demo` with stdout piped; stdout lines arrive on the receiver.
fn spawn_demo(duration: u32, more: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(agent_bin())
        .args(["demo", "--duration", &duration.to_string(), "--listen", "127.0.0.1:0"])
        .args(more)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cellwatch demo");
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().expect("stdout");
    thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Lines until one satisfies `stop` (included), within `limit`; panics otherwise.
fn lines_until(
    rx: &mpsc::Receiver<String>,
    limit: Duration,
    stop: impl Fn(&str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) => {
                let done = stop(&l);
                seen.push(l);
                if done {
                    return seen;
                }
            }
            Err(_) => break,
        }
    }
    panic!(
        "the demo did not print the expected line within {limit:?}; it printed:\n{}",
        seen.join("\n")
    );
}

/// Waits for the process to exit within `limit` (killing it if not) and returns its
/// status and stderr.
fn finish(mut child: Child, limit: Duration) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
            return (status, err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the demo did not exit within {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Columns of the table row for `src -> dst`: opened, violations, active, refused, sent, received.
fn row(table: &[String], src: &str, dst: &str) -> [u64; 6] {
    let line = table
        .iter()
        .find(|l| {
            let mut w = l.split_whitespace();
            w.next() == Some(src) && w.next() == Some(dst)
        })
        .unwrap_or_else(|| panic!("no row {src} -> {dst} in:\n{}", table.join("\n")));
    let n: Vec<u64> =
        line.split_whitespace().skip(2).take(6).map(|v| v.parse().expect("number")).collect();
    n.try_into().expect("six columns")
}

/// The number before `word` in the summary line.
fn count_before(summary: &str, word: &str) -> u64 {
    let at = summary.find(word).unwrap_or_else(|| panic!("`{word}` in {summary}"));
    summary[..at].split_whitespace().last().and_then(|n| n.parse().ok()).expect("a count")
}

fn assert_unloaded(ids: &[u32]) {
    assert!(!ids.is_empty(), "the demo held no BPF programs while running");
    cellwatch_tests::assert_unloaded(ids, "the demo exited");
}

/// The demo's log file, from the `log:` line of its head.
fn log_file(head: &[String]) -> std::path::PathBuf {
    let line = head.iter().find_map(|l| l.trim().strip_prefix("log:")).expect("a log: line");
    let path = line.split_whitespace().next().expect("a path");
    assert!(path.starts_with('/') && path.ends_with(".log"), "{line}");
    path.into()
}

/// Asserts the final table (from its `(final)` heading on) against the summary line,
/// and that the violation panel has one line per leaking pair, with the demo's process
/// and both addresses.
fn assert_final(table: &[String], summary: &str, pid: &str) {
    let in_cell = count_before(summary, "allowed in-cell");
    let by_rule = count_before(summary, "allowed by");
    let leaks = count_before(summary, "cross-cell leaks");
    let refused = count_before(summary, "refused leaks");
    assert!(in_cell > 0 && by_rule > 0 && leaks > 0 && refused > 0, "{summary}");
    assert!(!summary.contains("went otherwise"), "{summary}");
    // Each exchange sends 5 bytes each way; refused connects open nothing.
    let [o1, v1, a1, r1, s1, rc1] = row(table, "cell-1", "cell-1");
    let [og, vg, ..] = row(table, "cell-2", "global");
    // cell-1's calls to the global cell are all to the shared `ledger`.
    let [o1g, v1g, ..] = row(table, "cell-1", "global");
    assert_eq!(
        (o1 + og + o1g, v1 + vg + v1g, a1, r1),
        (in_cell, 0, 0, 0),
        "{summary}\n{}",
        table.join("\n")
    );
    // Its blast radius: cell-2 (every round) and cell-1 (every other), never cell-3.
    let blast: Vec<&String> =
        table.iter().filter(|l| l.starts_with("blast radius of ledger (in global): ")).collect();
    assert_eq!(blast.len(), 1, "{}", table.join("\n"));
    assert!(
        blast[0].contains(&format!("cell-1 {o1g} connections"))
            && blast[0].contains("cell-2 ")
            && !blast[0].contains("cell-3"),
        "{}",
        blast[0]
    );
    assert_eq!((s1, rc1), (5 * o1, 5 * o1));
    assert_eq!(row(table, "cell-1", "cell-2"), [by_rule, 0, 0, 0, 5 * by_rule, 5 * by_rule]);
    assert_eq!(row(table, "cell-3", "cell-2"), [leaks, leaks, 0, 0, 5 * leaks, 5 * leaks]);
    assert_eq!(row(table, "cell-1", "cell-3"), [0, refused, 0, refused, 0, 0]);
    let marked: Vec<_> = table.iter().filter(|l| l.contains("<- cross-cell leak")).collect();
    assert_eq!(marked.len(), 2, "{}", table.join("\n"));
    for (pair, from, to) in [
        ("cell-3 -> cell-2", "127.100.3.10:", "127.100.2.1:"),
        ("cell-1 -> cell-3", "127.100.1.10:", "127.100.3.1:"),
    ] {
        let lines: Vec<&String> = table.iter().filter(|l| l.contains(pair)).collect();
        assert_eq!(lines.len(), 1, "one line for {pair}:\n{}", table.join("\n"));
        let l = lines[0];
        assert!(
            l.contains(&format!("[{pid}]")) && l.contains(from) && l.contains(&format!("-> {to}")),
            "{l}"
        );
    }
}

#[test]
fn demo_counts_exactly_marks_leaks_and_cleans_up() {
    let _turn = turn();
    // Runs to the end by itself.
    let (child, rx) = spawn_demo(7, &[]);
    let head = lines_until(&rx, Duration::from_secs(30), |l| l.trim().starts_with("log:"));
    assert!(
        head.iter().any(|l| l.contains("metrics:") && l.contains("http://127.0.0.1:")),
        "{head:?}"
    );
    let log = log_file(&head);
    let ids = prog_ids_of(child.id());
    let all = lines_until(&rx, Duration::from_secs(40), |l| l.starts_with("cellwatch demo: made"));
    let (status, err) = finish(child, Duration::from_secs(15));
    assert!(status.success(), "demo exited with {status}:\n{err}");
    assert_unloaded(&ids);

    let summary = all.last().expect("summary");
    let final_at = all.iter().position(|l| l.contains("(final)")).expect("a final table");
    assert_final(&all[final_at..], summary, &pid_of_log(&log));
    // On a pipe, every frame is appended.
    let frames = all.iter().filter(|l| l.starts_with("cell pairs, client side")).count();
    assert!(frames >= 2, "{}", all.join("\n"));
    // The log lines went to the file, not to the screen.
    assert!(err.is_empty(), "stderr without --verbose:\n{err}");
    let logged = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let _ = std::fs::remove_file(&log);
    assert!(
        logged.contains("cross-cell connection against policy"),
        "violations are logged:\n{logged}"
    );

    // Stopped early by SIGINT: exits 0, programs unloaded, its servers gone. With
    // --verbose, the log is on stderr.
    let (child, rx) = spawn_demo(600, &["--verbose"]);
    let head = lines_until(&rx, Duration::from_secs(40), |l| l.starts_with("cell pairs"));
    assert!(head.iter().any(|l| l.trim() == "log:         stderr"), "{head:?}");
    let ids = prog_ids_of(child.id());
    let ok = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    assert!(ok.is_ok_and(|s| s.success()));
    let (status, err) = finish(child, Duration::from_secs(15));
    assert!(status.success(), "demo exited with {status} on SIGINT:\n{err}");
    assert!(err.contains("SIGINT: stopping"), "--verbose logs on stderr:\n{err}");
    assert_unloaded(&ids);
    let rebind = TcpListener::bind((DEMO.ip(0, 2, 1), 15432));
    assert!(rebind.is_ok(), "the demo's database port is still taken: {rebind:?}");
}

/// The pid in the log file's name (`cellwatch-demo-PID.log`): the demo's process.
fn pid_of_log(log: &std::path::Path) -> String {
    let name = log.file_name().and_then(|n| n.to_str()).expect("a file name");
    name.trim_start_matches("cellwatch-demo-").trim_end_matches(".log").to_owned()
}

#[test]
fn in_a_terminal_the_demo_redraws_in_place() {
    let _turn = turn();
    let tmux = Tmux::start(200, 50);
    let command = format!("{} demo --duration 8 --listen 127.0.0.1:0", agent_bin().display());
    tmux.line(&command);
    // A few frames in: still one table and one panel, in place, under the head.
    let s = tmux.wait_for("a frame after 3 s", Duration::from_secs(40), |s| {
        s.lines().any(|l| {
            l.starts_with("cell pairs, client side (after ")
                && !l.contains("(after 1 s")
                && !l.contains("(after 2 s")
        })
    });
    let history = tmux.history();
    assert_eq!(
        history.matches("cell pairs, client side").count(),
        1,
        "redrawn, not appended:\n{history}"
    );
    assert_eq!(history.matches("newest violations").count(), 1, "{history}");
    assert!(
        !history.contains(" INFO ") && !history.contains("against policy"),
        "log lines on screen:\n{history}"
    );
    let head: Vec<String> = s.lines().map(str::to_owned).collect();
    let log = log_file(&head);
    assert!(log.exists(), "{}", log.display());

    // The end: the final frame in place, the summary under it, the prompt back.
    let s = tmux
        .wait_for("the summary", Duration::from_secs(40), |s| s.contains("cellwatch demo: made"));
    tmux.assert_restored(&command);
    let history = tmux.history();
    assert_eq!(history.matches("cell pairs, client side").count(), 1, "{history}");
    let lines: Vec<String> = s.lines().map(str::to_owned).collect();
    let summary = lines.iter().find(|l| l.starts_with("cellwatch demo: made")).expect("summary");
    let final_at = lines.iter().position(|l| l.contains("(final)")).expect("the final table");
    assert_final(&lines[final_at..], summary, &pid_of_log(&log));
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(logged.contains("cross-cell connection against policy"), "{logged}");
}
