//! The initramfs of the kernel-matrix VMs: the integration-test binary, the agent, the
//! tools the tests call and every library they load, with this very binary as `/init`;
//! and per kernel, its sock_diag modules appended.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use super::init;

/// Kernel modules a node loads on demand and the tests need: sock_diag for TCP (the
/// agent's seeding and its `/connections` details, and `ss`), veth and netem for the
/// live area's slow, lossy path between network namespaces, and what kube-proxy's
/// iptables (nft) DNAT and REJECT, its IPVS mode and the agent's conntrack lookups
/// (ctnetlink) need in the service_addr area. Loaded by /init in this order, each after the modules it depends on.
const MODULES: &[&str] = &[
    "net/ipv4/inet_diag",
    "net/ipv4/tcp_diag",
    "drivers/net/veth",
    "net/sched/sch_netem",
    "net/netfilter/nfnetlink",
    "net/ipv4/netfilter/nf_defrag_ipv4",
    "net/ipv6/netfilter/nf_defrag_ipv6",
    "lib/libcrc32c",
    "net/netfilter/nf_conntrack",
    "net/netfilter/nf_conntrack_netlink",
    "net/netfilter/ipvs/ip_vs",
    "net/netfilter/ipvs/ip_vs_rr",
    "net/netfilter/nf_nat",
    "net/netfilter/nf_tables",
    "net/netfilter/nft_chain_nat",
    "net/netfilter/x_tables",
    "net/netfilter/nft_compat",
    "net/netfilter/nft_nat",
    "net/netfilter/xt_nat",
    "net/netfilter/xt_tcpudp",
    "net/ipv4/netfilter/nf_reject_ipv4",
    "net/ipv4/netfilter/ipt_REJECT",
    "net/ipv6/netfilter/nf_reject_ipv6",
    "net/ipv6/netfilter/ip6t_REJECT",
    "net/netfilter/nft_reject",
    "net/netfilter/nft_reject_inet",
];
/// Host tools the tests call, copied in with their libraries (busybox gives the rest):
/// where each is on the host, and where it goes. iproute2's `ip` and `tc` go to /bin, so
/// busybox's smaller applets of the same names (installed there without overwriting) do
/// not shadow them: the tests need `ip netns` and netem.
const TOOLS: &[(&str, &str)] = &[
    ("/usr/sbin/bpftool", "/usr/sbin/bpftool"),
    ("/usr/bin/prlimit", "/usr/bin/prlimit"),
    ("/usr/bin/ss", "/usr/bin/ss"),
    ("/usr/bin/ip", "/bin/ip"),
    ("/usr/sbin/tc", "/bin/tc"),
    ("/usr/bin/nsenter", "/usr/bin/nsenter"),
    ("/usr/sbin/ipvsadm", "/usr/sbin/ipvsadm"),
    // The udp area's resolver and its client.
    ("/usr/sbin/dnsmasq", "/usr/sbin/dnsmasq"),
    ("/usr/bin/dig", "/usr/bin/dig"),
    // iptables-nft picks its mode by the name it is called under.
    ("/usr/sbin/xtables-nft-multi", "/usr/sbin/iptables"),
    ("/usr/sbin/xtables-nft-multi", "/usr/sbin/ip6tables"),
];
/// iptables' extensions (matches and targets), loaded by name at run time.
const XTABLES: &str = "/usr/lib/x86_64-linux-gnu/xtables";
/// The integration-test target (`tests/tests/it/`).
const TEST_TARGET: &str = "it";

/// Builds the integration-test binary (`cargo test --no-run`) and finds its executable
/// in cargo's JSON messages.
pub(super) fn test_binary() -> Result<PathBuf> {
    let out = Command::new("cargo")
        .args(["test", "--locked", "-p", "cellwatch-tests", "--no-run", "--message-format=json"])
        .args(["--test", TEST_TARGET])
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("building the test binary failed");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| {
            l.contains(&format!("\"name\":\"{TEST_TARGET}\"")) && l.contains("\"kind\":[\"test\"]")
        })
        .with_context(|| format!("no test executable for {TEST_TARGET}"))?;
    let exe = line
        .split("\"executable\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .with_context(|| format!("no executable path for {TEST_TARGET}"))?;
    Ok(PathBuf::from(exe))
}

/// Builds `work/initramfs.cpio` from a fresh `work/root`.
pub(super) fn initramfs(work: &Path, agent: &Path, tests: &Path) -> Result<PathBuf> {
    let root_dir = work.join("root");
    if root_dir.exists() {
        std::fs::remove_dir_all(&root_dir)?;
    }
    for d in
        ["bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "tests", "etc", "run"]
    {
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
    put(agent, "/bin/cellwatch")?;
    put(tests, init::TESTS)?;
    for (tool, to) in TOOLS {
        let p = Path::new(tool);
        if !p.exists() {
            bail!("{tool} is missing: run `cargo xtask setup`");
        }
        put(p, to)?;
    }
    let xt = root_dir.join(XTABLES.trim_start_matches('/'));
    std::fs::create_dir_all(&xt)?;
    for e in std::fs::read_dir(XTABLES)
        .with_context(|| format!("{XTABLES} is missing: run `cargo xtask setup`"))?
    {
        let p = e?.path();
        std::fs::copy(&p, xt.join(p.file_name().unwrap_or_default()))?;
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
    std::fs::write(root_dir.join("etc/group"), "root:x:0:\n")?;
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
pub(super) fn with_modules(common: &Path, vmlinuz: &Path, work: &Path) -> Result<PathBuf> {
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
        let dst = stage.join(format!("modules/{i:02}-{name}.ko"));
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
