//! The agent's side of connections to Services' virtual addresses (`vip.rs` and
//! `settle.rs` in the programs): writing where each went into `RESOLVED`, running the
//! settling iterator over `DEFERRED`, and removing what it settled.
use std::{
    io::Read,
    os::fd::{AsFd, OwnedFd},
    sync::Mutex,
};

use agent_common::{Deferred, Resolution};
use aya::{Btf, Ebpf, maps::MapData};

use super::{
    error::{KernelError, map_err},
    maps::Maps,
    object::{self, SETTLE},
    sweep::load_iterator,
};
use crate::{
    host::{bpffs::PinDir, sys},
    sync,
};

/// The settling iterator, linked to `DEFERRED`.
pub(super) struct Settler {
    link: OwnedFd,
}

impl Settler {
    /// `dir` holds the pinned `DEFERRED` (the agent's handle on it is in `Maps`).
    pub(super) fn new(ebpf: &mut Ebpf, btf: &Btf, dir: &PinDir) -> Result<Self, KernelError> {
        let prog = load_iterator(ebpf, btf, SETTLE)?;
        let map =
            MapData::from_pin(dir.map(object::DEFERRED)).map_err(map_err(object::DEFERRED))?;
        let link = sys::bpf_map_iter_link(prog.as_fd(), map.fd().as_fd())
            .map_err(KernelError::IterLink)?;
        Ok(Self { link })
    }

    /// Writes `resolved` (socket cookie, where it went), then counts the deferred
    /// connections they answer and removes them; returns how many it settled.
    pub(super) fn resolve(
        &self,
        maps: &Mutex<Maps>,
        resolved: &[(u64, Resolution)],
    ) -> Result<usize, KernelError> {
        {
            let mut m = sync::lock(maps);
            for (cookie, r) in resolved {
                m.resolved.insert(cookie, r, 0).map_err(map_err(object::RESOLVED))?;
            }
        }
        let mut file = sys::bpf_iter_create(self.link.as_fd()).map_err(KernelError::Sweep)?;
        let mut out = Vec::new();
        file.read_to_end(&mut out).map_err(KernelError::Sweep)?;
        let mut m = sync::lock(maps);
        let settled: Vec<u64> = m
            .deferred
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, d)| d.settled != 0)
            .map(|(cookie, _)| cookie)
            .collect();
        for cookie in &settled {
            // Gone already is fine.
            let _ = m.deferred.remove(cookie);
        }
        Ok(settled.len())
    }

    /// The deferred connections not settled yet (their request may have been lost, or
    /// the agent restarted).
    pub(super) fn waiting(maps: &Mutex<Maps>) -> Vec<Deferred> {
        let m = sync::lock(maps);
        m.deferred
            .iter()
            .filter_map(Result::ok)
            .map(|(_, d)| d)
            .filter(|d| d.settled == 0)
            .collect()
    }
}
