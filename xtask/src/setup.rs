//! Idempotent installation of what the eBPF build and the tests need. Each step says
//! what it checks, and either that it is already there or what it installs.
use anyhow::{Context, Result, bail};

use crate::util::{ok, output, run, run_env, step};

/// Debian packages: LLVM 22 for bpf-linker (it must match the nightly's LLVM), and the
/// tools the privileged tests and benchmarks drive (Prometheus and promtool, setcap for
/// the image's file capabilities, and tcplife from libbpf-tools as the peer in the churn
/// benchmark).
const DEBIAN: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "bpftool",
    "iproute2",
    "util-linux",
    "libcap2-bin",
    "prometheus",
    "libbpf-tools",
    // The kernel matrix (`vm-test`): qemu, cpio for the initramfs, busybox for its shell.
    "qemu-system-x86",
    "cpio",
    "busybox-static",
];
const BPF_LINKER: &str = "0.13.0";
const CARGO_DENY: &str = "0.20.2";
const CARGO_FUZZ: &str = "0.13.2";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// Validates rendered manifests offline against the Kubernetes schemas it ships.
const KUBERNETES_VALIDATE: &str = "1.37.0";

pub(crate) fn all() -> Result<()> {
    nightly()?;
    debian()?;
    cargo_tool(
        "bpf-linker",
        &["bpf-linker", "--version"],
        BPF_LINKER,
        &["--no-default-features", "--features", "llvm-22"],
    )?;
    cargo_tool("cargo-deny", &["cargo", "deny", "--version"], CARGO_DENY, &[])?;
    cargo_tool("cargo-fuzz", &["cargo", "fuzz", "--version"], CARGO_FUZZ, &[])?;
    kubernetes_validate()?;
    kubectl()?;
    println!("setup: everything is in place");
    Ok(())
}

/// The eBPF crate builds with the machine's nightly and its `rust-src` (build-std);
/// its lints need the nightly's clippy.
fn nightly() -> Result<()> {
    step("nightly toolchain");
    let toolchains = output(&["rustup", "toolchain", "list"]).context("rustup is not on PATH")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        bail!(
            "the nightly toolchain is missing: install it with `rustup toolchain install nightly`"
        );
    }
    ok("present");
    let installed =
        output(&["rustup", "component", "list", "--toolchain", "nightly", "--installed"])
            .unwrap_or_default();
    for component in ["rust-src", "clippy"] {
        step(&format!("nightly component {component}"));
        if installed.lines().any(|l| l.starts_with(component)) {
            ok("already installed");
        } else {
            run(&["rustup", "component", "add", component, "--toolchain", "nightly"])?;
            ok("installed");
        }
    }
    Ok(())
}

fn debian() -> Result<()> {
    step(&format!("Debian packages ({})", DEBIAN.join(", ")));
    let missing: Vec<&str> = DEBIAN
        .iter()
        .copied()
        .filter(|p| {
            output(&["dpkg-query", "-W", "-f=${Status}", p])
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        ok("already installed");
        return Ok(());
    }
    println!("    installing {}", missing.join(" "));
    run(&["apt-get", "update", "-qq"])?;
    let mut cmd = vec!["apt-get", "install", "-y", "-qq", "--no-install-recommends"];
    cmd.extend(&missing);
    run_env(&cmd, &[("DEBIAN_FRONTEND", "noninteractive")])?;
    ok("installed");
    Ok(())
}

fn kubernetes_validate() -> Result<()> {
    step(&format!("kubernetes-validate {KUBERNETES_VALIDATE} (PyPI)"));
    if let Some(v) = output(&["kubernetes-validate", "--version"]) {
        ok(&format!("already installed ({})", v.trim()));
        return Ok(());
    }
    let pkg = format!("kubernetes-validate=={KUBERNETES_VALIDATE}");
    run(&["python3", "-m", "pip", "install", "--quiet", "--root-user-action=ignore", &pkg])?;
    ok("installed");
    Ok(())
}

/// `kubectl kustomize` renders deploy/kustomize. This machine kind ships kubectl (with
/// the Google Cloud CLI); Debian's own `kubernetes-client` is too old for the base.
fn kubectl() -> Result<()> {
    step("kubectl with kustomize");
    match output(&["kubectl", "version", "--client"]) {
        Some(v) if v.contains("Kustomize Version: v5") => {
            ok(&format!("present ({})", v.lines().next().unwrap_or("").trim()));
            Ok(())
        }
        _ => bail!(
            "kubectl with kustomize v5 (kubectl 1.27 or newer) is needed to render \
             deploy/kustomize; install it from https://kubernetes.io/releases/download/"
        ),
    }
}

/// A tool installed with `cargo install NAME --version V --locked`.
fn cargo_tool(name: &str, probe: &[&str], version: &str, extra: &[&str]) -> Result<()> {
    step(&format!("{name} {version}"));
    if let Some(v) = output(probe) {
        ok(&format!("already installed ({})", v.trim()));
        return Ok(());
    }
    println!("    building {name} {version} from crates.io (a few minutes)");
    let mut cmd = vec!["cargo", "install", name, "--version", version, "--locked"];
    cmd.extend(extra);
    run_env(&cmd, &[("LLVM_PREFIX", LLVM_PREFIX)])?;
    ok("installed");
    Ok(())
}
