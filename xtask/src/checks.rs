//! `cargo xtask test`: every check CI runs, in the order that fails fastest.
use std::time::Instant;

use anyhow::{Result, bail};

use crate::{
    bench, util,
    util::{ok, root, run, run_env, step},
    vm,
};

pub(crate) fn test() -> Result<()> {
    let started = Instant::now();
    std::env::set_current_dir(root())?;
    lints()?;
    timed("cargo deny (licences, bans, sources)", &|| {
        run(&["cargo", "deny", "--locked", "check", "licenses", "bans", "sources"])
    })?;
    timed("unit tests (every crate but the eBPF one, and the test harness's own)", &unit_tests)?;
    timed(
        "the pure core and the fuzz targets build on stable with no eBPF toolchain",
        &core_alone,
    )?;
    timed("build the agent", &|| util::build_agent(false).map(drop))?;
    if !util::is_root() {
        bail!(
            "the privileged integration tests load eBPF programs and need root; run `cargo xtask test` as root"
        );
    }
    privileged()?;
    timed(
        &format!(
            "kernel matrix: the {} tests on {} under qemu, and {} again with the fallbacks forced",
            vm::AREAS.join(", "),
            vm::DEFAULT_KERNELS.join(" and "),
            vm::FORCED_AREAS.join(", ")
        ),
        &|| vm::vm_test(&[]),
    )?;
    timed(
        "benchmarks: build the microbenchmarks, smoke-run the rest (timings not checked)",
        &|| {
            run(&["cargo", "bench", "--locked", "-p", "agent-core", "--no-run"])?;
            bench::smoke()
        },
    )?;
    for (target, seconds) in FUZZ_TARGETS {
        timed(&format!("fuzz {target} ({seconds} s)"), &|| fuzz(target, *seconds))?;
    }
    println!("all checks passed in {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// One check, announced, then said passed with its time.
fn timed(what: &str, f: &dyn Fn() -> Result<()>) -> Result<()> {
    step(what);
    let t = Instant::now();
    f()?;
    ok(&format!("passed in {:.1}s", t.elapsed().as_secs_f64()));
    Ok(())
}

/// Formatting, and clippy on the userspace crates and on the eBPF one.
fn lints() -> Result<()> {
    timed("cargo fmt --check", &|| run(&["cargo", "fmt", "--all", "--check"]))?;
    timed("clippy, userspace crates", &|| {
        run(&[
            "cargo",
            "clippy",
            "--locked",
            "--workspace",
            "--exclude",
            "agent-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
    })?;
    timed("clippy, eBPF crate (nightly, bpfel)", &|| {
        run(&[
            "cargo",
            "+nightly",
            "clippy",
            "--locked",
            "-p",
            "agent-ebpf",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ])
    })
}

/// The unit tests of every crate but the eBPF one, then the test harness's own.
fn unit_tests() -> Result<()> {
    run(&[
        "cargo",
        "test",
        "--locked",
        "--workspace",
        "--exclude",
        "agent-ebpf",
        "--exclude",
        "cellwatch-tests",
    ])?;
    // The harness's unit tests (its address-range table) need no root.
    run(&["cargo", "test", "--locked", "-p", "cellwatch-tests", "--lib"])
}

/// The privileged integration tests on this host's kernel: all of them, then the
/// areas with fallbacks again with those forced.
fn privileged() -> Result<()> {
    let bin = root().join("target/debug/cellwatch");
    timed(
        "privileged integration tests (real eBPF, real TCP; the IPVS one runs in the kernel matrix)",
        &|| {
            run_env(
                &[
                    "cargo",
                    "test",
                    "--locked",
                    "-p",
                    "cellwatch-tests",
                    "--",
                    "--skip",
                    vm::VM_ONLY,
                ],
                &[("CELLWATCH_BIN", bin.to_str().unwrap_or_default())],
            )
        },
    )?;
    let forced_filters: Vec<String> = vm::FORCED_AREAS.iter().map(|a| format!("{a}::")).collect();
    timed(
        &format!(
            "the {} tests again with the fallbacks forced (--without {})",
            vm::FORCED_AREAS.join(", "),
            vm::FORCED
        ),
        &|| {
            let mut cmd = vec!["cargo", "test", "--locked", "-p", "cellwatch-tests", "--"];
            cmd.extend(forced_filters.iter().map(String::as_str));
            cmd.extend(["--skip", vm::VM_ONLY]);
            run_env(
                &cmd,
                &[
                    ("CELLWATCH_BIN", bin.to_str().unwrap_or_default()),
                    (vm::FORCED_ENV, vm::FORCED),
                ],
            )
        },
    )
}

/// The cargo-fuzz targets and how long CI fuzzes each: the config parser, the decoding
/// of ring-buffer records, and the query strings of the JSON endpoints.
const FUZZ_TARGETS: &[(&str, u32)] = &[("config", 40), ("ringbuf_record", 15), ("query", 15)];

/// Runs a cargo-fuzz target for a bounded time from the corpus kept in the repo; new
/// inputs go to a scratch directory so the kept corpus only grows on purpose.
fn fuzz(target: &str, seconds: u32) -> Result<()> {
    let scratch =
        std::env::temp_dir().join(format!("cellwatch-fuzz-{target}-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let kept = format!("fuzz/corpus/{target}");
    let time = format!("-max_total_time={seconds}");
    let out = std::process::Command::new("cargo")
        .args(["+nightly", "fuzz", "run", target])
        .arg(&scratch)
        .args([kept.as_str(), "--", time.as_str(), "-rss_limit_mb=2048", "-print_final_stats=1"])
        .output()?;
    let _ = std::fs::remove_dir_all(&scratch);
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        println!("{text}");
        bail!("fuzz target {target} failed; the input is under fuzz/artifacts/{target}/");
    }
    let runs = text.lines().find(|l| l.starts_with("stat::number_of_executed_units")).unwrap_or("");
    ok(&format!("{target}: no crash; {}", runs.trim()));
    Ok(())
}

/// `agent-core` and `agent-view` depend on no aya and no tokio, and they and the fuzz
/// targets build with only the stable toolchain on PATH (no bpf-linker, no nightly).
/// The crates that build on stable Rust alone.
const PURE: [&str; 2] = ["agent-core", "agent-view"];

fn core_alone() -> Result<()> {
    for krate in PURE {
        let tree = util::output(&[
            "cargo", "tree", "--locked", "-p", krate, "-e", "normal", "--prefix", "none",
        ])
        .unwrap_or_default();
        for banned in ["aya", "tokio", "agent-ebpf"] {
            if tree.lines().any(|l| l.split_whitespace().next() == Some(banned)) {
                bail!("{krate} depends on {banned}: it must stay pure");
            }
        }
    }
    let cargo = util::output(&["rustup", "which", "cargo", "--toolchain", "stable"])
        .ok_or_else(|| anyhow::anyhow!("no stable toolchain (rustup toolchain install stable)"))?;
    let bin = std::path::Path::new(cargo.trim()).parent().unwrap_or(std::path::Path::new("/"));
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let env = [("PATH", path.as_str()), ("RUSTUP_TOOLCHAIN", "stable")];
    if util::output_env(&["sh", "-c", "command -v bpf-linker"], &env).is_some() {
        bail!("bpf-linker is on the reduced PATH {path}: the check would prove nothing");
    }
    let target = root().join("target/core-alone");
    let target = target.to_str().unwrap_or("target/core-alone");
    let mut build = vec!["cargo", "build", "--locked", "--target-dir", target];
    build.extend(PURE.iter().flat_map(|k| ["-p", *k]));
    run_env(&build, &env)?;
    run_env(
        &[
            "cargo",
            "build",
            "--locked",
            "--manifest-path",
            "fuzz/Cargo.toml",
            "--target-dir",
            target,
        ],
        &env,
    )
}
