//! The `/init` of the kernel-matrix VMs (`cargo xtask vm-test`): the xtask binary itself,
//! started by the kernel as process 1. It mounts what the agent and its tests need, brings
//! up loopback, runs the integration-test binary on the matrix's areas, prints one result
//! line per area on the serial console and powers the VM off.
#![expect(unsafe_code, reason = "mount, setrlimit and reboot through libc, as pid 1")]
use std::{
    collections::BTreeMap,
    ffi::CString,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// The areas of the integration tests (modules of the `it` binary) that run in every VM:
/// connection counting, cell verdicts, telemetry, restarts, live counting, Kubernetes
/// Services (kube-proxy's DNAT and the conntrack lookups) and the capability ladder.
pub(crate) const AREAS: &[&str] = &[
    "foundation",
    "cells",
    "telemetry",
    "restart",
    "live",
    "service_addr",
    "ladder",
    "drain",
    "udp",
];
/// The areas run a second time with the ladder's fallbacks forced (`--without FORCED` on
/// every agent they start, through the tests' `CELLWATCH_TEST_WITHOUT`): the live sweep
/// by the TCP iterator in each network namespace, and the settling of Service
/// connections by `BPF_PROG_TEST_RUN`. Their result lines are `<area>/without`.
pub(crate) const FORCED_AREAS: &[&str] = &["live", "telemetry", "service_addr", "restart"];
/// What the forced run does without.
pub(crate) const FORCED: &str = "sk_storage_iter,map_elem_iter";
/// The environment variable the tests read it from (`cellwatch_tests::WITHOUT_ENV`).
pub(crate) const FORCED_ENV: &str = "CELLWATCH_TEST_WITHOUT";
/// Every result line a VM prints: one per area, and one per forced area.
pub(crate) fn result_count() -> usize {
    AREAS.len() + FORCED_AREAS.len()
}
/// Tests of those areas the matrix leaves to the host, by name: moving more than 4 GiB
/// under software emulation would take minutes, and the VMs have no Prometheus.
const SKIPPED: &[&str] = &[
    "telemetry::a_connection_older_than_the_agent_that_moved_over_4_gib",
    "service_addr::a_leak_through_a_service_address_fires_cross_cell_leakage",
    // A pool in Python, drain-status and alerts through Prometheus and Alertmanager: the
    // VMs have none of them (the kernel side of drains, `drain: refuse` and the deadlines,
    // runs there in the area's other tests).
    "drain::a_drained_cell_counts_what_opens_into_it_and_names_its_pooled_connections",
    "drain::a_drain_leak_reaches_alertmanager_with_its_runbook_then_resolves",
    // `cellwatch report` reads a real Prometheus (the resolver's counts run in the VMs).
    "udp::the_report_names_the_resolvers_clients_as_its_blast_radius",
];
/// The test the host's run leaves to the VMs: this host's kernel has no IPVS, Debian's
/// 6.1 and 6.12 kernels do.
pub(crate) const VM_ONLY: &str = "service_addr::ipvs_pod_clients_count_under_the_pod_they_reach";
/// Where the integration-test binary is in the initramfs.
pub(crate) const TESTS: &str = "/tests/it";
/// Marks an area's result line on the console:
/// `CELLWATCH-VM <area> <pass|fail> <passed>/<tests>`.
pub(crate) const RESULT: &str = "CELLWATCH-VM";
/// Marks the end of the run, so a VM that dies early is told from one that finished:
/// `CELLWATCH-VM-DONE <pass|fail> <seconds>`, `fail` when the test binary did.
pub(crate) const DONE: &str = "CELLWATCH-VM-DONE";

pub(crate) fn main() -> ! {
    for (fstype, target) in [
        ("proc", "/proc"),
        ("sysfs", "/sys"),
        ("devtmpfs", "/dev"),
        ("tmpfs", "/tmp"),
        // `ip netns` keeps its namespaces under /run/netns, bind mounts on a tmpfs.
        ("tmpfs", "/run"),
        ("cgroup2", "/sys/fs/cgroup"),
        ("bpf", "/sys/fs/bpf"),
        ("tracefs", "/sys/kernel/tracing"),
    ] {
        if let Err(e) = mount(fstype, target) {
            println!("init: mount {fstype} on {target}: {e}");
        }
    }
    let busybox = Command::new("/bin/busybox").args(["--install", "-s", "/bin"]).status();
    let lo = Command::new("/bin/busybox").args(["ip", "link", "set", "lo", "up"]).status();
    println!("init: busybox {busybox:?}, lo up {lo:?}");
    raise_nofile(65_536);
    let mut modules: Vec<_> = std::fs::read_dir("/modules")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    modules.sort();
    for m in &modules {
        let loaded = Command::new("/bin/busybox").arg("insmod").arg(m).status();
        println!("init: insmod {}: {loaded:?}", m.display());
    }
    let uname = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("init: kernel {}", uname.trim());

    let started = Instant::now();
    let passed = run_tests();
    let secs = started.elapsed().as_secs_f64();
    println!("{DONE} {} {secs:.1}", if passed { "pass" } else { "fail" });
    // SAFETY: sync and reboot take no pointers; this process is the VM's init and has
    // nothing left to do.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // Only reached if the power-off failed: idle rather than panic (which the kernel
    // would turn into a hang until the host's timeout).
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The test binary with one name filter per area (`foundation::` ...), as libtest takes
/// them; with the fallbacks forced when `forced`.
fn tests(areas: &[&str], forced: bool, extra: &[&str]) -> Command {
    let mut c = Command::new(TESTS);
    c.args(extra)
        .args(areas.iter().map(|a| format!("{a}::")))
        .args(SKIPPED.iter().flat_map(|t| ["--skip", t]))
        .env("CELLWATCH_BIN", "/bin/cellwatch")
        .env("PATH", "/bin:/sbin:/usr/bin:/usr/sbin")
        .env("HOME", "/tmp")
        .env("RUST_BACKTRACE", "0")
        .env("CELLWATCH_IN_VM", "1");
    if forced {
        c.env(FORCED_ENV, FORCED);
    }
    c
}

/// Both runs: every area as the kernel grants it, then the forced areas with the
/// fallbacks. True when both passed.
fn run_tests() -> bool {
    let plain = run_pass(AREAS, false);
    let forced = run_pass(FORCED_AREAS, true);
    plain && forced
}

/// Runs the areas' tests in one run of the binary, its output echoed to the console, and
/// prints a result line per area: it passes when it has tests and every one of them
/// passed. True when the binary passed.
fn run_pass(names: &[&str], forced: bool) -> bool {
    // The tests of each area, so that an area whose tests did not all report is a failure.
    let listed = match tests(names, forced, &["--list"]).stderr(Stdio::inherit()).output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        Err(e) => {
            println!("init: cannot run {TESTS}: {e}");
            String::new()
        }
    };
    let mut areas: BTreeMap<&str, (usize, usize)> = names.iter().map(|a| (*a, (0, 0))).collect();
    for name in listed.lines().filter_map(|l| l.strip_suffix(": test")) {
        if let Some(n) = area_of(&mut areas, name) {
            n.1 += 1;
        }
    }
    let status = tests(names, forced, &[]).stdout(Stdio::piped()).spawn().and_then(|mut child| {
        if let Some(out) = child.stdout.take() {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                println!("{line}");
                // libtest: `test <area>::<name> ... ok`.
                let Some(name) = line.strip_prefix("test ").and_then(|l| l.strip_suffix(" ... ok"))
                else {
                    continue;
                };
                if let Some(n) = area_of(&mut areas, name) {
                    n.0 += 1;
                }
            }
        }
        child.wait()
    });
    let ok = status.as_ref().is_ok_and(|s| s.success());
    if let Err(e) = status {
        println!("init: cannot run {TESTS}: {e}");
    }
    let suffix = if forced { "/without" } else { "" };
    for (area, (passed, total)) in &areas {
        let verdict = if *total > 0 && passed == total { "pass" } else { "fail" };
        println!("{RESULT} {area}{suffix} {verdict} {passed}/{total}");
    }
    ok
}

/// The (passed, listed) counts of the area a test `<area>::<name>` belongs to.
fn area_of<'a>(
    areas: &'a mut BTreeMap<&str, (usize, usize)>,
    test: &str,
) -> Option<&'a mut (usize, usize)> {
    let (area, _) = test.split_once("::")?;
    areas.get_mut(area)
}

fn mount(fstype: &str, target: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(target)?;
    let (src, tgt) = (CString::new(fstype)?, CString::new(target)?);
    // SAFETY: the pointers are valid NUL-terminated strings that outlive the call; a null
    // data pointer is allowed for these filesystems.
    let rc = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), src.as_ptr(), 0, std::ptr::null()) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

fn raise_nofile(n: libc::rlim_t) {
    let lim = libc::rlimit { rlim_cur: n, rlim_max: n };
    // SAFETY: `lim` is a valid rlimit that lives across the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        println!("init: RLIMIT_NOFILE: {}", std::io::Error::last_os_error());
    }
}
