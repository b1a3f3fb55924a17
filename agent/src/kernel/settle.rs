//! The agent's side of connections to Service addresses (`service_addr.rs` and
//! `settle.rs` in the programs): writing where each went into `RESOLVED`, settling the
//! connections of `DEFERRED` it answers, and removing what was settled. The settling
//! runs by whichever way the kernel allows (see [`Way`]).
use std::{
    io::Read,
    os::fd::{AsFd, OwnedFd},
    sync::Mutex,
};

use agent_common::{Deferred, Resolution};
use aya::{
    Btf, Ebpf,
    maps::MapData,
    programs::{ProgramFd, RawTracePoint},
};

use super::{
    error::{KernelError, map_err},
    features::{Feature, Findings, Found, Without},
    maps::Maps,
    object::{self, PROBE_RAW_TP, SETTLE, SETTLE_ONE},
    sweep::{load_iterator, refusal},
};
use crate::{
    host::{bpffs::PinDir, sys},
    sync,
};

/// How `DEFERRED` is settled: the rungs of its ladder, best first.
enum Way {
    /// The iterator over `DEFERRED`'s elements, linked to it: one walk settles them all.
    Iterator(OwnedFd),
    /// The raw-tracepoint program, run once per answered cookie (`BPF_PROG_TEST_RUN`).
    TestRun(ProgramFd),
}

pub(super) struct Settler {
    way: Option<Way>,
}

impl Settler {
    /// Probes the ways in order, unless `without` rules them out, and keeps the first
    /// that loads and runs; records what it found of each. `dir` holds the pinned
    /// `DEFERRED` (the agent's handle on it is in `Maps`).
    pub(super) fn new(
        ebpf: &mut Ebpf,
        btf: &Btf,
        dir: &PinDir,
        without: &Without,
        found: &mut Findings,
    ) -> Self {
        let mut way = None;
        for feature in [Feature::MapElemIter, Feature::ProgTestRun] {
            if without.has(feature) {
                found.record(feature, Found::Forced);
                continue;
            }
            if way.is_some() {
                // Only the first that works is used; the next is probed for the record,
                // with the smallest program of its kind.
                let tried = test_run_probe(ebpf, PROBE_RAW_TP).and_then(|w| w.run_probe());
                found.record(
                    feature,
                    tried.map_or_else(|e| Self::refused(feature, &e), |()| Found::Works),
                );
                continue;
            }
            match Self::make(ebpf, btf, dir, feature).and_then(|w| w.run_probe().map(|()| w)) {
                Ok(w) => {
                    found.record(feature, Found::Works);
                    way = Some(w);
                }
                Err(e) => found.record(feature, Self::refused(feature, &e)),
            }
        }
        Self { way }
    }

    fn refused(feature: Feature, e: &KernelError) -> Found {
        let what = if feature == Feature::MapElemIter {
            "the iterator over map elements (iter/bpf_map_elem)"
        } else {
            "BPF_PROG_TEST_RUN of a raw-tracepoint program"
        };
        Found::Refused(refusal(what, e))
    }

    fn make(
        ebpf: &mut Ebpf,
        btf: &Btf,
        dir: &PinDir,
        feature: Feature,
    ) -> Result<Way, KernelError> {
        if feature == Feature::MapElemIter {
            let prog = load_iterator(ebpf, btf, SETTLE)?;
            let map =
                MapData::from_pin(dir.map(object::DEFERRED)).map_err(map_err(object::DEFERRED))?;
            let link = sys::bpf_map_iter_link(prog.as_fd(), map.fd().as_fd())
                .map_err(KernelError::IterLink)?;
            return Ok(Way::Iterator(link));
        }
        test_run_probe(ebpf, SETTLE_ONE)
    }

    /// Writes `resolved` (socket cookie, where it went), then counts the deferred
    /// connections they answer and removes them; returns how many it settled.
    pub(super) fn resolve(
        &self,
        maps: &Mutex<Maps>,
        resolved: &[(u64, Resolution)],
    ) -> Result<usize, KernelError> {
        let waiting: Vec<u64> = {
            let mut m = sync::lock(maps);
            for (cookie, r) in resolved {
                m.resolved.insert(cookie, r, 0).map_err(map_err(object::RESOLVED))?;
            }
            match self.way {
                // Only those it answers, and that closed already.
                Some(Way::TestRun(_)) => resolved
                    .iter()
                    .map(|(cookie, _)| *cookie)
                    .filter(|c| m.deferred.get(c, 0).is_ok())
                    .collect(),
                _ => Vec::new(),
            }
        };
        match &self.way {
            Some(w @ Way::Iterator(_)) => w.run_probe()?,
            Some(Way::TestRun(prog)) => {
                for cookie in waiting {
                    sys::bpf_prog_test_run(prog.as_fd(), &[cookie]).map_err(KernelError::Settle)?;
                }
            }
            None => return Ok(0),
        }
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

/// The raw-tracepoint program `name`, loaded to be run with `BPF_PROG_TEST_RUN`.
fn test_run_probe(ebpf: &mut Ebpf, name: &'static str) -> Result<Way, KernelError> {
    let prog = ebpf.program_mut(name).ok_or(KernelError::Missing(name))?;
    let typed = |source| KernelError::Program { name, source };
    let raw: &mut RawTracePoint = prog.try_into().map_err(typed)?;
    raw.load().map_err(|e| super::attach::refused(name, e))?;
    let fd = raw.fd().map_err(typed)?.try_clone().map_err(KernelError::Settle)?;
    Ok(Way::TestRun(fd))
}

impl Way {
    /// One run that settles whatever is answered: the whole walk, or (as a probe) the
    /// program on cookie 0, which no connection has.
    fn run_probe(&self) -> Result<(), KernelError> {
        match self {
            Self::Iterator(link) => {
                let mut file = sys::bpf_iter_create(link.as_fd()).map_err(KernelError::Sweep)?;
                let mut out = Vec::new();
                file.read_to_end(&mut out).map_err(KernelError::Sweep).map(drop)
            }
            Self::TestRun(prog) => {
                sys::bpf_prog_test_run(prog.as_fd(), &[0]).map(drop).map_err(KernelError::Settle)
            }
        }
    }
}
