//! The live-connection table from userspace: listing it (for `/connections`) and
//! seeding it with connections older than the agent.
use agent_common::{ConnState, Owner, PairKey, VERDICT_VIOLATION};
use aya::maps::MapError;

use super::{
    error::{KernelError, map_err},
    maps::Maps,
    object,
};

/// One live connection as the kernel keeps it.
pub(crate) struct LiveConn {
    pub(crate) cookie: u64,
    pub(crate) state: ConnState,
    pub(crate) owner: Option<Owner>,
}

/// Connections for which `keep` says yes, at most `limit`.
pub(super) fn live(
    m: &Maps,
    limit: usize,
    keep: &dyn Fn(&ConnState) -> bool,
) -> Result<Vec<LiveConn>, KernelError> {
    let mut out = Vec::new();
    for item in m.conns.iter() {
        let (cookie, state) = match item {
            Ok(kv) => kv,
            // An entry removed between two steps of the walk: skip it.
            Err(MapError::KeyNotFound) => continue,
            Err(e) => return Err(map_err(object::CONNS)(e)),
        };
        if !keep(&state) {
            continue;
        }
        let owner = m.owners.get(&cookie, 0).ok();
        out.push(LiveConn { cookie, state, owner });
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// Puts a connection older than the agent in the table, unless the kernel already
/// tracks it; counts it opened (and a violation) for its pair. True if it was added.
pub(super) fn seed(m: &mut Maps, cookie: u64, state: &ConnState) -> Result<bool, KernelError> {
    let key = &state.pair_key();
    let violation = state.verdict == VERDICT_VIOLATION;
    match m.conns.insert(cookie, state, BPF_NOEXIST) {
        Ok(()) => {}
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
            return Ok(false);
        }
        Err(e) => return Err(map_err(object::CONNS)(e)),
    }
    let mut counts = m.seed_opened.get(key, 0).unwrap_or([0, 0]);
    counts[0] += 1;
    counts[1] += u64::from(violation);
    m.seed_opened.insert(key, counts, 0).map_err(map_err(object::SEED_OPENED))?;
    Ok(true)
}

/// Takes a seeded connection back out if it is still there (it closed before the agent
/// could see it close); returns whether it was.
pub(super) fn unseed(m: &mut Maps, cookie: u64, key: &PairKey) -> Result<bool, KernelError> {
    let violation = key.verdict == VERDICT_VIOLATION;
    if m.conns.remove(&cookie).is_err() {
        return Ok(false);
    }
    let mut counts = m.seed_opened.get(key, 0).unwrap_or([0, 0]);
    counts[0] = counts[0].saturating_sub(1);
    counts[1] = counts[1].saturating_sub(u64::from(violation));
    m.seed_opened.insert(key, counts, 0).map_err(map_err(object::SEED_OPENED))?;
    Ok(true)
}

/// `BPF_NOEXIST`: create, never overwrite.
const BPF_NOEXIST: u64 = 1;
