//! The live sweep: every `--live-interval` the agent walks the open tracked connections;
//! for each it claims what the connection moved since the last claim (bytes each way,
//! retransmits) into its pair's counters and observes its smoothed RTT, so long-lived
//! connections count while they are open. Two walks do the same work, whichever the
//! kernel loads (the agent probes them in this order): [`cellwatch_sweep`], an iterator
//! over the connection storage (every socket that has it, in every network namespace, in
//! one walk), and [`cellwatch_sweep_tcp`], the TCP iterator, which walks one network
//! namespace's sockets (the agent runs it in each) and holds each socket's lock. With `SETTING_SWEEP_RECORDS` it also writes a
//! brief of every connection, or the full record of the ones `WANTED` names, which
//! `/connections` serves: the same figures the counters hold.
#![expect(unsafe_code, reason = "the iterator hands the storage value as a raw pointer")]

use agent_common::{
    Brief, CONN_ESTABLISHED, CONN_SEEDED, CONN_SERVICE_ADDR, CONN_TRACKED, CTR_SWEEP_BUSY,
    CTR_SWEEP_VISITED, Claimed, Conn, Direction, LIST_ANY, LIST_HOLDOUTS, LIST_INTO, PairKey,
    SETTING_LIST_CELL, SETTING_LIST_INTO, SETTING_LIST_VERDICT, SETTING_SWEEP_RECORDS, SWEEP_BRIEF,
    SWEEP_COUNT, SWEEP_WANTED, SweepTail, observes_rtt,
};

