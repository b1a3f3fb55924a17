//! Running the kernel's iterators: the live sweep (every `--live-interval`, and for
//! each `/connections` request) over the connection storage, or over each network
//! namespace's TCP sockets where the kernel refuses the first; and the seeding walk over
//! the TCP sockets at a first start. One sweep runs at a time.
use std::{
    io::Read,
    os::fd::{AsFd, OwnedFd},
    sync::Mutex,
};

use agent_common::{
    Brief, Conn, LIST_ANY, LIST_EITHER, LIST_HOLDOUTS, LIST_INTO, SEEDED_CAPACITY,
    SETTING_LIST_CELL, SETTING_LIST_INTO, SETTING_LIST_VERDICT, SETTING_SWEEP_RECORDS, SWEEP_BRIEF,
    SWEEP_COUNT, SWEEP_WANTED, SeedOutcome, SweepTail, Verdict,
};
use agent_core::events::{decode_briefs, decode_sweep};
use aya::{
    Btf, Ebpf,
    maps::MapData,
    programs::{Iter, ProgramFd},
};

use super::{
    error::{KernelError, map_err},
    features::{Feature, Findings, Found, Without},
    maps::{self, Maps},
    object::{ITERATORS, PROBE_TCP, SEED, SWEEP, SWEEP_TCP},
};
use crate::{
    host::{netns, sys},
    sync,
};

/// The live sweep, by whichever walk this kernel runs (see [`Walk`]).
pub(super) struct Sweeper {
    walk: Option<Walk>,
    /// One sweep at a time: their claims are safe together, but the records setting is
    /// one word for both.
    running: Mutex<()>,
}

/// How the sweep reaches every open connection: the rungs of its ladder, best first.
enum Walk {
    /// The iterator over the connection storage, linked to it: every namespace at once.
    Storage(OwnedFd),
    /// The TCP iterator, linked: run once in each network namespace of the node.
    Tcp(OwnedFd),
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

/// Why an optional program cannot serve: the sentence of its refusal.
pub(super) fn refusal(what: &str, e: &KernelError) -> String {
    match e.errno() {
        Some(io) => {
            format!("the kernel refused {what} ({io}: {})", super::error::refusal_meaning(io))
        }
        None => format!("the kernel refused {what} ({e})"),
    }
}

impl Sweeper {
    /// Probes the walks in order, unless `without` rules them out, and keeps the first
    /// that loads, links and runs; records what it found of each.
    pub(super) fn new(
        ebpf: &mut Ebpf,
        btf: &Btf,
        maps: &Mutex<Maps>,
        without: &Without,
        found: &mut Findings,
    ) -> Self {
        let mut s = Self { walk: None, running: Mutex::new(()) };
        for feature in [Feature::SkStorageIter, Feature::TcpIter] {
            if without.has(feature) {
                found.record(feature, Found::Forced);
                continue;
            }
            let tried = Self::link(ebpf, btf, feature).and_then(|walk| {
                // One run proves it (a sweep like any other).
                s.walk = Some(walk);
                s.pass(maps, SWEEP_COUNT).map(drop)
            });
            match tried {
                Ok(()) => {
                    found.record(feature, Found::Works);
                    // The first that works is the one used; the next is not needed.
                    if feature == Feature::SkStorageIter {
                        let tcp = Self::probe_tcp(ebpf, btf, without);
                        found.record(Feature::TcpIter, tcp);
                    }
                    break;
                }
                Err(e) => {
                    s.walk = None;
                    let what = match feature {
                        Feature::SkStorageIter => {
                            "the iterator over socket storage (iter/bpf_sk_storage_map)"
                        }
                        _ => "the TCP iterator (iter/tcp)",
                    };
                    found.record(feature, Found::Refused(refusal(what, &e)));
                }
            }
        }
        s
    }

    /// Whether the TCP iterator loads and runs (seeding needs it even where the sweep
    /// does not), told by the smallest program of its kind.
    fn probe_tcp(ebpf: &mut Ebpf, btf: &Btf, without: &Without) -> Found {
        if without.has(Feature::TcpIter) {
            return Found::Forced;
        }
        let ran = load_iterator(ebpf, btf, PROBE_TCP).and_then(|prog| {
            let link = sys::bpf_iter_link(prog.as_fd()).map_err(KernelError::IterLink)?;
            read_run(&link, &mut Vec::new()).map_err(KernelError::Sweep)
        });
        match ran {
            Ok(()) => Found::Works,
            Err(e) => Found::Refused(refusal("the TCP iterator (iter/tcp)", &e)),
        }
    }

    fn link(ebpf: &mut Ebpf, btf: &Btf, feature: Feature) -> Result<Walk, KernelError> {
        if feature == Feature::SkStorageIter {
            let prog = load_iterator(ebpf, btf, SWEEP)?;
            let map: &MapData = maps::conn_storage(ebpf)?;
            let link = sys::bpf_map_iter_link(prog.as_fd(), map.fd().as_fd())
                .map_err(KernelError::IterLink)?;
            Ok(Walk::Storage(link))
        } else {
            let prog = load_iterator(ebpf, btf, SWEEP_TCP)?;
            Ok(Walk::Tcp(sys::bpf_iter_link(prog.as_fd()).map_err(KernelError::IterLink)?))
        }
    }

