//! What `run` leaves pinned under `--bpffs`, so a restart, an upgrade or a crash loses
//! no connection and resets no counter: every shared map under `maps/`, one link per
//! program under `links/`, and in the `META` map the layout version and the build of
//! the programs those links run. A new run decides here what to make of what it finds.
use std::{io, os::fd::AsFd};

use agent_common::{LAYOUT_VERSION, META_BUILD, META_LAYOUT};
use aya::maps::{Array, Map, MapData};

use super::object::{META, PINNED_MAPS};
use crate::host::{bpffs::PinDir, sys};

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
pub(crate) enum Unreadable {
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
    let meta = MapData::from_pin(dir.map(META))
        .ok()
        .and_then(|d| Array::<MapData, u32>::try_from(Map::Array(d)).ok());
    let Some(meta) = meta else { return Found::Unreadable(Unreadable::NoLayout) };
    match (meta.get(&META_LAYOUT, 0), meta.get(&META_BUILD, 0)) {
        (Ok(LAYOUT_VERSION), Ok(build)) => {
            match PINNED_MAPS.iter().find(|m| !dir.map(m).exists()) {
                Some(m) => Found::Unreadable(Unreadable::Missing(m)),
                None => Found::Readable { build },
            }
        }
        (Ok(0), _) | (Err(_), _) | (_, Err(_)) => Found::Unreadable(Unreadable::NoLayout),
        (Ok(layout), _) => Found::Unreadable(Unreadable::Layout(layout)),
    }
}

/// What this run makes of the pinned state it found (`cellwatch_start_info{pinned_state}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PinnedState {
    /// Nothing was pinned: load, attach and pin everything.
    Fresh,
    /// This build's programs run already: keep them and their maps untouched.
    Adopted,
    /// Another build's programs run on maps of this layout: keep the maps, swap in this
    /// build's programs on the same links.
    Replaced,
    /// The pinned state could not be read: it was removed, then a fresh start.
    Discarded(Unreadable),
}

impl PinnedState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PinnedState::Fresh => "fresh",
            PinnedState::Adopted => "adopted",
            PinnedState::Replaced => "replaced",
            PinnedState::Discarded(_) => "discarded",
        }
    }

    /// Whether the maps were made by this run (and so hold nothing yet).
    pub(crate) fn is_new(self) -> bool {
        matches!(self, PinnedState::Fresh | PinnedState::Discarded(_))
    }
}

pub(super) fn decide(found: Found, build: u32, replace_programs: bool) -> PinnedState {
    match found {
        Found::Nothing => PinnedState::Fresh,
        Found::Readable { build: b } if b == build && !replace_programs => PinnedState::Adopted,
        Found::Readable { .. } => PinnedState::Replaced,
        Found::Unreadable(why) => PinnedState::Discarded(why),
    }
}

/// FNV-1a of the eBPF object: tells this build's programs from another's.
pub(super) fn build_id(object: &[u8]) -> u32 {
    object.iter().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

/// Points the pinned link of `program` at the loaded program `prog`, atomically.
pub(super) fn update_link(dir: &PinDir, program: &str, prog: impl AsFd) -> io::Result<()> {
    let link = sys::bpf_obj_get(&dir.link(program))?;
    sys::bpf_link_update(link.as_fd(), prog.as_fd())
}

#[cfg(test)]
mod tests;
