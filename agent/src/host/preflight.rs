//! Start-up checks of the node: privilege, BTF, tracefs, cgroup v2 and bpffs. Each
//! missing piece is either fixed (a filesystem mounted) or reported as one sentence that
//! says what is missing and what to do, before anything is loaded.
#![forbid(unsafe_code)]

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
};

use tracing::{debug, info};

use super::{
    bpffs::PinDir,
    mounts::{Mounts, mount_once},
    sys,
};

/// Capabilities the agent needs on kernels >= 5.8, by bit number.
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;
pub(crate) const REQUIRED_CAPS: [(u32, &str); 3] =
    [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON"), (CAP_NET_ADMIN, "CAP_NET_ADMIN")];

const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";
pub(crate) const TRACEFS_PATH: &str = "/sys/kernel/tracing";
const BPFFS_ROOT: &str = "/sys/fs/bpf";

#[derive(Debug, thiserror::Error)]
pub(crate) enum PreflightError {
    #[error(
        "this process lacks {missing}, which cellwatch needs to load and attach its eBPF \
         programs; run it as root or grant CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN"
    )]
    MissingCapabilities { missing: CapList },
    #[error(
        "this kernel exposes no BTF ({BTF_PATH} is missing); cellwatch supports kernels built \
         with CONFIG_DEBUG_INFO_BTF=y, as every major distribution's 5.10+ kernel is"
    )]
    NoBtf,
    #[error(
        "tracefs is not mounted at {TRACEFS_PATH} and cellwatch could not mount it ({source}); \
         mount it with `mount -t tracefs tracefs {TRACEFS_PATH}`"
    )]
    NoTracefs { source: io::Error },
    #[error(
        "no cgroup v2 hierarchy is mounted, and cellwatch attaches its connection tracker to \
         the cgroup v2 root; mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified` or \
         pass --cgroup"
    )]
    NoCgroup2,
    #[error("--cgroup {path} is not a cgroup v2 directory")]
    NotCgroup2 { path: PathBuf },
    #[error(
        "{dir} is not on a bpf filesystem and cellwatch could not mount one at {root} \
         ({source}); mount it with `mount -t bpf bpf {root}`"
    )]
    NoBpffs { dir: PathBuf, root: PathBuf, source: io::Error },
    #[error("--bpffs {dir} is not under a bpf filesystem; use a directory below {BPFFS_ROOT}")]
    BpffsOutside { dir: PathBuf },
    #[error(
        "tracefs at {TRACEFS_PATH} is readable by root only here, and this process runs as \
         uid {uid} without CAP_DAC_READ_SEARCH; grant CAP_DAC_READ_SEARCH too, or run as root"
    )]
    TracefsDenied { uid: u32 },
    #[error(
        "cannot create the pin directory {dir} as uid {uid} ({source}); create it owned by \
         that uid (the DaemonSet's init container does), or run as root"
    )]
    PinDir { dir: PathBuf, uid: u32, source: io::Error },
}

/// Names of missing capabilities, rendered as "CAP_BPF and CAP_PERFMON".
#[derive(Debug)]
pub(crate) struct CapList(pub(crate) Vec<&'static str>);

impl fmt::Display for CapList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        for (i, c) in self.0.iter().enumerate() {
            let sep = match (i, n - i) {
                (0, _) => "",
                (_, 1) => " and ",
                _ => ", ",
            };
            write!(f, "{sep}{c}")?;
        }
        Ok(())
    }
}

/// What the node offers, once the checks passed.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) cgroup_root: PathBuf,
    pub(crate) kernel: String,
}

