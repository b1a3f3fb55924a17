//! What is mounted where, from `/proc/self/mounts`, and mounting the two filesystems the
//! agent can mount itself (tracefs and bpffs) without racing a second agent.
use std::{
    io,
    path::{Path, PathBuf},
};

use tracing::debug;

use super::sys;

/// Mounts `fstype` at `target` unless another process (a second agent starting at the
/// same moment) just did: true if this call mounted it, false if it was already there.
pub(crate) fn mount_once(fstype: &str, target: &Path) -> io::Result<bool> {
    match sys::mount(fstype, target) {
        Ok(()) => Ok(true),
        Err(e) if Mounts::read().fstype_at(target) == Some(fstype) => {
            debug!(error = %e, fstype, "mount raced with another; it is there now");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// One line of /proc/self/mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    pub(crate) point: PathBuf,
    pub(crate) fstype: String,
}

#[derive(Debug, Default)]
pub(crate) struct Mounts(pub(crate) Vec<Mount>);

impl Mounts {
    pub(crate) fn read() -> Self {
        Self::parse(&std::fs::read_to_string("/proc/self/mounts").unwrap_or_default())
    }

    pub(crate) fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .filter_map(|l| {
                    let mut f = l.split_whitespace();
                    let (_dev, point, fstype) = (f.next()?, f.next()?, f.next()?);
                    Some(Mount { point: unescape(point).into(), fstype: fstype.to_owned() })
                })
                .collect(),
        )
    }

    /// Type of the filesystem mounted exactly at `p` (the last mount there wins).
    pub(crate) fn fstype_at(&self, p: &Path) -> Option<&str> {
        self.0.iter().rev().find(|m| m.point == p).map(|m| m.fstype.as_str())
    }

    /// The mount that holds `p`: the longest mount point that is a prefix of it.
    /// Of several mounts at that point, the last one (the one on top) holds it.
    pub(crate) fn covering(&self, p: &Path) -> Option<&Mount> {
        // `max_by_key` keeps the last of equal keys: in file order, the topmost mount.
        self.0.iter().filter(|m| p.starts_with(&m.point)).max_by_key(|m| m.point.as_os_str().len())
    }

    /// The cgroup v2 root: `/sys/fs/cgroup` on unified hosts, else the first cgroup2
    /// mount (`/sys/fs/cgroup/unified` on hybrid hosts).
    pub(crate) fn cgroup2_root(&self) -> Option<PathBuf> {
        let unified = Path::new("/sys/fs/cgroup");
        if self.fstype_at(unified) == Some("cgroup2") {
            return Some(unified.to_owned());
        }
        self.0.iter().find(|m| m.fstype == "cgroup2").map(|m| m.point.clone())
    }
}

/// /proc/mounts escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests;
