//! What `run` leaves pinned under `--bpffs`, so a restart, an upgrade or a crash loses
//! no connection and resets no counter: every shared map under `maps/`, one link per
//! program under `links/`, and in the `META` map the layout version and the build of
//! the programs those links run. A new run decides here what to make of what it finds.
use std::{
    fs, io,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use agent_common::{LAYOUT_VERSION, META_BUILD, META_LAYOUT};
use aya::maps::{Array, Map, MapData};

/// The maps that outlive the agent. Everything the programs keep state in, plus the
/// agent's own bookkeeping (`CELL_NAMES`, `META`) and aya-log's buffer, so adopted
/// programs still log.
pub(super) const MAPS: &[&str] = &[
    "CONNS",
    "PAIR_STATS",
    "CELLS_V4_A",
    "CELLS_V4_B",
    "CELLS_V6_A",
    "CELLS_V6_B",
    "CELL_INFO_A",
    "CELL_INFO_B",
    "POLICY_A",
    "POLICY_B",
    "OWNERS",
    "NETNS_ADDR",
    "EVENTS",
    "EVENT_RATE",
    "SEED_OPENED",
    "SETTINGS",
    "COUNTERS",
    "CELL_NAMES",
    "META",
    "AYA_LOGS",
];

/// The pin directory and where each object lives in it.
#[derive(Debug, Clone)]
pub(super) struct PinDir(PathBuf);

impl PinDir {
    pub(super) fn new(root: &Path) -> Self {
        Self(root.to_owned())
    }

    pub(super) fn root(&self) -> &Path {
        &self.0
    }

    pub(super) fn map(&self, name: &str) -> PathBuf {
        self.0.join("maps").join(name)
    }

    pub(super) fn link(&self, program: &str) -> PathBuf {
        self.0.join("links").join(program)
    }

    pub(super) fn create(&self) -> io::Result<()> {
        fs::create_dir_all(self.0.join("maps"))?;
        fs::create_dir_all(self.0.join("links"))
    }

    /// True when nothing is pinned (the directories may exist, empty).
    fn is_empty(&self) -> bool {
        ["maps", "links"].iter().all(|d| match fs::read_dir(self.0.join(d)) {
            Ok(mut entries) => entries.next().is_none(),
            Err(_) => true,
        })
    }
}

/// What a new run found pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Found {
    /// Nothing: a first start, or one after `cellwatch uninstall`.
    Nothing,
    /// State of this agent's layout, whose links run the programs of `build`.
    Readable { build: u32 },
    /// State this agent cannot read.
    Unreadable(Unreadable),
}

/// Why pinned state cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// Another layout version.
    Layout(u32),
    /// No usable `META`: a start that never finished, or not cellwatch's.
    NoLayout,
    /// A map of this layout is not pinned (removed by hand?).
    Missing(&'static str),
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreadable::Layout(v) => write!(f, "has layout {v}"),
            Unreadable::NoLayout => {
                f.write_str("has no layout version (a start that never finished?)")
            }
            Unreadable::Missing(m) => write!(f, "lacks the map {m}"),
        }
    }
}

pub(super) fn inspect(dir: &PinDir) -> Found {
    if dir.is_empty() {
        return Found::Nothing;
    }
    let meta = MapData::from_pin(dir.map("META"))
        .ok()
        .and_then(|d| Array::<MapData, u32>::try_from(Map::Array(d)).ok());
    let Some(meta) = meta else { return Found::Unreadable(Unreadable::NoLayout) };
    match (meta.get(&META_LAYOUT, 0), meta.get(&META_BUILD, 0)) {
        (Ok(LAYOUT_VERSION), Ok(build)) => match MAPS.iter().find(|m| !dir.map(m).exists()) {
            Some(m) => Found::Unreadable(Unreadable::Missing(m)),
            None => Found::Readable { build },
        },
        (Ok(0), _) | (Err(_), _) | (_, Err(_)) => Found::Unreadable(Unreadable::NoLayout),
        (Ok(layout), _) => Found::Unreadable(Unreadable::Layout(layout)),
    }
}

/// How this run treats the pinned state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Nothing was pinned: load, attach and pin everything.
    Fresh,
    /// This build's programs run already: keep them and their maps untouched.
    Adopt,
    /// Another build's programs run on maps of this layout: keep the maps, swap in this
    /// build's programs on the same links.
    Replace,
    /// The pinned state could not be read: it was removed, then a fresh start.
    Discard(Unreadable),
}

impl Start {
    pub fn as_str(self) -> &'static str {
        match self {
            Start::Fresh => "fresh",
            Start::Adopt => "adopted",
            Start::Replace => "replaced",
            Start::Discard(_) => "discarded",
        }
    }

    /// Whether the maps were made by this run (and so hold nothing yet).
    pub fn is_new(self) -> bool {
        matches!(self, Start::Fresh | Start::Discard(_))
    }
}

pub(super) fn decide(found: Found, build: u32, replace_programs: bool) -> Start {
    match found {
        Found::Nothing => Start::Fresh,
        Found::Readable { build: b } if b == build && !replace_programs => Start::Adopt,
        Found::Readable { .. } => Start::Replace,
        Found::Unreadable(why) => Start::Discard(why),
    }
}

/// FNV-1a of the eBPF object: tells this build's programs from another's.
pub(super) fn build_id(object: &[u8]) -> u32 {
    object.iter().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

/// Points the pinned link of `program` at the loaded program `prog`, atomically.
pub(super) fn update_link(dir: &PinDir, program: &str, prog: impl AsFd) -> io::Result<()> {
    let link = crate::sys::bpf_obj_get(&dir.link(program))?;
    crate::sys::bpf_link_update(link.as_fd(), prog.as_fd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_run_does_with_what_it_finds() {
        assert_eq!(decide(Found::Nothing, 7, false), Start::Fresh);
        assert_eq!(decide(Found::Readable { build: 7 }, 7, false), Start::Adopt);
        assert_eq!(decide(Found::Readable { build: 7 }, 7, true), Start::Replace);
        assert_eq!(decide(Found::Readable { build: 6 }, 7, false), Start::Replace);
        let newer = Unreadable::Layout(LAYOUT_VERSION + 1);
        assert_eq!(decide(Found::Unreadable(newer), 7, false), Start::Discard(newer));
        assert_eq!(newer.to_string(), format!("has layout {}", LAYOUT_VERSION + 1));
    }

    #[test]
    fn build_ids_tell_objects_apart() {
        assert_ne!(build_id(b"cellwatch-a"), build_id(b"cellwatch-b"));
        assert_eq!(build_id(b""), 0x811c_9dc5);
    }

    #[test]
    fn a_missing_directory_holds_nothing() {
        let dir = PinDir::new(Path::new("/nonexistent/cellwatch-pins"));
        assert_eq!(inspect(&dir), Found::Nothing);
    }
}
