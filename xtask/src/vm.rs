//! `cargo xtask vm-test [KERNEL...]`: the privileged tests of connection counting, the
//! cell verdict, telemetry and restarts, run inside qemu on each kernel of a matrix. The
//! kernels are Debian's packaged cloud kernels (`6.1`, `6.12`: the newest package of the
//! series, from `apt-get download`), or a vmlinuz path. The initramfs holds the test
//! binaries, the agent, the tools the tests call and every library they load; its /init
//! is this very binary ([`crate::vm_init`]).
use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    setup::run,
    tasks::{ok, root, step},
    vm_init::{DONE, RESULT},
};

/// The matrix when no kernel is named.
pub(crate) const DEFAULT_KERNELS: &[&str] = &["6.1", "6.12"];
/// The test files (in `tests/tests/`) that run in every VM.
const TESTS: &[&str] = &["foundation", "cells", "telemetry", "restart"];
/// Kernel modules a node loads on demand and the tests need: sock_diag for TCP (the
/// agent's seeding and its `/connections` details, and `ss`). Loaded by /init in order.
const MODULES: &[&str] = &["net/ipv4/inet_diag", "net/ipv4/tcp_diag"];
/// Host tools the tests call, copied in with their libraries (busybox gives the rest).
const TOOLS: &[&str] = &["/usr/sbin/bpftool", "/usr/bin/prlimit", "/usr/bin/ss"];
/// How long one VM may take, boot to power-off, before it is killed and failed.
const VM_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// One kernel's outcome.
struct Outcome {
    kernel: String,
    release: String,
    tests: Vec<(String, bool, String)>,
    finished: bool,
    secs: f64,
}

pub(crate) fn vm_test(kernels: &[String]) -> Result<()> {
    let kernels: Vec<String> = if kernels.is_empty() {
        DEFAULT_KERNELS.iter().map(|k| (*k).to_owned()).collect()
    } else {
        kernels.to_vec()
    };
    let work = root().join("target/vm");
    std::fs::create_dir_all(&work)?;
    step("build the agent and the VM test binaries");
    run(&["cargo", "build", "--locked", "-p", "agent"])?;
    let tests = test_binaries()?;
    step("pack the initramfs");
    let image = initramfs(&work, &tests)?;
    ok(&format!(
        "{} ({:.0} MiB)",
        image.display(),
        std::fs::metadata(&image)?.len() as f64 / 1048576.0
    ));
    let mut outcomes = Vec::new();
    for k in &kernels {
        let vmlinuz = kernel(k, &work)?;
        let image = with_modules(&image, &vmlinuz, &work)?;
        step(&format!("boot {k} ({}) under qemu", vmlinuz.display()));
        let log = work.join(format!("{}.log", k.replace('/', "_")));
        outcomes.push(boot(k, &vmlinuz, &image, &log)?);
    }
    report(&outcomes)
}

/// `cargo test --no-run` of the VM's test files; their executables by name.
fn test_binaries() -> Result<Vec<(String, PathBuf)>> {
    let out = Command::new("cargo")
        .args(["test", "--locked", "-p", "cellwatch-tests", "--no-run", "--message-format=json"])
        .args(TESTS.iter().flat_map(|t| ["--test", t]))
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut found = Vec::new();
    for t in TESTS {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("\"name\":\"{t}\"")) && l.contains("\"kind\":[\"test\"]"))
            .with_context(|| format!("no test executable for {t}"))?;
        let exe = line
            .split("\"executable\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .with_context(|| format!("no executable path for {t}"))?;
        found.push(((*t).to_owned(), PathBuf::from(exe)));
    }
    Ok(found)
}

