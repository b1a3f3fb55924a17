//! Idempotent set-up, by need. Building the agent needs the eBPF toolchain (the
//! nightly's `rust-src`, LLVM 22, bpf-linker); running it needs nothing installed;
//! testing it needs the rest (linters, Prometheus, qemu and the kernel matrix's tools,
//! tmux, ...). `cargo xtask run` and `demo` set up the first two groups only;
//! `cargo xtask setup` and `ci` all three. Each step says what it is for, then either
//! that it is there already or what it installs.
use anyhow::{Context, Result, bail};

use crate::util::{ok, output, run, run_env, step};

/// A Debian package and what it is for.
type Package = (&'static str, &'static str);

/// For building: bpf-linker links against libLLVM (dynamically), and must use the
/// nightly's LLVM major. `llvm-22-dev` brings `libLLVM.so` and `llvm-config`; the
/// static-linking extras (Polly, zstd) are not needed.
const BUILD_DEBIAN: &[Package] = &[("llvm-22-dev", "LLVM 22, which bpf-linker links against")];

/// For testing: what the privileged tests, the kernel matrix and the benchmarks drive.
const TEST_DEBIAN: &[Package] = &[
    ("bpftool", "the tests check that programs are unloaded; the kernel matrix's VMs run it"),
    ("iproute2", "ss in the kernel matrix's VMs, network namespaces in the enforce tests"),
    ("util-linux", "unshare, setpriv and prlimit in the tests"),
    ("libcap2-bin", "setcap: the image's file capabilities in the deploy test"),
    ("prometheus", "a real Prometheus, and promtool for the rules"),
    ("prometheus-alertmanager", "a real Alertmanager delivering the rules' alerts to the tests"),
    (
        "victoria-metrics",
        "a real VictoriaMetrics (and its vmalert) that the rules, dashboards and report must work against",
    ),
    ("libbpf-tools", "tcplife, the peer the benchmarks compare with"),
    ("qemu-system-x86", "the kernel matrix boots Debian's 6.1 and 6.12 kernels in qemu"),
    ("cpio", "the kernel matrix's initramfs"),
    ("busybox-static", "the kernel matrix's shell"),
    ("tmux", "a real terminal for the tests of the demo's screen and `cellwatch top`"),
    ("graphviz", "dot, which must draw `cellwatch report --format dot` in the tests"),
    (
        "chromium",
        "headless Chromium, which must render `cellwatch report --format html` in the tests",
    ),
    ("iptables", "kube-proxy's DNAT in the Service tests' network namespaces"),
    ("dnsmasq-base", "a real resolver in the global cell of the DNS tests and benchmarks"),
    ("dnsutils", "dig, the DNS client of the DNS tests"),
    ("dnsperf", "the DNS query flood of the benchmarks"),
    ("iperf3", "UDP throughput in the benchmarks"),
    ("ipvsadm", "kube-proxy's IPVS mode in the kernel matrix's Service test"),
];
/// Packages of [`TEST_DEBIAN`] whose install starts (and enables) a system service. The
/// tests run instances of their own on free loopback ports, so the service is stopped and
/// not started at boot: nothing of the tests' tools stays running on the machine.
const NO_SERVICE: &[&str] = &["prometheus-alertmanager", "victoria-metrics"];
const BPF_LINKER: &str = "0.13.0";
const CARGO_DENY: &str = "0.20.2";
const CARGO_FUZZ: &str = "0.13.2";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// Validates rendered manifests offline against the Kubernetes schemas it ships.
const KUBERNETES_VALIDATE: &str = "1.37.0";

/// What building and running the agent needs (`cargo xtask run`, `cargo xtask demo`).
pub(crate) fn for_agent() -> Result<()> {
    building()?;
    running();
    println!("setup: the agent can be built and run (`cargo xtask setup` adds the test tools)");
    Ok(())
}

/// Everything: building, running and testing (`cargo xtask setup`, `cargo xtask ci`).
pub(crate) fn all() -> Result<()> {
    building()?;
    running();
    testing()?;
    println!("setup: everything is in place");
    Ok(())
}

/// A group's heading: what it is for.
fn group(what: &str) {
    println!("\n== {what}");
}

fn building() -> Result<()> {
    group("for building the agent: the eBPF toolchain");
    nightly()?;
    component("rust-src", "the eBPF programs build `core` for bpfel-unknown-none from source")?;
    debian(BUILD_DEBIAN)?;
    cargo_tool(
        "bpf-linker",
        "links the eBPF object that the agent embeds",
        &["bpf-linker", "--version"],
        BPF_LINKER,
        &["--no-default-features", "--features", "llvm-22"],
        // Its work is done in libLLVM, which is optimised already. Its own code built
        // without optimisation and without the debug info its release profile asks for
        // links the agent's object byte for byte the same, as fast, and builds in 17 s
        // instead of 38 s here. The release profile otherwise: no debug assertions, no
        // overflow checks.
        &[("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0"), ("CARGO_PROFILE_RELEASE_DEBUG", "false")],
    )
}

