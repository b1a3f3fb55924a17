//! `cellwatch demo`: it runs the agent with its sample traffic, prints where to look and
//! a table whose numbers match the traffic it made, marks the leaks, and stops by itself
//! or on SIGINT, leaving no program loaded and no server listening.
//!
//! One test function: two demos side by side would count each other's connections
//! (both watch 127.100.0.0/16).
use std::{
    io::{BufRead, BufReader, Read},
    net::TcpListener,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use cellwatch_tests::{agent_bin, prog_ids_of, ranges::DEMO};

/// Starts `cellwatch demo` with stdout piped; stdout lines arrive on the receiver.
fn spawn_demo(duration: u32) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(agent_bin())
        .args(["demo", "--duration", &duration.to_string(), "--listen", "127.0.0.1:0"])
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

#[test]
fn demo_counts_exactly_marks_leaks_and_cleans_up() {
    // Runs to the end by itself.
    let (child, rx) = spawn_demo(7);
    let head = lines_until(&rx, Duration::from_secs(30), |l| l.contains("/violations"));
    assert!(
        head.iter().any(|l| l.contains("metrics:") && l.contains("http://127.0.0.1:")),
        "{head:?}"
    );
    let ids = prog_ids_of(child.id());
    let all = lines_until(&rx, Duration::from_secs(40), |l| l.starts_with("cellwatch demo: made"));
    let (status, err) = finish(child, Duration::from_secs(15));
    assert!(status.success(), "demo exited with {status}:\n{err}");
    assert_unloaded(&ids);

    let summary = all.last().expect("summary");
    let final_at = all.iter().position(|l| l.contains("(final)")).expect("a final table");
    let table = &all[final_at..];
    let in_cell = count_before(summary, "allowed in-cell");
    let by_rule = count_before(summary, "allowed by");
    let leaks = count_before(summary, "cross-cell leaks");
    let refused = count_before(summary, "refused leaks");
    assert!(in_cell > 0 && by_rule > 0 && leaks > 0 && refused > 0, "{summary}");
    assert!(!summary.contains("went otherwise"), "{summary}");
    // Each exchange sends 5 bytes each way; refused connects open nothing.
    let [o1, v1, a1, r1, s1, rc1] = row(table, "cell-1", "cell-1");
    let [og, vg, ..] = row(table, "cell-2", "global");
    assert_eq!((o1 + og, v1 + vg, a1, r1), (in_cell, 0, 0, 0), "{summary}\n{}", table.join("\n"));
    assert_eq!((s1, rc1), (5 * o1, 5 * o1));
    assert_eq!(row(table, "cell-1", "cell-2"), [by_rule, 0, 0, 0, 5 * by_rule, 5 * by_rule]);
    assert_eq!(row(table, "cell-3", "cell-2"), [leaks, leaks, 0, 0, 5 * leaks, 5 * leaks]);
    assert_eq!(row(table, "cell-1", "cell-3"), [0, refused, 0, refused, 0, 0]);
    let marked: Vec<_> = table.iter().filter(|l| l.contains("<- cross-cell leak")).collect();
    assert_eq!(marked.len(), 2, "{}", table.join("\n"));
    assert!(err.contains("cross-cell connection against policy"), "violations are logged:\n{err}");

    // Stopped early by SIGINT: exits 0, programs unloaded, its servers gone.
    let (child, rx) = spawn_demo(600);
    lines_until(&rx, Duration::from_secs(40), |l| l.starts_with("cell pairs"));
    let ids = prog_ids_of(child.id());
    let ok = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    assert!(ok.is_ok_and(|s| s.success()));
    let (status, err) = finish(child, Duration::from_secs(15));
    assert!(status.success(), "demo exited with {status} on SIGINT:\n{err}");
    assert_unloaded(&ids);
    let rebind = TcpListener::bind((DEMO.ip(0, 2, 1), 15432));
    assert!(rebind.is_ok(), "the demo's database port is still taken: {rebind:?}");
}