/// Runs every check, mounting tracefs and bpffs when missing.
pub(crate) fn check(cgroup: Option<&Path>, bpffs: &Path) -> Result<Node, PreflightError> {
    check_capabilities(effective_caps())?;
    if !Path::new(BTF_PATH).exists() {
        return Err(PreflightError::NoBtf);
    }
    let mounts = Mounts::read();
    ensure_tracefs(&mounts)?;
    let cgroup_root = match cgroup {
        Some(p) if mounts.fstype_at(p) == Some("cgroup2") => p.to_owned(),
        Some(p) => return Err(PreflightError::NotCgroup2 { path: p.to_owned() }),
        None => mounts.cgroup2_root().ok_or(PreflightError::NoCgroup2)?,
    };
    ensure_bpffs(&mounts, bpffs)?;
    ensure_pin_dir(bpffs)?;
    if let Err(e) = sys::raise_memlock() {
        debug!(error = %e, "could not raise RLIMIT_MEMLOCK (only needed before Linux 5.11)");
    }
    Ok(Node { cgroup_root, kernel: sys::kernel_release() })
}

/// Effective capability bits of this process (0 when unreadable).
pub(crate) fn effective_caps() -> u64 {
    status_field("CapEff:").and_then(|v| u64::from_str_radix(v.trim(), 16).ok()).unwrap_or(0)
}

/// The value of a `/proc/self/status` line, after its `key`.
fn status_field(key: &str) -> Option<String> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix(key)).map(str::to_owned)
}

/// CAP_SYS_ADMIN alone also suffices (it is what kernels before 5.8 ask for).
pub(crate) fn check_capabilities(caps: u64) -> Result<(), PreflightError> {
    let has = |bit: u32| caps & (1u64 << bit) != 0;
    if has(CAP_SYS_ADMIN) && has(CAP_NET_ADMIN) {
        return Ok(());
    }
    let missing: Vec<_> =
        REQUIRED_CAPS.iter().filter(|(bit, _)| !has(*bit)).map(|(_, n)| *n).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PreflightError::MissingCapabilities { missing: CapList(missing) })
    }
}

fn ensure_tracefs(mounts: &Mounts) -> Result<(), PreflightError> {
    let path = Path::new(TRACEFS_PATH);
    if mounts.fstype_at(path) == Some("tracefs") {
        return readable_tracefs();
    }
    match mount_once("tracefs", path) {
        Ok(true) => info!(path = TRACEFS_PATH, "mounted tracefs"),
        Ok(false) => debug!(path = TRACEFS_PATH, "tracefs was mounted meanwhile"),
        Err(source) => return Err(PreflightError::NoTracefs { source }),
    }
    readable_tracefs()
}

/// tracefs is often mode 0700, root's: an agent running as another user reads the
/// tracepoints' ids and formats there only with CAP_DAC_READ_SEARCH.
fn readable_tracefs() -> Result<(), PreflightError> {
    match fs::read_dir(Path::new(TRACEFS_PATH).join("events/tcp")) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            Err(PreflightError::TracefsDenied { uid: uid() })
        }
        _ => Ok(()),
    }
}

/// The pin directory and its two subdirectories exist and are this process's to write.
fn ensure_pin_dir(dir: &Path) -> Result<(), PreflightError> {
    PinDir::new(dir).create().map_err(|source| PreflightError::PinDir {
        dir: dir.to_owned(),
        uid: uid(),
        source,
    })
}

/// The real uid of this process.
fn uid() -> u32 {
    status_field("Uid:").and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(u32::MAX)
}

fn ensure_bpffs(mounts: &Mounts, dir: &Path) -> Result<(), PreflightError> {
    if mounts.covering(dir).is_some_and(|m| m.fstype == "bpf") {
        return Ok(());
    }
    let root = Path::new(BPFFS_ROOT);
    if !dir.starts_with(root) {
        return Err(PreflightError::BpffsOutside { dir: dir.to_owned() });
    }
    match mount_once("bpf", root) {
        Ok(true) => info!(path = BPFFS_ROOT, "mounted the bpf filesystem"),
        Ok(false) => debug!(path = BPFFS_ROOT, "the bpf filesystem was mounted meanwhile"),
        Err(source) => {
            return Err(PreflightError::NoBpffs {
                dir: dir.to_owned(),
                root: root.to_owned(),
                source,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
