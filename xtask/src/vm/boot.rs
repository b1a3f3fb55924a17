//! One VM of the matrix: boot a kernel on the initramfs under qemu, keep its serial
//! console in a log, and read the result lines /init prints ([`super::init`]).
use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::init::{DONE, RESULT};

/// How long one VM may take, boot to power-off, before it is killed and failed.
const VM_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// One kernel's outcome.
pub(super) struct Outcome {
    pub(super) kernel: String,
    /// The kernel's release, as /init read it; empty when it did not boot that far.
    pub(super) release: String,
    /// Per area: name, passed, `passed/tests`.
    pub(super) areas: Vec<(String, bool, String)>,
    /// libtest's `test result:` line.
    pub(super) summary: String,
    /// /init reported the end of the run and whether the test binary passed.
    pub(super) done: Option<bool>,
    pub(super) secs: f64,
}

/// Boots one kernel, streams its result lines, and kills it at [`VM_TIMEOUT`].
pub(super) fn boot(kernel: &str, vmlinuz: &Path, image: &Path, log: &Path) -> Result<Outcome> {
    let accel = std::env::var("CELLWATCH_VM_ACCEL").unwrap_or_else(|_| "tcg".to_owned());
    let started = Instant::now();
    let mut child = qemu(&accel, vmlinuz, image)?;
    let stdout = child.stdout.take().context("qemu stdout")?;
    let (rx, reader) = lines_of(stdout);
    let mut file = std::fs::File::create(log)?;
    let mut out = Outcome {
        kernel: kernel.to_owned(),
        release: String::new(),
        areas: Vec::new(),
        summary: String::new(),
        done: None,
        secs: 0.0,
    };
    loop {
        let left = VM_TIMEOUT.saturating_sub(started.elapsed());
        let line = match rx.recv_timeout(left.min(Duration::from_secs(5))) {
            Ok(l) => l,
            Err(mpsc::RecvTimeoutError::Timeout) if left > Duration::ZERO => continue,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                println!("    {kernel}: no power-off after {VM_TIMEOUT:?}: killed");
                let _ = child.kill();
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let line = line.trim_end_matches('\r').to_owned();
        writeln!(file, "{line}")?;
        out.read(&line);
    }
    let _ = child.wait();
    let _ = reader.join();
    out.secs = started.elapsed().as_secs_f64();
    Ok(out)
}

/// qemu, started on `vmlinuz` and the initramfs `image`, its serial console on stdout.
fn qemu(accel: &str, vmlinuz: &Path, image: &Path) -> Result<Child> {
    Command::new("qemu-system-x86_64")
        .args(["-accel", accel, "-cpu", "max", "-smp", "2", "-m", "3072"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(image)
        .args(["-append", "console=ttyS0 panic=-1 quiet", "-nographic", "-no-reboot"])
        // No NIC and no VGA: the tests use loopback only, and neither option ROM is needed.
        .args(["-nic", "none", "-vga", "none"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("qemu-system-x86_64 is missing: run `cargo xtask setup`")
}

/// The lines of `stdout`, sent one by one from a thread of their own until it closes.
fn lines_of(stdout: ChildStdout) -> (mpsc::Receiver<String>, thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<String>();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (rx, reader)
}

impl Outcome {
    /// One line of the console: what it says of the run is kept, and the lines worth
    /// seeing at once (failures, the areas' results, the end) are printed.
    fn read(&mut self, line: &str) {
        let kernel = &self.kernel;
        if let Some(r) = line.strip_prefix("init: kernel ") {
            self.release = r.to_owned();
        }
        if line.starts_with("test result:") {
            self.summary = line.to_owned();
        }
        if line.starts_with("test ") && line.ends_with("FAILED") || line.contains("panicked at") {
            println!("    {kernel}: {line}");
        }
        // `CELLWATCH-VM-DONE <pass|fail> <seconds>`.
        if let Some(rest) = line.strip_prefix(&format!("{DONE} ")) {
            let mut w = rest.split_whitespace();
            let (verdict, secs) = (w.next(), w.next());
            println!(
                "    {kernel}: test binary {} in {} s ({})",
                verdict.unwrap_or("?"),
                secs.unwrap_or("?"),
                self.summary
            );
            self.done = Some(verdict == Some("pass"));
        // `CELLWATCH-VM <area> <pass|fail> <passed>/<tests>`.
        } else if let Some(rest) = line.strip_prefix(&format!("{RESULT} ")) {
            let mut w = rest.split_whitespace();
            if let (Some(area), Some(verdict)) = (w.next(), w.next()) {
                let counts = w.next().unwrap_or("?");
                println!("    {kernel}: {area}: {verdict}, {counts} tests");
                self.areas.push((area.to_owned(), verdict == "pass", counts.to_owned()));
            }
        }
    }
}