/// Builds `work/initramfs.cpio` from a fresh `work/root`.
fn initramfs(work: &Path, tests: &[(String, PathBuf)]) -> Result<PathBuf> {
    let root_dir = work.join("root");
    if root_dir.exists() {
        std::fs::remove_dir_all(&root_dir)?;
    }
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "tests", "etc"] {
        std::fs::create_dir_all(root_dir.join(d))?;
    }
    let mut elves = Vec::new();
    let mut put = |from: &Path, to: &str| -> Result<()> {
        let dst = root_dir.join(to.trim_start_matches('/'));
        copy_stripped(from, &dst)?;
        elves.push(from.to_owned());
        Ok(())
    };
    put(&std::env::current_exe()?, "/init")?;
    put(&root().join("target/debug/cellwatch"), "/bin/cellwatch")?;
    for (name, exe) in tests {
        put(exe, &format!("/tests/{name}"))?;
    }
    for tool in TOOLS {
        let p = Path::new(tool);
        if !p.exists() {
            bail!("{tool} is missing: run `cargo xtask setup`");
        }
        put(p, tool)?;
    }
    std::fs::copy("/bin/busybox", root_dir.join("bin/busybox"))
        .context("/bin/busybox (busybox-static) is missing: run `cargo xtask setup`")?;
    for lib in libraries(&elves)? {
        let dst = root_dir.join(lib.strip_prefix("/").unwrap_or(&lib));
        if !dst.exists() {
            std::fs::create_dir_all(dst.parent().unwrap_or(&root_dir))?;
            std::fs::copy(&lib, &dst).with_context(|| format!("copy {}", lib.display()))?;
        }
    }
    std::fs::write(root_dir.join("etc/passwd"), "root:x:0:0:root:/tmp:/bin/sh\n")?;
    let image = work.join("initramfs.cpio");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && find . | cpio --quiet -o -H newc > '{}'",
            root_dir.display(),
            image.display()
        ))
        .status()?;
    if !status.success() {
        bail!("cpio failed (is it installed? run `cargo xtask setup`)");
    }
    Ok(image)
}

/// The initramfs with this kernel's [`MODULES`] appended as a second cpio archive (the
/// kernel unpacks concatenated archives in order). A bare vmlinuz path has no modules
/// beside it: its image is the common one.
fn with_modules(common: &Path, vmlinuz: &Path, work: &Path) -> Result<PathBuf> {
    let Some(pkg) = vmlinuz.parent().and_then(Path::parent) else { return Ok(common.to_owned()) };
    let Some(release_dir) =
        std::fs::read_dir(pkg.join("lib/modules")).ok().and_then(|mut d| d.next())
    else {
        println!("    no modules beside {}: sock_diag must be built in", vmlinuz.display());
        return Ok(common.to_owned());
    };
    let kernel_dir = release_dir?.path().join("kernel");
    let stage = work.join("modules-stage");
    if stage.exists() {
        std::fs::remove_dir_all(&stage)?;
    }
    std::fs::create_dir_all(stage.join("modules"))?;
    for (i, m) in MODULES.iter().enumerate() {
        let name = m.rsplit('/').next().unwrap_or(m);
        let dst = stage.join(format!("modules/{i}-{name}.ko"));
        let plain = kernel_dir.join(format!("{m}.ko"));
        if plain.exists() {
            std::fs::copy(&plain, &dst)?;
            continue;
        }
        let (packed, tool) = [("xz", "xz"), ("zst", "zstd")]
            .iter()
            .map(|(ext, tool)| (kernel_dir.join(format!("{m}.ko.{ext}")), *tool))
            .find(|(p, _)| p.exists())
            .with_context(|| format!("{m}.ko is not in {}", kernel_dir.display()))?;
        let out = Command::new(tool).args(["-d", "-c"]).arg(&packed).output()?;
        if !out.status.success() {
            bail!("{tool} -d {} failed", packed.display());
        }
        std::fs::write(&dst, out.stdout)?;
    }
    let image = work.join(format!(
        "initramfs-{}.cpio",
        pkg.file_name().and_then(|n| n.to_str()).unwrap_or("kernel")
    ));
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cp '{}' '{img}' && cd '{}' && find . | cpio --quiet -o -H newc >> '{img}'",
            common.display(),
            stage.display(),
            img = image.display()
        ))
        .status()?;
    if !status.success() {
        bail!("packing the modules failed");
    }
    Ok(image)
}

/// Copies an executable without its debug sections (a tenth of the size).
fn copy_stripped(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to.parent().context("no parent")?)?;
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(to)
        .arg(from)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(from, to).with_context(|| format!("copy {}", from.display()))?;
    }
    Ok(())
}

/// Every shared library (and the dynamic loader) the executables load, from `ldd`.
fn libraries(elves: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for e in elves {
        let out = Command::new("ldd").arg(e).output()?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                let p = PathBuf::from(p);
                if !libs.contains(&p) {
                    libs.push(p);
                }
            }
        }
    }
    Ok(libs)
}

