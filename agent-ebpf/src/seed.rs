//! Seeding: an iterator over the TCP sockets of the agent's network namespace, run once
//! at the agent's first start. For each socket the agent judged in `SEED_PLAN` (an
//! established connection older than the agent) it makes the connection's storage, as
//! if the programs had seen it open: counted opened (and a violation) for its pair, its
//! bytes counted from now, swept live like the others. Its close is seen by
//! `tcp:tcp_destroy_sock` (`destroy.rs`), which finds it in `SEEDED` by cookie. The
//! iterator holds each socket's lock while it runs, so what it reads is consistent.
#![expect(unsafe_code, reason = "the plan and the statistics slot are updated in place")]

use agent_common::{
    CONN_ESTABLISHED, CONN_SEEDED, CONN_TRACKED, Claimed, SeedOutcome, Seeded, Verdict,
};

use crate::{
    conn,
    ctx::{Iter, TcpIterCtx},
    kread::Sock,
    maps::{SEED_PLAN, SEEDED},
    stats::{Slot, add},
};

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
fn cellwatch_seed(ctx: *mut TcpIterCtx) -> i32 {
    if let Some(it) = Iter::tcp(ctx) {
        try_seed(&it);
    }
    0
}

#[inline(always)]
fn try_seed(it: &Iter) {
    let cookie = it.cookie();
    let Some(plan) = SEED_PLAN.get_ptr_mut(cookie) else { return };
    if conn::get(it.sk()).is_some() {
        let _ = SEED_PLAN.remove(cookie);
        it.write(&SeedOutcome { cookie, what: SeedOutcome::ALREADY_TRACKED });
        return;
    }
    let Some(now) = Sock::of(it.sk().cast_const()).and_then(|s| s.read()) else { return };
    if !conn::admit() {
        let _ = SEED_PLAN.remove(cookie);
        it.write(&SeedOutcome { cookie, what: SeedOutcome::NO_ROOM });
        return;
    }
    // The plan entry is the storage's first value: the connection as the agent judged
    // it, with what it moved so far as its base (everything before now is left out,
    // however much it was), and its flags last.
    // SAFETY: `plan` points to a live entry of SEED_PLAN, removed only below.
    let (key, verdict) = unsafe {
        (*plan).cookie = cookie;
        (*plan).base = now.progress;
        (*plan).claimed = Claimed::default();
        (*plan).flags = CONN_TRACKED | CONN_ESTABLISHED | CONN_SEEDED;
        ((*plan).pair_key(), (*plan).verdict())
    };
    let seeded = Seeded { key, base: now.progress, claimed: Claimed::default() };
    let made = SEEDED.insert(cookie, seeded, 0).is_ok()
        && conn::get_or_make(it.sk(), Some(plan)).is_some();
    let _ = SEED_PLAN.remove(cookie);
    if !made {
        let _ = SEEDED.remove(cookie);
        conn::release();
        it.write(&SeedOutcome { cookie, what: SeedOutcome::NO_ROOM });
        return;
    }
    if let Some(slot) = Slot::of(&key) {
        let s = slot.stats();
        // SAFETY: `s` is this CPU's value of a live pair entry.
        unsafe {
            add(&raw mut (*s).opened, 1);
            if verdict == Verdict::VIOLATION {
                add(&raw mut (*s).violations, 1);
            }
        }
    }
    it.write(&SeedOutcome { cookie, what: SeedOutcome::SEEDED });
}
