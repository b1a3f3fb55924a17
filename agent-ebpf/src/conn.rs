//! A connection's state in its socket's storage (`CONN`): found or made from whichever
//! socket pointer a program has, and the capacity every tracked connection counts
//! against.
#![expect(unsafe_code, reason = "socket storage is reached through raw helpers and pointers")]

use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd},
    ptr,
};

use agent_common::{CTR_CONN_FORGOTTEN, CTR_CONN_TRACKED, Conn, LIVE_CONNS, SETTING_CONN_CAPACITY};
use aya_ebpf::{
    bindings::BPF_SK_STORAGE_GET_F_CREATE,
    helpers::generated::{bpf_sk_storage_delete, bpf_sk_storage_get},
};

use crate::{
    maps::{CONN, LIVE, SETTINGS},
    stats::count,
};

/// The `CONN` map as the helpers take it.
#[inline(always)]
fn map() -> *mut c_void {
    (&raw const CONN).cast_mut().cast()
}

/// The storage of socket `sk`, if it has one.
#[inline(always)]
pub(crate) fn get(sk: *mut c_void) -> Option<*mut Conn> {
    // SAFETY: `sk` is a socket pointer the verifier typed for this program; a null
    // value pointer with no flags only looks up.
    let p = unsafe { bpf_sk_storage_get(map(), sk, ptr::null_mut(), 0) };
    (!p.is_null()).then(|| p.cast())
}

/// The storage of socket `sk`, made (zeroed, or a copy of `init`, a whole `Conn` in a
/// map value) if it has none. `None` only when the kernel cannot allocate it. Callers
/// fill it in place: a `Conn` on the stack would not fit beside the rest.
#[inline(always)]
pub(crate) fn get_or_make(sk: *mut c_void, init: Option<*mut Conn>) -> Option<*mut Conn> {
    let flags = u64::from(BPF_SK_STORAGE_GET_F_CREATE);
    let init: *mut c_void = init.map_or(ptr::null_mut(), <*mut Conn>::cast);
    // SAFETY: as in `get`; `init` is null or a whole `Conn` the helper copies from.
    let p = unsafe { bpf_sk_storage_get(map(), sk, init, flags) };
    (!p.is_null()).then(|| p.cast())
}

/// Frees the storage of `sk` early (a connection that will not be tracked).
#[inline(always)]
pub(crate) fn forget(sk: *mut c_void) {
    // SAFETY: as in `get`.
    let _ = unsafe { bpf_sk_storage_delete(map(), sk) };
}

/// Counts a connection against `--conn-capacity`: false (and nothing counted) when as
/// many are tracked already.
#[inline(always)]
pub(crate) fn admit() -> bool {
    let Some(live) = LIVE.get_ptr_mut(LIVE_CONNS) else { return false };
    let cap = u64::from(SETTINGS.get(SETTING_CONN_CAPACITY).copied().unwrap_or(0));
    // A compare-and-swap loop (bounded: another CPU can win only so often), so the count
    // never passes the capacity, not even for a moment.
    for _ in 0..8 {
        // SAFETY: `live` points to a live array value, 8-aligned, shared by the CPUs; an
        // aligned 8-byte load is one instruction.
        let now = unsafe { ptr::read_volatile(live) };
        if now >= cap {
            return false;
        }
        // SAFETY: as above.
        let (_, won) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
                live,
                now,
                now + 1,
            )
        };
        if won {
            count(CTR_CONN_TRACKED);
            return true;
        }
    }
    false
}

/// A tracked connection ended: its place is free.
#[inline(always)]
pub(crate) fn release() {
    if let Some(live) = LIVE.get_ptr_mut(LIVE_CONNS) {
        // SAFETY: as in `admit`.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(live, u64::MAX) };
    }
    count(CTR_CONN_FORGOTTEN);
}
