//! The node's network namespaces, for the kernel walks that see one namespace at a time
//! (the TCP iterator): each namespace a process is in (`/proc/*/ns/net`) or that is
//! bind-mounted where `ip netns` and CNI plugins keep them (`/run/netns`,
//! `/var/run/netns`), once each, and a way to do something inside each of them.
//!
//! Limit: a namespace that no process is in and that is mounted nowhere (its last
//! process gone, its sockets still held open through a descriptor passed elsewhere) is
//! not found.
#![forbid(unsafe_code)]

use std::{
    collections::HashSet,
    fs::File,
    io,
    os::{fd::AsFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use super::sys;

/// Where bind mounts of namespaces are kept.
const MOUNTED: [&str; 2] = ["/run/netns", "/var/run/netns"];

/// A path to each network namespace on the node, the agent's own first.
pub(crate) fn all() -> Vec<PathBuf> {
    all_under(Path::new("/proc"))
}

fn all_under(proc: &Path) -> Vec<PathBuf> {
    let mut seen = HashSet::new();
    let mut found = Vec::new();
    let mut add = |p: PathBuf| {
        // The namespace's identity: its nsfs inode (stat follows the magic link).
        if let Ok(m) = std::fs::metadata(&p)
            && seen.insert((m.dev(), m.ino()))
        {
            found.push(p);
        }
    };
    add(proc.join("self/ns/net"));
    if let Ok(dir) = std::fs::read_dir(proc) {
        for e in dir.flatten() {
            let name = e.file_name();
            if name.to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())) {
                add(e.path().join("ns/net"));
            }
        }
    }
    for dir in MOUNTED {
        if let Ok(d) = std::fs::read_dir(dir) {
            for e in d.flatten() {
                add(e.path());
            }
        }
    }
    found
}

/// What running in each namespace gave, and the namespaces that could not be entered.
pub(crate) struct Each<T> {
    pub(crate) done: Vec<T>,
    /// (namespace, why), e.g. gone meanwhile, or no CAP_SYS_ADMIN to enter it.
    pub(crate) skipped: Vec<(PathBuf, io::Error)>,
}

/// Runs `f` inside each of `namespaces`, on a thread of its own that ends afterwards
/// (so no thread of the agent is ever left in another namespace). The first namespace
/// is taken to be the agent's own, where `f` runs without entering anything.
pub(crate) fn in_each<T: Send>(
    namespaces: &[PathBuf],
    f: impl Fn() -> io::Result<T> + Sync,
) -> io::Result<Each<T>> {
    std::thread::scope(|s| {
        let walker = s.spawn(|| {
            let mut each = Each { done: Vec::new(), skipped: Vec::new() };
            for (i, ns) in namespaces.iter().enumerate() {
                let entered = if i == 0 {
                    Ok(())
                } else {
                    File::open(ns).and_then(|fd| sys::setns_net(fd.as_fd()))
                };
                match entered.and_then(|()| f()) {
                    Ok(t) => each.done.push(t),
                    Err(e) => each.skipped.push((ns.clone(), e)),
                }
            }
            each
        });
        walker.join().map_err(|_| io::Error::other("the namespace walker panicked"))
    })
}

#[cfg(test)]
mod tests;