    /// One sweep: claims what every open connection moved into the counters. Without a
    /// walk, nothing (connections count when they close).
    pub(super) fn run(&self, maps: &Mutex<Maps>) -> Result<(), KernelError> {
        if self.walk.is_none() {
            return Ok(());
        }
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
        if self.walk.is_none() {
            return Err(KernelError::NoWalk);
        }
        let _one = sync::lock(&self.running);
        {
            let mut m = sync::lock(maps);
            let obj = super::object::SETTINGS;
            m.settings
                .set(SETTING_LIST_CELL, filter.cell.unwrap_or(LIST_ANY), 0)
                .map_err(map_err(obj))?;
            let side = match filter.side {
                Side::Either => LIST_EITHER,
                Side::Into => LIST_INTO,
                Side::Holdouts => LIST_HOLDOUTS,
            };
            m.settings.set(SETTING_LIST_INTO, side, 0).map_err(map_err(obj))?;
            let verdict = filter.verdict.map_or(LIST_ANY, |v| u32::from(v.0));
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

    /// One run of the walk, writing `records` (`SWEEP_*`); its output (the TCP walk's
    /// runs in each namespace, one after the other: a socket is in one namespace only).
    fn pass(&self, maps: &Mutex<Maps>, records: u32) -> Result<Vec<u8>, KernelError> {
        sync::lock(maps)
            .settings
            .set(SETTING_SWEEP_RECORDS, records, 0)
            .map_err(map_err(super::object::SETTINGS))?;
        let t = std::time::Instant::now();
        let mut out = Vec::new();
        let read = match &self.walk {
            Some(Walk::Storage(link)) => read_run(link, &mut out),
            Some(Walk::Tcp(link)) => each_namespace(link, &mut out),
            None => Ok(()),
        };
        tracing::debug!(records, bytes = out.len(), took = ?t.elapsed(), "sweep pass");
        // Back to counting only, whatever happened.
        let reset = sync::lock(maps).settings.set(SETTING_SWEEP_RECORDS, SWEEP_COUNT, 0);
        read.map_err(KernelError::Sweep)?;
        reset.map_err(map_err(super::object::SETTINGS))?;
        Ok(out)
    }
}

/// One run of an iterator link, read to its end into `out`.
fn read_run(link: &OwnedFd, out: &mut Vec<u8>) -> std::io::Result<()> {
    sys::bpf_iter_create(link.as_fd())?.read_to_end(out).map(drop)
}

/// Namespaces the TCP walk could not enter were said once; a new kind of failure is
/// said again.
static ENTER_FAILURE_SAID: Mutex<Option<std::io::ErrorKind>> = Mutex::new(None);

/// The TCP walk: a run in each network namespace of the node. The iterator takes the
/// namespace of the thread that makes the run, so each run is made inside it (and read
/// there too: the run is read at once). A namespace that cannot be entered is left out
/// and said in the log.
fn each_namespace(link: &OwnedFd, out: &mut Vec<u8>) -> std::io::Result<()> {
    let namespaces = netns::all();
    let each = netns::in_each(&namespaces, || {
        let mut buf = Vec::new();
        read_run(link, &mut buf).map(|()| buf)
    })?;
    for buf in each.done {
        out.extend_from_slice(&buf);
    }
    if let Some((ns, e)) =
        each.skipped.iter().find(|(_, e)| e.kind() != std::io::ErrorKind::NotFound)
    {
        let mut said = sync::lock(&ENTER_FAILURE_SAID);
        if *said != Some(e.kind()) {
            *said = Some(e.kind());
            tracing::warn!(
                namespace = %ns.display(), error = %e, skipped = each.skipped.len(),
                "the live sweep (TCP iterator) cannot enter some network namespaces; their \
                 connections count when they close (entering one needs CAP_SYS_ADMIN)"
            );
        }
    }
    Ok(())
}

/// Which connections a listing wants: of this cell, at the end `side` says, with this
/// verdict; `None` is any.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ListFilter {
    pub(crate) cell: Option<u32>,
    pub(crate) side: Side,
    pub(crate) verdict: Option<Verdict>,
}

/// Which end of a connection a listing's cell names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Side {
    /// Either end.
    #[default]
    Either,
    /// The server's: the connections into the cell.
    Into,
    /// Every client side into any drained cell, whatever the cell (a drain's holdouts).
    Holdouts,
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
    for rec in out.chunks_exact(SeedOutcome::BYTES) {
        match SeedOutcome::decode(rec).map_or(0, |o| o.what) {
            SeedOutcome::SEEDED => done.seeded += 1,
            SeedOutcome::ALREADY_TRACKED => done.already_tracked += 1,
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
