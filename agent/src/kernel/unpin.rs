//! Removing everything the agent pinned under its bpffs directory (`cellwatch
//! uninstall`, and pinned state of another layout). Unpinning a link detaches its
//! program; the kernel does that shortly after, in the background, so this waits until
//! the programs are gone before it returns.

use std::{
    collections::HashSet,
    fs, io,
    path::Path,
    time::{Duration, Instant},
};

use aya::programs::{
    links::{FdLink, PinnedLink},
    loaded_programs,
};

use crate::host::{bpffs::PinDir, mounts::Mounts};

/// How long uninstall waits for the kernel to free the detached programs.
const SETTLE: Duration = Duration::from_secs(5);

/// What `uninstall` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Removed {
    /// Pinned objects removed (0: nothing was there).
    pub(crate) objects: usize,
    /// Programs detached but still loaded after the wait: a process holds them open
    /// (a `cellwatch run` still running on this directory).
    pub(crate) still_loaded: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot remove {path}: {source}")]
pub(crate) struct UninstallError {
    path: String,
    #[source]
    source: io::Error,
}

/// Removes the pin directory, then waits until the programs its links ran are freed.
pub(crate) fn uninstall(dir: &Path) -> Result<Removed, UninstallError> {
    unpin(dir, true)
}

/// Removes what is pinned under `dir` but keeps the directory itself (which an agent
/// that is not root may not be able to make again), then waits as [`uninstall`] does.
pub(crate) fn clear(dir: &Path) -> Result<Removed, UninstallError> {
    unpin(dir, false)
}

fn unpin(dir: &Path, and_dir: bool) -> Result<Removed, UninstallError> {
    let programs = linked_programs(dir);
    let objects = remove(dir, and_dir)?;
    let deadline = Instant::now() + SETTLE;
    let mut left = programs;
    while !left.is_empty() {
        let loaded: HashSet<u32> = loaded_programs().flatten().map(|p| p.id()).collect();
        left.retain(|id| loaded.contains(id));
        if left.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Removed { objects, still_loaded: left.len() })
}

/// Ids of the programs the links pinned under `dir` run.
fn linked_programs(dir: &Path) -> Vec<u32> {
    let Ok(entries) = fs::read_dir(PinDir::new(dir).links()) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| PinnedLink::from_pin(e.path()).ok())
        .filter_map(|l| FdLink::from(l).info().ok())
        .map(|i| i.program_id())
        .collect()
}

/// Removes what is under the pin directory, and the directory itself when `and_dir`;
/// returns how many pinned objects were removed (0 when there was nothing).
fn remove(dir: &Path, and_dir: bool) -> Result<usize, UninstallError> {
    let err = |p: &Path| {
        let path = p.display().to_string();
        move |source| UninstallError { path, source }
    };
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(err(dir)(e)),
        Ok(_) => {}
    }
    // Everything under the directory goes: make sure it is pins, not a directory given
    // by mistake.
    let mounts = Mounts::read();
    let fstype = mounts.covering(dir).map(|m| m.fstype.as_str());
    if fstype != Some("bpf") {
        let on = fstype
            .map_or_else(|| "no known filesystem".to_owned(), |t| format!("a {t} filesystem"));
        return Err(err(dir)(io::Error::other(format!(
            "it is on {on}, not a bpf filesystem, so it holds no pins; nothing was removed"
        ))));
    }
    let mut removed = 0;
    remove_tree(dir, &mut removed, &err)?;
    if and_dir {
        fs::remove_dir(dir).map_err(err(dir))?;
    }
    Ok(removed)
}

fn remove_tree<F, G>(dir: &Path, removed: &mut usize, err: &F) -> Result<(), UninstallError>
where
    F: Fn(&Path) -> G,
    G: FnOnce(io::Error) -> UninstallError,
{
    for entry in fs::read_dir(dir).map_err(err(dir))? {
        let path = entry.map_err(err(dir))?.path();
        if path.is_dir() {
            remove_tree(&path, removed, err)?;
            fs::remove_dir(&path).map_err(err(&path))?;
        } else {
            fs::remove_file(&path).map_err(err(&path))?;
            *removed += 1;
        }
    }
    Ok(())
}
