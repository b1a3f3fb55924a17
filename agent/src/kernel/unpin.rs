//! Removing everything the agent pinned under its bpffs directory (`cellwatch
//! uninstall`, and pinned state of another layout). Unpinning a link detaches its
//! program; the kernel does that shortly after, in the background, so this waits until
//! the programs are gone before it returns.

use std::{
    collections::HashSet,
    fs, io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::programs::{
    links::{FdLink, PinnedLink},
    loaded_programs,
};

use super::object;
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
    /// The directory itself stayed, empty: its parent is not this user's to write (the
    /// agent's own user in a pod, under the host's root-owned bpffs).
    pub(crate) kept_dir: bool,
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
    let Some(plan) = plan(dir)? else { return Ok(Removed::default()) };
    let programs = linked_programs(&plan);
    let (objects, kept_dir) = remove(&plan, and_dir)?;
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
    Ok(Removed { objects, still_loaded: left.len(), kept_dir })
}

/// Ids of the programs the planned link pins run.
fn linked_programs(plan: &Plan) -> Vec<u32> {
    let links = PinDir::new(&plan.root).links();
    plan.pins
        .iter()
        .filter(|p| p.starts_with(&links))
        .filter_map(|p| PinnedLink::from_pin(p).ok())
        .filter_map(|l| FdLink::from(l).info().ok())
        .map(|i| i.program_id())
        .collect()
}

/// Removes the planned pins and subdirectories, and the directory itself when
/// `and_dir`; returns how many pinned objects were removed, and whether the (empty)
/// directory had to stay. Only what the agent pins
/// goes, and only once all of it is known to be that (see [`plan`]): anything else there,
/// a symbolic link anywhere, or a directory that is not on a bpf filesystem, and nothing
/// is removed.
fn remove(plan: &Plan, and_dir: bool) -> Result<(usize, bool), UninstallError> {
    let err = |p: &Path| {
        let path = p.display().to_string();
        move |source| UninstallError { path, source }
    };
    for pin in &plan.pins {
        fs::remove_file(pin).map_err(err(pin))?;
    }
    for sub in &plan.subdirs {
        fs::remove_dir(sub).map_err(err(sub))?;
    }
    let mut kept = false;
    if and_dir {
        match fs::remove_dir(&plan.root) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => kept = true,
            Err(e) => return Err(err(&plan.root)(e)),
        }
    }
    Ok((plan.pins.len(), kept))
}

/// What removing a pin directory removes: its pins, then its two subdirectories.
#[derive(Debug)]
struct Plan {
    root: PathBuf,
    pins: Vec<PathBuf>,
    subdirs: Vec<PathBuf>,
}

/// Checks every entry of the pin directory before anything is removed; `None` when the
/// directory does not exist. The directory is taken as the kernel resolves it (`..` and
/// links in the path above it resolved), must not itself be a symbolic link, must be on
/// a bpf filesystem but not its root, and may hold only `maps/` with the agent's map
/// names and `links/` with its program names, each a pin (no link, no directory).
fn plan(dir: &Path) -> Result<Option<Plan>, UninstallError> {
    let refuse = |p: &Path, why: String| UninstallError {
        path: p.display().to_string(),
        source: io::Error::other(format!("{why}; nothing was removed")),
    };
    let io_err = |p: &Path| {
        let path = p.display().to_string();
        move |source| UninstallError { path, source }
    };
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(dir)(e)),
        Ok(m) if m.file_type().is_symlink() => {
            return Err(refuse(dir, "it is a symbolic link; name the pin directory itself".into()));
        }
        Ok(m) if !m.is_dir() => return Err(refuse(dir, "it is not a directory".into())),
        Ok(_) => {}
    }
    let root = fs::canonicalize(dir).map_err(io_err(dir))?;
    let mounts = Mounts::read();
    match mounts.covering(&root) {
        Some(m) if m.fstype == "bpf" && m.point == root => {
            return Err(refuse(
                dir,
                "it is the root of a bpf filesystem, where other tools pin too, not a pin \
                 directory of cellwatch"
                    .into(),
            ));
        }
        Some(m) if m.fstype == "bpf" => {}
        other => {
            let on = other.map_or_else(
                || "no known filesystem".to_owned(),
                |m| format!("a {} filesystem", m.fstype),
            );
            return Err(refuse(
                dir,
                format!("it is on {on}, not a bpf filesystem, so it holds no pins"),
            ));
        }
    }
    let mut plan = Plan { root: root.clone(), pins: Vec::new(), subdirs: Vec::new() };
    for entry in fs::read_dir(&root).map_err(io_err(&root))? {
        let entry = entry.map_err(io_err(&root))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io_err(&path))?;
        let name = entry.file_name();
        let sub: Option<fn(&str) -> bool> = match name.to_str() {
            Some(PinDir::MAPS) => Some(object::is_our_map),
            Some(PinDir::LINKS) => Some(object::is_our_link),
            _ => None,
        };
        let Some(ours) = sub.filter(|_| kind.is_dir()) else {
            return Err(refuse(&path, stray(&kind)));
        };
        for pin in fs::read_dir(&path).map_err(io_err(&path))? {
            let pin = pin.map_err(io_err(&path))?;
            let pin_path = pin.path();
            let pin_kind = pin.file_type().map_err(io_err(&pin_path))?;
            let known = pin.file_name().to_str().is_some_and(ours);
            if !known || !pin_kind.is_file() {
                return Err(refuse(&pin_path, stray(&pin_kind)));
            }
            plan.pins.push(pin_path);
        }
        plan.subdirs.push(path);
    }
    // The agent's own record of its layout, when there: a BPF map, or this is no pin
    // directory of cellwatch's.
    let meta = PinDir::new(&root).map(object::META);
    if plan.pins.contains(&meta) && !is_map(&meta) {
        return Err(refuse(&meta, "it is not the BPF map cellwatch keeps its layout in".into()));
    }
    Ok(Some(plan))
}

/// Whether the pin at `path` is a BPF map (the kernel names each object's descriptor by
/// its kind: `anon_inode:bpf-map`, `bpf-prog`, `bpf_link`).
fn is_map(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(fd) = crate::host::sys::bpf_obj_get(path) else { return false };
    fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .is_ok_and(|t| t.as_os_str() == "anon_inode:bpf-map")
}

/// Why an entry of a pin directory is not the agent's, as the refusal says it.
fn stray(kind: &fs::FileType) -> String {
    if kind.is_symlink() {
        "it is a symbolic link, which cellwatch never pins and uninstall never follows".into()
    } else {
        "it is not something cellwatch pins (another tool's pin, or a file put there)".into()
    }
}
