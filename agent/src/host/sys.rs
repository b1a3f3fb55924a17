//! The few raw system calls the agent makes itself, each behind a safe function but
//! `bpf_map_lookup_batch`, whose caller vouches for the sizes the kernel writes.
#![expect(unsafe_code, reason = "raw system calls through libc")]
use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

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
/// Hands the allocator's free memory back to the kernel, in every thread's arena: a large
/// scrape or the start's BTF parse leaves tens of MiB freed but resident otherwise.
pub(crate) fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

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

const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_ITER_CREATE: libc::c_long = 33;
const BPF_TRACE_ITER: u32 = 28;

/// The `bpf(2)` attributes of `BPF_OBJ_GET` (the leading fields of `union bpf_attr`).
#[repr(C)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// The `bpf(2)` attributes of `BPF_LINK_UPDATE`.
#[repr(C)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// The `bpf(2)` attributes of `BPF_LINK_CREATE` for an iterator over a map's elements.
#[repr(C)]
struct IterLinkAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    iter_info: u64,
    iter_info_len: u32,
    _pad: u32,
}

/// `union bpf_iter_link_info` for a map iterator.
#[repr(C)]
struct IterMapInfo {
    map_fd: u32,
    _pad: u32,
}

/// The `bpf(2)` attributes of `BPF_PROG_TEST_RUN` (`test` in `union bpf_attr`).
#[repr(C)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// The `bpf(2)` attributes of `BPF_ITER_CREATE`.
#[repr(C)]
struct IterCreateAttr {
    link_fd: u32,
    flags: u32,
}

/// `bpf(cmd, attr, sizeof attr)`; the kernel reads only `size_of::<T>()` bytes.
fn bpf<T>(cmd: libc::c_long, attr: &T) -> io::Result<libc::c_long> {
    let size = u32::try_from(std::mem::size_of::<T>()).map_err(io::Error::other)?;
    // SAFETY: `attr` is a valid, initialised #[repr(C)] prefix of `union bpf_attr` that
    // outlives the call, and its exact size is passed; the kernel treats the rest as zero.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const T, size) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// The `bpf(2)` attributes of `BPF_MAP_LOOKUP_BATCH`.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Where a batched walk of a hash map stands.
#[derive(Default)]
pub(crate) struct Batch {
    /// The kernel's position (a bucket), after the first step.
    at: Option<u32>,
    pub(crate) done: bool,
}

/// One step of `BPF_MAP_LOOKUP_BATCH` over a hash map: up to `room` entries from where
/// `batch` stands, keys into `keys` (`key_size` each) and values into `values`
/// (`value_size` each: for a per-CPU map, the 8-aligned value times the possible CPUs).
/// How many came; `batch` moves on, and says when the map is done.
///
/// # Safety
/// The kernel writes each entry at the map's own key and value size, not at the sizes
/// given here: `key_size` and `value_size` must be the map's key size and value size
/// (for a per-CPU map, the 8-aligned value times the possible CPUs), so that `keys` and
/// `values` hold at least `count` × the map's key size and `count` × its value size for
/// the `count` this step asks for.
pub(crate) unsafe fn bpf_map_lookup_batch(
    map: BorrowedFd<'_>,
    batch: &mut Batch,
    (keys, key_size): (&mut [u8], usize),
    (values, value_size): (&mut [u8], usize),
) -> io::Result<usize> {
    let room = (keys.len() / key_size.max(1)).min(values.len() / value_size.max(1));
    let mut out: u32 = 0;
    let mut attr = BatchAttr {
        in_batch: batch.at.as_ref().map_or(0, |b| std::ptr::from_ref(b) as u64),
        out_batch: (&raw mut out) as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: u32::try_from(room).map_err(io::Error::other)?,
        map_fd: fd_u32(map)?,
        elem_flags: 0,
        flags: 0,
    };
    let size = u32::try_from(size_of::<BatchAttr>()).map_err(io::Error::other)?;
    // SAFETY: `attr` is a valid #[repr(C)] prefix of `union bpf_attr`; the kernel writes
    // at most `count` keys and values into buffers that hold that many at the map's own
    // sizes (the caller's contract), the position into `out`, and the number written
    // back into `attr.count`.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_BATCH, &raw mut attr, size) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        // The end of the map: what this last step found is in `count`.
        if e.raw_os_error() == Some(libc::ENOENT) {
            batch.done = true;
            return usize::try_from(attr.count).map_err(io::Error::other);
        }
        return Err(e);
    }
    batch.at = Some(out);
    usize::try_from(attr.count).map_err(io::Error::other)
}

