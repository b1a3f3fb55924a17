//! The `/init` of the kernel-matrix VMs (`cargo xtask vm-test`): the xtask binary itself,
//! started by the kernel as process 1. It mounts what the agent and its tests need, brings
//! up loopback, runs every test binary under `/tests`, prints one result line each on the
//! serial console and powers the VM off.
use std::{
    ffi::CString,
    process::Command,
    time::{Duration, Instant},
};

/// Marks a result line on the console: `CELLWATCH-VM <test> <pass|fail> <seconds>`.
pub(crate) const RESULT: &str = "CELLWATCH-VM";
/// Marks the end of the run, so a VM that dies early is told from one that finished.
pub(crate) const DONE: &str = "CELLWATCH-VM-DONE";

pub(crate) fn main() -> ! {
    for (fstype, target) in [
        ("proc", "/proc"),
        ("sysfs", "/sys"),
        ("devtmpfs", "/dev"),
        ("tmpfs", "/tmp"),
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

    let mut tests: Vec<_> = std::fs::read_dir("/tests")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    tests.sort();
    for t in &tests {
        let name = t.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_owned();
        let started = Instant::now();
        let status = Command::new(t)
            .env("CELLWATCH_BIN", "/bin/cellwatch")
            .env("PATH", "/bin:/sbin:/usr/bin:/usr/sbin")
            .env("HOME", "/tmp")
            .env("RUST_BACKTRACE", "0")
            .env("CELLWATCH_IN_VM", "1")
            .status();
        let ok = status.as_ref().is_ok_and(|s| s.success());
        let secs = started.elapsed().as_secs_f64();
        println!("{RESULT} {name} {} {secs:.1}", if ok { "pass" } else { "fail" });
        if let Err(e) = status {
            println!("init: cannot run {}: {e}", t.display());
        }
    }
    println!("{DONE} {}", tests.len());
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
