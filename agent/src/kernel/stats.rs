//! Reads the per-cell-pair statistics and bookkeeping counters, summing per-CPU copies.
use agent_common::{COUNTERS_LEN, LIVE_CONNS, PAIR_OVERFLOW_CAPACITY, PROFILE_SLOTS, PairStats};
use agent_core::metrics::{MapFill, OpTime, Snapshot};

use super::{
    error::{KernelError, map_err},
    maps::Maps,
    object,
};

pub(super) fn read(m: &Maps) -> Result<Snapshot, KernelError> {
    let mut pairs = Vec::new();
    for item in m.pair_stats.iter() {
        let (key, per_cpu) = item.map_err(map_err(object::PAIR_STATS))?;
        let mut sum = PairStats::ZERO;
        for v in per_cpu.iter() {
            sum.merge(v);
        }
        pairs.push((key, sum));
    }
    // What went to the overflow table: added to the pair's per-CPU sum, or a pair of its
    // own when the per-CPU table never got an entry for it.
    let mut overflow = Vec::new();
    for item in m.pair_overflow.iter() {
        overflow.push(item.map_err(map_err(object::PAIR_OVERFLOW))?);
    }
    pairs.sort_unstable_by_key(|(k, _)| *k);
    let overflow_len = overflow.len() as u64;
    for (key, v) in overflow {
        match pairs.binary_search_by_key(&key, |(k, _)| *k) {
            Ok(i) => pairs[i].1.merge(&v),
            Err(i) => pairs.insert(i, (key, v)),
        }
    }

    let mut counters = [0u64; COUNTERS_LEN as usize];
    for (i, slot) in (0..COUNTERS_LEN).zip(counters.iter_mut()) {
        let per_cpu = m.counters.get(&i, 0).map_err(map_err(object::COUNTERS))?;
        *slot = per_cpu.iter().sum();
    }
    let live = m.live.get(&LIVE_CONNS, 0).map_err(map_err(object::LIVE))?;
    let mut ops = Vec::new();
    for slot in 0..PROFILE_SLOTS {
        let per_cpu = m.profile.get(&slot, 0).map_err(map_err(object::PROFILE))?;
        let (runs, ns) = per_cpu.iter().fold((0, 0), |(r, n), c| (r + c.runs, n + c.ns));
        if runs > 0 {
            ops.push(OpTime { op: slot, runs, ns });
        }
    }

    let c = m.active();
    let (v4, v6) = c.prefixes.iter().fold((0u64, 0u64), |(a, b), (n, _)| match n {
        agent_core::config::IpNet::V4(_) => (a + 1, b),
        agent_core::config::IpNet::V6(_) => (a, b + 1),
    });
    let cap = m.capacity;
    let fill = vec![
        MapFill { map: "conns", entries: live, capacity: cap.conns.into() },
        MapFill { map: "pair_stats", entries: pairs.len() as u64, capacity: cap.pair_stats.into() },
        MapFill {
            map: "pair_overflow",
            entries: overflow_len,
            capacity: PAIR_OVERFLOW_CAPACITY.into(),
        },
        MapFill { map: "cells_v4", entries: v4, capacity: cap.cells_v4.into() },
        MapFill { map: "cells_v6", entries: v6, capacity: cap.cells_v6.into() },
        MapFill { map: "policy", entries: c.allow.len() as u64, capacity: cap.policy.into() },
    ];
    Ok(Snapshot { pairs, counters, fill, undecodable_events: 0, ops })
}