/// Opens the BPF object (map, program or link) pinned at `path`.
pub(crate) fn bpf_obj_get(path: &Path) -> io::Result<OwnedFd> {
    let p = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let attr = ObjGetAttr { pathname: p.as_ptr() as u64, bpf_fd: 0, file_flags: 0 };
    owned(bpf(BPF_OBJ_GET, &attr)?)
}

/// Makes the link `link` run `prog` instead of its current program, atomically: no
/// event is missed or seen twice across the switch.
pub(crate) fn bpf_link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let attr = LinkUpdateAttr {
        link_fd: fd_u32(link)?,
        new_prog_fd: fd_u32(prog)?,
        flags: 0,
        old_prog_fd: 0,
    };
    bpf(BPF_LINK_UPDATE, &attr).map(drop)
}

/// The descriptor `bpf(2)` returned.
fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    let fd = i32::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A link of the iterator program `prog` over the elements of `map` (aya links
/// iterators without a map only).
pub(crate) fn bpf_map_iter_link(prog: BorrowedFd<'_>, map: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let info = IterMapInfo { map_fd: fd_u32(map)?, _pad: 0 };
    let attr = IterLinkAttr {
        prog_fd: fd_u32(prog)?,
        target_fd: 0,
        attach_type: BPF_TRACE_ITER,
        flags: 0,
        iter_info: (&raw const info) as u64,
        iter_info_len: u32::try_from(size_of::<IterMapInfo>()).map_err(io::Error::other)?,
        _pad: 0,
    };
    owned(bpf(BPF_LINK_CREATE, &attr)?)
}

/// A link of the iterator program `prog` over a target that takes no map (`tcp`).
pub(crate) fn bpf_iter_link(prog: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let attr = IterLinkAttr {
        prog_fd: fd_u32(prog)?,
        target_fd: 0,
        attach_type: BPF_TRACE_ITER,
        flags: 0,
        iter_info: 0,
        iter_info_len: 0,
        _pad: 0,
    };
    owned(bpf(BPF_LINK_CREATE, &attr)?)
}

/// Runs the raw-tracepoint program `prog` once, on this CPU, with `args` as its
/// arguments (`BPF_PROG_TEST_RUN`); its return value.
pub(crate) fn bpf_prog_test_run(prog: BorrowedFd<'_>, args: &[u64]) -> io::Result<u32> {
    let attr = TestRunAttr {
        prog_fd: fd_u32(prog)?,
        retval: 0,
        data_size_in: 0,
        data_size_out: 0,
        data_in: 0,
        data_out: 0,
        repeat: 0,
        duration: 0,
        ctx_size_in: u32::try_from(size_of_val(args)).map_err(io::Error::other)?,
        ctx_size_out: 0,
        ctx_in: args.as_ptr() as u64,
        ctx_out: 0,
        flags: 0,
        cpu: 0,
        batch_size: 0,
        _pad: 0,
    };
    let size = u32::try_from(size_of::<TestRunAttr>()).map_err(io::Error::other)?;
    let mut attr = attr;
    // SAFETY: `attr` is a valid #[repr(C)] prefix of `union bpf_attr` whose `ctx_in`
    // points to `ctx_size_in` readable bytes (`args`, alive across the call); the kernel
    // writes back only `retval` and `duration` into `attr` itself.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_TEST_RUN, &raw mut attr, size) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(attr.retval) }
}

/// Makes a blocking receive on `socket` fail (EAGAIN) after `limit`.
pub(crate) fn set_recv_timeout(
    socket: std::os::fd::RawFd,
    limit: std::time::Duration,
) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(limit.as_secs()).map_err(io::Error::other)?,
        tv_usec: libc::suseconds_t::from(limit.subsec_micros()),
    };
    let len = libc::socklen_t::try_from(size_of::<libc::timeval>()).map_err(io::Error::other)?;
    // SAFETY: `tv` is a valid timeval that lives across the call, and `len` is its size;
    // a descriptor that is no socket only makes the call fail.
    let rc = unsafe {
        libc::setsockopt(socket, libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&raw const tv).cast(), len)
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Moves the calling thread into the network namespace `ns` (an open `/proc/PID/ns/net`
/// or a bind mount of one). Only the calling thread moves.
pub(crate) fn setns_net(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns takes a descriptor and a flag; it reads no memory of ours.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// A new run of an iterator link: reading the file to its end runs the program once
/// per element.
pub(crate) fn bpf_iter_create(link: BorrowedFd<'_>) -> io::Result<std::fs::File> {
    let attr = IterCreateAttr { link_fd: fd_u32(link)?, flags: 0 };
    owned(bpf(BPF_ITER_CREATE, &attr)?).map(std::fs::File::from)
}

fn fd_u32(fd: BorrowedFd<'_>) -> io::Result<u32> {
    u32::try_from(fd.as_raw_fd()).map_err(io::Error::other)
}
