//! The few raw system calls the agent makes itself, each behind a safe function.
//! Everything else in the agent is `#![forbid(unsafe_code)]`.
use std::{ffi::CString, io, os::unix::ffi::OsStrExt, path::Path};

/// `mount -t FSTYPE FSTYPE TARGET`.
pub(crate) fn mount(fstype: &str, target: &Path) -> io::Result<()> {
    let src = CString::new(fstype).map_err(io::Error::other)?;
    let tgt = CString::new(target.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call; a
    // null data pointer is allowed for these filesystems.
    let rc = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), src.as_ptr(), 0, std::ptr::null()) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Lifts RLIMIT_MEMLOCK, which bounds map memory on kernels before 5.11 (newer kernels
/// charge maps to the cgroup instead). Failure is harmless there and reported.
pub(crate) fn raise_memlock() -> io::Result<()> {
    let lim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: `lim` is a valid rlimit that lives across the call.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// The running kernel's release, e.g. `6.18.44`.
pub(crate) fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec that lives across the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}
