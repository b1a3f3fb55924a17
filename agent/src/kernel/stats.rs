//! Reads the per-cell-pair statistics and bookkeeping counters, summing per-CPU copies.
#![expect(unsafe_code, reason = "batched map reads hand back raw bytes of plain-data values")]

use std::os::fd::AsFd;

use agent_common::{
    CELL_FLAG_GLOBAL, COUNTERS_LEN, DnsKey, DnsStats, LIVE_CONNS, PROFILE_SLOTS, PairKey,
    PairStats, UdpStats,
};
use agent_core::{
    config::unix_seconds,
    metrics::{Catalog, MapFill, OpTime, Snapshot, TemporaryRule},
};

use super::{
    error::{KernelError, map_err},
    maps::Maps,
    object,
};
use crate::host;

pub(super) fn read(m: &Maps) -> Result<Snapshot, KernelError> {
    let mut pairs = match batched(m) {
        Ok(pairs) => pairs,
        // Batched lookups are older than any kernel cellwatch runs on; one at a time else.
        Err(e) => {
            tracing::debug!(error = %e, "batched read of the pair table failed; reading one by one");
            one_by_one(m)?
        }
    };
    // What went to the overflow table: added to the pair's per-CPU sum, or a pair of its
    // own when the per-CPU table never got an entry for it.
    let mut overflow = Vec::new();
    for item in m.pair_overflow.iter() {
        overflow.push(item.map_err(map_err(object::PAIR_OVERFLOW))?);
    }
    pairs.sort_unstable_by_key(|(k, _)| *k);
    let overflow_len = overflow.len();
    let mut own = Vec::new();
    for (key, v) in overflow {
        match pairs.binary_search_by_key(&key, |(k, _)| *k) {
            Ok(i) => pairs[i].1.merge(&v),
            Err(_) => own.push((key, v)),
        }
    }
    if !own.is_empty() {
        pairs.extend(own);
        pairs.sort_unstable_by_key(|(k, _)| *k);
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

    let (udp, dns) = udp_and_dns(m)?;
    let c = m.active();
    let fill = fill(m, live, [pairs.len(), overflow_len, udp.len(), dns.len()]);
    let catalog = catalog(m, c);
    Ok(Snapshot {
        pairs,
        udp,
        dns,
        counters,
        fill,
        undecodable_events: 0,
        log_suppressed: 0,
        ops,
        catalog,
        holdouts: Vec::new(),
    })
}

/// Each kernel map's entries and capacity: `live` connections tracked, and `lens` those
/// of the tables just read (the pair table, its overflow, UDP's and DNS's).
fn fill(m: &Maps, live: u64, lens: [usize; 4]) -> Vec<MapFill> {
    let c = m.active();
    let [pairs, overflow, udp, dns] = lens.map(|n| n as u64);
    let (v4, v6) = c.prefixes.iter().fold((0u64, 0u64), |(a, b), (n, _)| match n {
        agent_core::config::IpNet::V4(_) => (a + 1, b),
        agent_core::config::IpNet::V6(_) => (a, b + 1),
    });
    let cap = m.capacity;
    vec![
        MapFill { map: "conns", entries: live, capacity: cap.conns.into() },
        MapFill { map: "pair_stats", entries: pairs, capacity: cap.pair_stats.into() },
        MapFill { map: "pair_overflow", entries: overflow, capacity: cap.pair_overflow.into() },
        MapFill { map: "cells_v4", entries: v4, capacity: cap.cells_v4.into() },
        MapFill { map: "cells_v6", entries: v6, capacity: cap.cells_v6.into() },
        MapFill { map: "policy", entries: c.allow.len() as u64, capacity: cap.policy.into() },
        MapFill { map: "udp_flows", entries: m.udp_held, capacity: cap.udp_flows.into() },
        MapFill {
            map: "udp_stats",
            entries: udp,
            capacity: agent_common::UDP_STATS_CAPACITY.into(),
        },
        MapFill {
            map: "dns_stats",
            entries: dns,
            capacity: agent_common::DNS_STATS_CAPACITY.into(),
        },
    ]
}

/// What the config in force names, for the catalog's and the drains' families.
fn catalog(m: &Maps, c: &agent_core::policy::Compiled) -> Catalog {
    Catalog {
        cells: c.info.iter().map(|(id, i)| (*id, i.flags & CELL_FLAG_GLOBAL != 0)).collect(),
        services: c.services.clone(),
        drains: c
            .drains
            .iter()
            .map(|(id, since)| {
                let since = since.or_else(|| m.drained_since.get(id).copied());
                (*id, since.map_or(0, unix_seconds))
            })
            .collect(),
        temporary: agent_core::policy::expiry_gauges(&c.temporary, std::time::SystemTime::now())
            .iter()
            .map(|t| TemporaryRule {
                from: t.from.clone(),
                to: t.to.clone(),
                reason: t.reason.clone(),
                until: unix_seconds(t.until),
            })
            .collect(),
    }
}

/// The UDP and DNS tables (cells x cells and cells x services x rcodes: small), summed
/// over CPUs, sorted by key.
type UdpAndDns = (Vec<(PairKey, UdpStats)>, Vec<(DnsKey, DnsStats)>);

fn udp_and_dns(m: &Maps) -> Result<UdpAndDns, KernelError> {
    let mut udp = Vec::new();
    for item in m.udp_stats.iter() {
        let (key, per_cpu) = item.map_err(map_err(object::UDP_STATS))?;
        let mut sum = UdpStats::ZERO;
        per_cpu.iter().for_each(|v| sum.merge(v));
        udp.push((key, sum));
    }
    let mut dns = Vec::new();
    for item in m.dns_stats.iter() {
        let (key, per_cpu) = item.map_err(map_err(object::DNS_STATS))?;
        let mut sum = DnsStats::ZERO;
        per_cpu.iter().for_each(|v| sum.merge(v));
        dns.push((key, sum));
    }
    udp.sort_unstable_by_key(|(k, _)| *k);
    dns.sort_unstable_by_key(|(k, _)| *k);
    Ok((udp, dns))
}

fn one_by_one(m: &Maps) -> Result<Vec<(PairKey, PairStats)>, KernelError> {
    let mut pairs = Vec::new();
    for item in m.pair_stats.iter() {
        let (key, per_cpu) = item.map_err(map_err(object::PAIR_STATS))?;
        let mut sum = PairStats::ZERO;
        for v in per_cpu.iter() {
            sum.merge(v);
        }
        pairs.push((key, sum));
    }
    Ok(pairs)
}

/// The pair table in batches of entries (`BPF_MAP_LOOKUP_BATCH`): one system call per
/// batch instead of two per pair, which at 20,000 pairs is most of a scrape.
fn batched(m: &Maps) -> std::io::Result<Vec<(PairKey, PairStats)>> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    let (key_size, one) = (size_of::<PairKey>(), size_of::<PairStats>().next_multiple_of(8));
    let value_size = one * cpus;
    // About 4 MiB of values a batch, and room for a whole hash bucket.
    let room = ((4 << 20) / value_size).clamp(64, 4096);
    let (mut keys, mut values) = (vec![0u8; room * key_size], vec![0u8; room * value_size]);
    let fd = aya::maps::IterableMap::map(&m.pair_stats).fd().as_fd();
    let mut batch = host::sys::Batch::default();
    let mut pairs = Vec::new();
    while !batch.done {
        // SAFETY: `pair_stats` is a per-CPU map of `PairKey` to `PairStats` (aya checked
        // its key and value sizes when it took the map), so `key_size` is its key size
        // and `value_size` its value size as the kernel writes it (the 8-aligned
        // `PairStats` times the possible CPUs, which `nr_cpus` counts); `keys` and
        // `values` hold `room` of each, and the call asks for no more than fit.
        let n = unsafe {
            host::sys::bpf_map_lookup_batch(
                fd,
                &mut batch,
                (&mut keys, key_size),
                (&mut values, value_size),
            )
        }?;
        for i in 0..n {
            let key: PairKey = pod(&keys[i * key_size..][..key_size]);
            let mut sum = PairStats::ZERO;
            for cpu in values[i * value_size..][..value_size].chunks_exact(one) {
                sum.merge(&pod::<PairStats>(&cpu[..size_of::<PairStats>()]));
            }
            pairs.push((key, sum));
        }
    }
    Ok(pairs)
}

/// A plain-data value from its bytes as the kernel wrote them.
fn pod<T: aya::Pod>(bytes: &[u8]) -> T {
    assert_eq!(bytes.len(), size_of::<T>(), "a value's bytes");
    // SAFETY: `T` is plain data (aya::Pod: any bytes are a valid value, no padding) and
    // `bytes` holds exactly one, read unaligned.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}