fn running() {
    group("for running the agent: nothing to install");
    ok("it needs root (or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN), Linux 6.1 or newer with BTF,");
    ok("and cgroup v2; it mounts bpffs and tracefs itself when the node has not");
}

fn testing() -> Result<()> {
    group("for testing (cargo xtask test): linters, test tools, the kernel matrix");
    component("clippy", "lints of the eBPF crate (nightly, bpfel target)")?;
    debian(TEST_DEBIAN)?;
    no_services(NO_SERVICE)?;
    cargo_tool(
        "cargo-deny",
        "checks licences, duplicate crates and sources",
        &["cargo", "deny", "--version"],
        CARGO_DENY,
        &[],
        &[],
    )?;
    cargo_tool(
        "cargo-fuzz",
        "bounded fuzzing of the config parser, ring-buffer records and query strings",
        &["cargo", "fuzz", "--version"],
        CARGO_FUZZ,
        &[],
        &[],
    )?;
    kubernetes_validate()?;
    kubectl()
}

/// The eBPF crate builds with the machine's nightly (rustup provides it).
fn nightly() -> Result<()> {
    step("nightly toolchain: the eBPF crate builds with it");
    let toolchains = output(&["rustup", "toolchain", "list"]).context("rustup is not on PATH")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        bail!(
            "the nightly toolchain is missing: install it with `rustup toolchain install nightly`"
        );
    }
    ok("present");
    Ok(())
}

/// A component of the nightly toolchain.
fn component(name: &str, why: &str) -> Result<()> {
    step(&format!("nightly component {name}: {why}"));
    let installed =
        output(&["rustup", "component", "list", "--toolchain", "nightly", "--installed"])
            .unwrap_or_default();
    if installed.lines().any(|l| l.starts_with(name)) {
        ok("already installed");
    } else {
        run(&["rustup", "component", "add", name, "--toolchain", "nightly"])?;
        ok("installed");
    }
    Ok(())
}

fn debian(packages: &[Package]) -> Result<()> {
    step("Debian packages");
    for (name, why) in packages {
        ok(&format!("{name}: {why}"));
    }
    let missing: Vec<&str> = packages
        .iter()
        .map(|(p, _)| *p)
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

/// Stops each package's system service and keeps it from starting at boot: with systemd
/// when it runs; otherwise the unit's links go (`systemctl` works offline, else
/// `update-rc.d`) and the SysV script stops what it started (by its pid file; nothing when
/// it runs nothing).
fn no_services(units: &[&str]) -> Result<()> {
    step("system services of test tools: stopped and disabled (the tests start their own)");
    let systemd = std::path::Path::new("/run/systemd/system").exists();
    let systemctl = output(&["systemctl", "--version"]).is_some();
    for unit in units {
        if systemd {
            run(&["systemctl", "disable", "--now", "--quiet", unit])?;
        } else {
            if systemctl {
                run(&["systemctl", "disable", "--quiet", unit])?;
            } else {
                run(&["update-rc.d", unit, "disable"])?;
            }
            let script = format!("/etc/init.d/{unit}");
            if std::path::Path::new(&script).exists() {
                run(&[&script, "stop"])?;
            }
        }
        ok(&format!("{unit}: not running, not started at boot"));
    }
    Ok(())
}

fn kubernetes_validate() -> Result<()> {
    step(&format!(
        "kubernetes-validate {KUBERNETES_VALIDATE} (PyPI): validates the rendered kustomize base"
    ));
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
    step("kubectl with kustomize: renders deploy/kustomize");
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

/// A tool installed with `cargo install NAME --version V --locked`, with `extra`
/// arguments and `env` for the build.
fn cargo_tool(
    name: &str,
    why: &str,
    probe: &[&str],
    version: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Result<()> {
    step(&format!("{name} {version}: {why}"));
    if let Some(v) = output(probe) {
        ok(&format!("already installed ({})", v.trim()));
        return Ok(());
    }
    println!("    building {name} {version} from crates.io");
    let mut cmd = vec!["cargo", "install", name, "--version", version, "--locked"];
    cmd.extend(extra);
    let mut env = env.to_vec();
    env.push(("LLVM_PREFIX", LLVM_PREFIX));
    run_env(&cmd, &env)?;
    ok("installed");
    Ok(())
}
