//! The pin directory under `--bpffs`, in one place: every map pinned under `maps/`, one
//! link per program under `links/`. The kernel side pins there, uninstall removes it,
//! and the start-up checks make sure the agent may write it.
use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// Where each pinned object lives.
#[derive(Debug, Clone)]
pub(crate) struct PinDir(PathBuf);

impl PinDir {
    pub(crate) const MAPS: &str = "maps";
    pub(crate) const LINKS: &str = "links";

    pub(crate) fn new(root: &Path) -> Self {
        Self(root.to_owned())
    }

    pub(crate) fn root(&self) -> &Path {
        &self.0
    }

    pub(crate) fn map(&self, name: &str) -> PathBuf {
        self.0.join(Self::MAPS).join(name)
    }

    pub(crate) fn link(&self, program: &str) -> PathBuf {
        self.0.join(Self::LINKS).join(program)
    }

    pub(crate) fn links(&self) -> PathBuf {
        self.0.join(Self::LINKS)
    }

    /// Makes the directory and its two subdirectories (as this process's user).
    pub(crate) fn create(&self) -> io::Result<()> {
        [Self::MAPS, Self::LINKS].iter().try_for_each(|d| fs::create_dir_all(self.0.join(d)))
    }

    /// True when nothing is pinned (the directories may exist, empty).
    pub(crate) fn is_empty(&self) -> bool {
        [Self::MAPS, Self::LINKS].iter().all(|d| match fs::read_dir(self.0.join(d)) {
            Ok(mut entries) => entries.next().is_none(),
            Err(_) => true,
        })
    }
}
