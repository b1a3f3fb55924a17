//! Running the kernel's iterators: the live sweep over the connection storage (every
//! `--live-interval`, and for each `/connections` request), and the seeding walk over
//! the TCP sockets at a first start. One sweep runs at a time.
use std::{
    io::Read,
    os::fd::{AsFd, OwnedFd},
    sync::Mutex,
};

use agent_common::{
    Brief, Conn, LIST_ANY, SEEDED_CAPACITY, SETTING_LIST_CELL, SETTING_LIST_VERDICT,
    SETTING_SWEEP_RECORDS, SWEEP_BRIEF, SWEEP_COUNT, SWEEP_WANTED, SweepTail,
};
use agent_core::events::{decode_briefs, decode_sweep};
use aya::{
    Btf, Ebpf,
    maps::MapData,
    programs::{Iter, ProgramFd},
};

use super::{
    error::{KernelError, map_err},
    maps::{self, Maps},
    object::{ITERATORS, SEED, SWEEP},
};
use crate::{host::sys, sync};

/// The sweep's iterator, linked to the connection storage map.
pub(super) struct Sweeper {
    link: OwnedFd,
    /// One sweep at a time: their claims are safe together, but the records setting is
    /// one word for both.
    running: Mutex<()>,
}

/// Loads an iterator program for its kernel target; its descriptor, owned.
pub(super) fn load_iterator(
    ebpf: &mut Ebpf,
    btf: &Btf,
    name: &'static str,
) -> Result<ProgramFd, KernelError> {
    let target = ITERATORS.iter().find(|(n, _)| *n == name).map_or("", |(_, t)| *t);
    let prog = ebpf.program_mut(name).ok_or(KernelError::Missing(name))?;
    let typed = |source| KernelError::Program { name, source };
    let iter: &mut Iter = prog.try_into().map_err(typed)?;
    iter.load(target, btf).map_err(|e| super::attach::refused(name, e))?;
    iter.fd().map_err(typed)?.try_clone().map_err(KernelError::Sweep)
}

impl Sweeper {
    pub(super) fn new(ebpf: &mut Ebpf, btf: &Btf) -> Result<Self, KernelError> {
        let prog = load_iterator(ebpf, btf, SWEEP)?;
        let map: &MapData = maps::conn_storage(ebpf)?;
        let link = sys::bpf_map_iter_link(prog.as_fd(), map.fd().as_fd())
            .map_err(KernelError::IterLink)?;
        Ok(Self { link, running: Mutex::new(()) })
    }

    /// One sweep: claims what every open connection moved into the counters.
    pub(super) fn run(&self, maps: &Mutex<Maps>) -> Result<(), KernelError> {
        let _one = sync::lock(&self.running);
        self.pass(maps, SWEEP_COUNT).map(drop)
    }

    /// A listing, in two passes: the first writes a brief of each open connection the
    /// filter passes (and reads no socket); `choose` picks the cookies to list (at most
    /// `LIST_MAX`); the second claims what those moved and writes their full records,
    /// as the counters now hold them. The first pass is kept small because the kernel's
    /// iterator over socket storage walks its few buckets again from the start each
    /// time its output buffer fills: full records of 100,000 connections in one pass
    /// would cost the square of that.
    pub(super) fn list(
        &self,
        maps: &Mutex<Maps>,
        filter: ListFilter,
        choose: impl FnOnce(Vec<Brief>) -> Vec<u64>,
    ) -> Result<Vec<(Conn, SweepTail)>, KernelError> {
        let _one = sync::lock(&self.running);
        {
            let mut m = sync::lock(maps);
            let obj = super::object::SETTINGS;
            m.settings
                .set(SETTING_LIST_CELL, filter.cell.unwrap_or(LIST_ANY), 0)
                .map_err(map_err(obj))?;
            let verdict = filter.verdict.map_or(LIST_ANY, u32::from);
            m.settings.set(SETTING_LIST_VERDICT, verdict, 0).map_err(map_err(obj))?;
        }
        let briefs = decode_briefs(&self.pass(maps, SWEEP_BRIEF)?)
            .map_err(|e| KernelError::Sweep(std::io::Error::other(e)))?;
        let wanted = choose(briefs);
        {
            let mut m = sync::lock(maps);
            let obj = super::object::WANTED;
            for cookie in std::mem::take(&mut m.wanted_now) {
                // Gone already is fine: the entry is removed either way.
                let _ = m.wanted.remove(&cookie);
            }
            for cookie in &wanted {
                m.wanted.insert(cookie, 1, 0).map_err(map_err(obj))?;
                m.wanted_now.push(*cookie);
            }
        }
        decode_sweep(&self.pass(maps, SWEEP_WANTED)?)
            .map_err(|e| KernelError::Sweep(std::io::Error::other(e)))
    }