use crate::{
    conn,
    ctx::{Iter, StorageIterCtx, TcpIterCtx},
    kread::Sock,
    maps::{SEEDED, SETTINGS, WANTED},
    service_addr,
    stats::{Slot, count},
};

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/bpf_sk_storage_map")]
fn cellwatch_sweep(ctx: *mut StorageIterCtx) -> i32 {
    if let Some(it) = Iter::storage(ctx) {
        // SAFETY: the iterator walks `CONN` (the agent links it over that map), so the
        // step's value is the `Conn` storage of the step's socket, live for the step.
        unsafe { try_sweep::<false>(&it, it.value().cast()) };
    }
    0
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
fn cellwatch_sweep_tcp(ctx: *mut TcpIterCtx) -> i32 {
    if let Some(it) = Iter::tcp(ctx)
        && let Some(c) = conn::get(it.sk())
    {
        // SAFETY: `c` is the `Conn` storage of the step's socket, which the walk holds
        // (and so keeps alive) for the step.
        unsafe { try_sweep::<true>(&it, c) };
    }
    0
}

/// One open connection `c` (its socket's storage) at a step of either walk. `LOCKED`:
/// the walk holds the socket's lock while the program runs (the TCP iterator does, since
/// Linux 6.0), so one read is consistent; otherwise the read waits for a quiet moment.
/// (A constant, so each walk's program has only its own read: a run-time choice between
/// the two makes code the verifier refuses.)
///
/// # Safety
/// `c` must point to the `Conn` storage of the step's socket (`it.sk()`), live and
/// writable for the whole step; others write it only as the close and the claims do (one
/// word, atomics).
#[inline(always)]
unsafe fn try_sweep<const LOCKED: bool>(it: &Iter, c: *mut Conn) {
    // SAFETY: `c` per the contract; `closed` is read as the one word the close stores.
    // Fields are read one by one (the whole `Conn` would not fit the stack beside the
    // rest).
    let (flags, closed, mut key, cookie, direction, src_cell) = unsafe {
        (
            (*c).flags,
            core::ptr::read_volatile(&raw const (*c).closed),
            (*c).pair_key(),
            (*c).cookie,
            (*c).direction(),
            (*c).src_cell,
        )
    };
    let wanted = CONN_TRACKED | CONN_ESTABLISHED;
    if flags & wanted != wanted || closed != 0 {
        return;
    }
    let records = SETTINGS.get(SETTING_SWEEP_RECORDS).copied().unwrap_or(0);
    // A connection to a service address counts once the agent has found its backend.
    let pending = flags & CONN_SERVICE_ADDR != 0 && {
        match service_addr::resolution(cookie) {
            Some(r) => {
                // SAFETY: as above; the resolution is the same whoever applies it.
                key = unsafe { service_addr::apply(c, &r) };
                false
            }
            None => true,
        }
    };
    if pending && records == SWEEP_COUNT {
        // Asked again at each sweep until answered (a request can be dropped).
        // SAFETY: as above.
        crate::events::resolve_request(unsafe { &*c });
        return;
    }
    // A listing's first pass only says which connections there are; its second claims
    // and reports the ones it chose (the others count at the next periodic sweep).
    if records == SWEEP_BRIEF {
        // SAFETY: as above.
        unsafe { brief(it, c, cookie, src_cell) };
        return;
    }
    // SAFETY: the value is only tested for presence.
    if records == SWEEP_WANTED && unsafe { WANTED.get(cookie) }.is_none() {
        return;
    }
    count(CTR_SWEEP_VISITED);
    let seeded = flags & CONN_SEEDED != 0;
    // SAFETY: `c` per the contract.
    let srtt_us =
        unsafe { claim::<LOCKED>(it, c, &key, (flags, cookie, direction, src_cell), pending) };
    if records == SWEEP_WANTED {
        // SAFETY: `c` per the contract.
        unsafe { report(it, c, cookie, seeded, srtt_us) };
    }
}

/// Reads the socket of `c` and, unless its backend is `pending`, claims what it moved
/// since the last claim into its pair (`key`) and samples its RTT when this side
/// observes it. Returns the smoothed RTT read (0 when the socket stayed busy).
///
/// # Safety
/// As for [`try_sweep`].
#[inline(always)]
unsafe fn claim<const LOCKED: bool>(
    it: &Iter,
    c: *mut Conn,
    key: &PairKey,
    (flags, cookie, direction, src_cell): (u8, u64, Direction, u32),
    pending: bool,
) -> u32 {
    let reading =
        Sock::of(it.sk().cast_const()).and_then(|s| if LOCKED { s.read() } else { s.read_quiet() });
    let mut srtt_us = 0;
    match reading {
        None => count(CTR_SWEEP_BUSY),
        Some(r) => {
            srtt_us = r.srtt_us;
            if let Some(slot) = Slot::of(key).filter(|_| !pending) {
                if flags & CONN_SERVICE_ADDR != 0 {
                    // SAFETY: `c` per the contract; `slot` is the pair of `key`, which
                    // `apply` returned.
                    unsafe { service_addr::count_open(c, &slot) };
                }
                if flags & CONN_SEEDED != 0 {
                    // A connection older than the agent keeps its claims where its
                    // destroy can find them.
                    if let Some(s) = SEEDED.get_ptr_mut(cookie) {
                        // SAFETY: `s` points to a live entry of SEEDED.
                        unsafe {
                            slot.claim(
                                &raw mut (*s).claimed,
                                &(*s).base,
                                &r.progress,
                                r.fin_received,
                            );
                        }
                    }
                } else {
                    // SAFETY: `c` per the contract.
                    unsafe {
                        slot.claim(&raw mut (*c).claimed, &(*c).base, &r.progress, r.fin_received);
                    }
                }
                if observes_rtt(direction, src_cell) {
                    slot.rtt(r.srtt_us);
                }
            }
        }
    }
    srtt_us
}

/// The full record of `c` for a listing: the connection as stored, then what the sweep
/// found (its claims, as its pair's counters now hold them, and `srtt_us`).
///
/// # Safety
/// `c` must point to a live `Conn`, readable for the call.
#[inline(always)]
unsafe fn report(it: &Iter, c: *mut Conn, cookie: u64, seeded: bool, srtt_us: u32) {
    let claimed: Claimed = if seeded {
        // SAFETY: the value is copied out at once.
        unsafe { SEEDED.get(cookie) }.map_or_else(Claimed::default, |s| s.claimed)
    } else {
        // SAFETY: `c` per the contract.
        unsafe { (*c).claimed }
    };
    // SAFETY: as above.
    it.write(unsafe { &*c });
    it.write(&SweepTail { claimed, srtt_us, _pad: 0 });
}
/// A listing's brief of a connection that passes its filter (`SETTING_LIST_*`).
///
/// # Safety
/// `c` must point to a live `Conn`, readable for the call.
#[inline(always)]
unsafe fn brief(it: &Iter, c: *mut Conn, cookie: u64, src_cell: u32) {
    // SAFETY: `c` per the contract.
    let (start_ns, dst_cell, verdict, direction) =
        unsafe { ((*c).start_ns, (*c).dst_cell, (*c).verdict(), (*c).direction()) };
    let setting = |i| SETTINGS.get(i).copied().unwrap_or(LIST_ANY);
    let cell = setting(SETTING_LIST_CELL);
    let want_verdict = setting(SETTING_LIST_VERDICT);
    let cell_ok = match setting(SETTING_LIST_INTO) {
        LIST_INTO => cell == LIST_ANY || cell == dst_cell,
        LIST_HOLDOUTS => {
            direction == Direction::EGRESS && crate::cells::View::current().is_drained(dst_cell)
        }
        _ => cell == LIST_ANY || cell == src_cell || cell == dst_cell,
    };
    if cell_ok && (want_verdict == LIST_ANY || want_verdict == u32::from(verdict.0)) {
        it.write(&Brief { cookie, start_ns });
    }
}