/// The vmlinuz of `spec`: a path as given, or the newest Debian cloud kernel of a series.
fn kernel(spec: &str, work: &Path) -> Result<PathBuf> {
    let as_path = Path::new(spec);
    if as_path.is_file() {
        return Ok(as_path.to_owned());
    }
    let package = newest_package(spec)?;
    let dir = work.join("kernels").join(&package);
    if let Some(v) = vmlinuz_in(&dir) {
        return Ok(v);
    }
    step(&format!("download {package}"));
    std::fs::create_dir_all(&dir)?;
    let status =
        Command::new("apt-get").args(["download", "-qq", &package]).current_dir(&dir).status()?;
    if !status.success() {
        bail!("apt-get download {package} failed");
    }
    let deb = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("the download left no .deb")?;
    run(&["dpkg-deb", "-x", deb.to_str().unwrap_or_default(), dir.to_str().unwrap_or_default()])?;
    std::fs::remove_file(&deb)?;
    vmlinuz_in(&dir).with_context(|| format!("{package} holds no boot/vmlinuz-*"))
}

fn vmlinuz_in(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir.join("boot"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("vmlinuz-")))
}

/// `linux-image-<series>.*-cloud-amd64` with the highest version in the archive.
fn newest_package(series: &str) -> Result<String> {
    let out = Command::new("apt-cache").args(["pkgnames", "linux-image-"]).output()?;
    let prefix = format!("linux-image-{series}.");
    let version = |name: &str| -> Vec<u64> {
        name.trim_start_matches("linux-image-")
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect()
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|n| n.starts_with(&prefix) && n.ends_with("-cloud-amd64"))
        .max_by_key(|n| version(n))
        .map(str::to_owned)
        .with_context(|| {
            format!("no Debian package linux-image-{series}.*-cloud-amd64 (is the series right?)")
        })
}

/// Boots one kernel, streams its result lines, and kills it at [`VM_TIMEOUT`].
fn boot(kernel: &str, vmlinuz: &Path, image: &Path, log: &Path) -> Result<Outcome> {
    let accel = std::env::var("CELLWATCH_VM_ACCEL").unwrap_or_else(|_| "tcg".to_owned());
    let started = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", &accel, "-cpu", "max", "-smp", "2", "-m", "3072"])
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
        .context("qemu-system-x86_64 is missing: run `cargo xtask setup`")?;
    let stdout = child.stdout.take().context("qemu stdout")?;
    let (tx, rx) = mpsc::channel::<String>();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut file = std::fs::File::create(log)?;
    let mut out = Outcome {
        kernel: kernel.to_owned(),
        release: String::new(),
        tests: Vec::new(),
        finished: false,
        secs: 0.0,
    };
    let mut summary = String::new();
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
        if let Some(r) = line.strip_prefix("init: kernel ") {
            out.release = r.to_owned();
        }
        if line.starts_with("test result:") {
            summary = line.clone();
        }
        if line.starts_with("test ") && line.ends_with("FAILED") || line.contains("panicked at") {
            println!("    {kernel}: {line}");
        }
        if let Some(rest) = line.strip_prefix(&format!("{RESULT} ")) {
            let mut w = rest.split_whitespace();
            let (name, verdict, secs) = (w.next(), w.next(), w.next());
            if let (Some(n), Some(v)) = (name, verdict) {
                println!("    {kernel}: {n}: {v} in {} s ({summary})", secs.unwrap_or("?"));
                out.tests.push((n.to_owned(), v == "pass", summary.clone()));
                summary.clear();
            }
        }
        if line.starts_with(DONE) {
            out.finished = true;
        }
    }
    let _ = child.wait();
    let _ = reader.join();
    out.secs = started.elapsed().as_secs_f64();
    Ok(out)
}

fn report(outcomes: &[Outcome]) -> Result<()> {
    step("kernel matrix");
    let mut failed = Vec::new();
    for o in outcomes {
        let passed = o.tests.iter().filter(|(_, ok, _)| *ok).count();
        println!(
            "    {} ({}): {passed} of {} test files passed, {:.0} s",
            o.kernel,
            if o.release.is_empty() { "did not boot" } else { &o.release },
            TESTS.len(),
            o.secs
        );
        for (name, ok, summary) in &o.tests {
            println!("      {name:<12} {} {summary}", if *ok { "pass" } else { "FAIL" });
        }
        if !o.finished || passed != TESTS.len() {
            failed.push(o.kernel.clone());
        }
    }
    if !failed.is_empty() {
        bail!("the tests failed on {} (logs in target/vm/)", failed.join(", "));
    }
    ok("every kernel passed");
    Ok(())
}
