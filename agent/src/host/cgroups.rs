//! cgroup id -> cgroup path, and the container id and pod UID a path names. A cgroup
//! v2 id is the inode number of its directory, so the agent finds a path by walking the
//! hierarchy once and caching it; the walk is redone only for an id it does not know.
#![forbid(unsafe_code)]

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

/// Most directories one walk visits (bounded on nodes with huge hierarchies).
const WALK_LIMIT: usize = 100_000;
/// An unknown id triggers at most one walk per this long.
const REWALK_AFTER: Duration = Duration::from_secs(5);

/// Who a cgroup belongs to, as far as its path tells.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Workload {
    pub(crate) cgroup: Option<String>,
    pub(crate) container_id: Option<String>,
    pub(crate) pod_uid: Option<String>,
}

/// The workloads of cgroup ids: the paths found by the last walk of the hierarchy,
/// walked again (at most every [`REWALK_AFTER`]) for an id it does not hold.
pub(crate) struct Workloads {
    root: PathBuf,
    cache: Mutex<(HashMap<u64, String>, Option<Instant>)>,
}

impl Workloads {
    pub(crate) fn new(root: PathBuf) -> Self {
        Self { root, cache: Mutex::new((HashMap::new(), None)) }
    }

    /// The workload of cgroup `id` (0 = unknown).
    pub(crate) fn workload(&self, id: u64) -> Workload {
        if id == 0 {
            return Workload::default();
        }
        let mut cache = crate::sync::lock(&self.cache);
        if !cache.0.contains_key(&id) && cache.1.is_none_or(|t| t.elapsed() > REWALK_AFTER) {
            cache.0 = walk(&self.root);
            cache.1 = Some(Instant::now());
        }
        match cache.0.get(&id) {
            Some(path) => parse(path),
            None => Workload::default(),
        }
    }
}

fn walk(root: &Path) -> HashMap<u64, String> {
    let mut ids = HashMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        if ids.len() >= WALK_LIMIT {
            break;
        }
        let Ok(meta) = std::fs::metadata(&dir) else { continue };
        let rel =
            dir.strip_prefix(root).map_or_else(|_| String::new(), |p| format!("/{}", p.display()));
        ids.insert(meta.ino(), if rel.is_empty() { "/".to_owned() } else { rel });
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    ids
}

/// Reads the container id (64 hex digits, as docker, containerd and CRI-O name their
/// scopes) and the pod UID (`pod<uid>`, with `_` for `-` under the systemd driver).
pub(crate) fn parse(path: &str) -> Workload {
    let mut w = Workload { cgroup: Some(path.to_owned()), ..Workload::default() };
    for part in path.split('/') {
        let stem =
            part.strip_suffix(".scope").or_else(|| part.strip_suffix(".slice")).unwrap_or(part);
        if let Some(i) = stem.rfind("pod") {
            let uid = stem[i + 3..].replace('_', "-");
            if uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
                w.pod_uid = Some(uid);
            }
        }
        let last = stem.rsplit(['-', ':']).next().unwrap_or(stem);
        if last.len() == 64 && last.bytes().all(|b| b.is_ascii_hexdigit()) {
            w.container_id = Some(last.to_owned());
        }
    }
    w
}

#[cfg(test)]
mod tests;
