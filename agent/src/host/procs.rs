//! Which process holds a socket: a scan of `/proc/*/fd` for `socket:[INODE]`. Used only
//! for sockets whose owner the kernel did not record (the server side of a connection).
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};

/// Most processes one scan looks at.
const SCAN_LIMIT: usize = 65_536;

/// pid and comm of the processes holding `inodes` (those found).
pub(crate) fn holders(inodes: &HashSet<u32>) -> HashMap<u32, (u32, String)> {
    let mut found = HashMap::new();
    if inodes.is_empty() {
        return found;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else { return found };
    for entry in procs.flatten().take(SCAN_LIMIT) {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u32>().ok())
            else {
                continue;
            };
            if inodes.contains(&inode) && !found.contains_key(&inode) {
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                found.insert(inode, (pid, comm.trim_end().to_owned()));
            }
        }
        if found.len() == inodes.len() {
            break;
        }
    }
    found
}