    /// One run of the iterator, writing `records` (`SWEEP_*`); its output.
    fn pass(&self, maps: &Mutex<Maps>, records: u32) -> Result<Vec<u8>, KernelError> {
        sync::lock(maps)
            .settings
            .set(SETTING_SWEEP_RECORDS, records, 0)
            .map_err(map_err(super::object::SETTINGS))?;
        let t = std::time::Instant::now();
        let mut file = sys::bpf_iter_create(self.link.as_fd()).map_err(KernelError::Sweep)?;
        let mut out = Vec::new();
        let read = file.read_to_end(&mut out).map_err(KernelError::Sweep);
        tracing::debug!(records, bytes = out.len(), took = ?t.elapsed(), "sweep pass");
        // Back to counting only, whatever happened.
        let reset = sync::lock(maps).settings.set(SETTING_SWEEP_RECORDS, SWEEP_COUNT, 0);
        read?;
        reset.map_err(map_err(super::object::SETTINGS))?;
        Ok(out)
    }
}

/// Which connections a listing wants: of this cell (source or destination), with this
/// verdict (`VERDICT_*`); `None` is any.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ListFilter {
    pub(crate) cell: Option<u32>,
    pub(crate) verdict: Option<u8>,
}

/// What seeding did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Seeding {
    pub(crate) seeded: usize,
    pub(crate) already_tracked: usize,
    pub(crate) no_room: usize,
    /// Planned, but gone before the walk reached them.
    pub(crate) closed_meanwhile: usize,
}

/// Puts `plan` (connections older than the agent, as the agent judged them) in the
/// kernel: the TCP iterator finds each one's socket and makes its storage.
pub(super) fn seed(
    ebpf: &mut Ebpf,
    btf: &Btf,
    maps: &mut Maps,
    plan: &[(u64, Conn)],
) -> Result<Seeding, KernelError> {
    // The plan and the seeded connections' table hold SEEDED_CAPACITY; the rest is not
    // tracked (and said so).
    let (plan, beyond) = plan.split_at(plan.len().min(SEEDED_CAPACITY as usize));
    for (cookie, conn) in plan {
        maps.seed_plan.insert(cookie, conn, 0).map_err(map_err(super::object::SEED_PLAN))?;
    }
    load_iterator(ebpf, btf, SEED)?;
    let prog = ebpf.program_mut(SEED).ok_or(KernelError::Missing(SEED))?;
    let typed = |source| KernelError::Program { name: SEED, source };
    let iter: &mut Iter = prog.try_into().map_err(typed)?;
    let link_id = iter.attach().map_err(typed)?;
    let link = iter.take_link(link_id).map_err(typed)?;
    let mut file = link.into_file().map_err(|e| KernelError::Sweep(std::io::Error::other(e)))?;
    let mut out = Vec::new();
    file.read_to_end(&mut out).map_err(KernelError::Sweep)?;
    let mut done = Seeding { no_room: beyond.len(), ..Seeding::default() };
    for rec in out.chunks_exact(16) {
        match u64::from_ne_bytes(rec[8..16].try_into().unwrap_or_default()) {
            1 => done.seeded += 1,
            2 => done.already_tracked += 1,
            _ => done.no_room += 1,
        }
    }
    // What the walk did not find closed between the dump and the walk.
    for (cookie, _) in plan {
        if maps.seed_plan.remove(cookie).is_ok() {
            done.closed_meanwhile += 1;
        }
    }
    Ok(done)
}
