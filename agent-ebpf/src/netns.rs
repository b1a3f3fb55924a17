//! Which source address a network namespace's TCP sockets use, learned from their
//! connections (`sock_ops`), so that enforce mode can judge a `connect()` on an unbound
//! socket before the kernel picks its source. A pod's namespace has one address per
//! family; a node's own has many and is marked ambiguous, and its unbound sockets are then
//! not judged (counted as unresolved).
#![expect(unsafe_code, reason = "a namespace entry is updated in place through its map pointer")]
use agent_common::{AF_INET, AF_INET6, CELL_IGNORED, CONN_USER_BOUND, Conn, NetnsAddr, NetnsKey};

use crate::maps::NETNS_ADDR;

/// The key of `addr` (IPv4 in the first 4 bytes when `v6` is false): v4-mapped IPv6
/// addresses are IPv4.
#[inline(always)]
fn key(netns_cookie: u64, addr: &[u8; 16], v6: bool) -> (NetnsKey, [u8; 16]) {
    let (family, a) = match (v6, crate::cells::v4_mapped(addr)) {
        (true, None) => (u32::from(AF_INET6), *addr),
        (true, Some(v4)) => {
            (u32::from(AF_INET), [v4[0], v4[1], v4[2], v4[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        }
        (false, _) => (u32::from(AF_INET), *addr),
    };
    (NetnsKey { netns_cookie, family, _pad: 0 }, a)
}

/// Notes that a socket of `netns_cookie` has local address `addr`, whose cell the
/// caller looked up already, from a connection that got established (so the address is
/// really the namespace's). Ignored ranges (loopback) and link-local addresses
/// (169.254.0.0/16, fe80::/10: never the source towards a cell's routable address) say
/// nothing about the address unbound sockets use, and are skipped: otherwise one
/// link-local connection would make the namespace ambiguous, and its unbound connects
/// unjudged.
///
/// A function of its own (a BPF-to-BPF call): inlined, its locals would push the
/// `sock_ops` program past the 512-byte stack.
///
/// `conn`, the client connection's storage (null for a server's socket): a source the
/// process bound itself (`CONN_USER_BOUND`, perhaps an address not its own, with
/// IP_FREEBIND) teaches nothing; only one the kernel chose does.
///
/// # Safety
/// `conn` must be null or point to a live `Conn` (the connection's socket storage),
/// readable for the call.
#[inline(never)]
pub(crate) unsafe fn learn(
    netns_cookie: u64,
    addr: &[u8; 16],
    v6: bool,
    cell: u32,
    conn: *const Conn,
) {
    // SAFETY: `conn` per the contract; one byte read.
    let bound = !conn.is_null() && unsafe { (*conn).flags } & CONN_USER_BOUND != 0;
    if cell == CELL_IGNORED || bound || link_local(addr, v6) {
        return;
    }
    let (k, a) = key(netns_cookie, addr, v6);
    match NETNS_ADDR.get_ptr_mut(k) {
        Some(known) => {
            // SAFETY: `known` points to a live entry; a racing writer can only set the
            // same address or mark it ambiguous, both of which are safe outcomes.
            unsafe {
                if (*known).ambiguous == 0 && (*known).addr != a {
                    (*known).ambiguous = 1;
                }
            }
        }
        None => {
            let _ = NETNS_ADDR.insert(k, NetnsAddr { addr: a, ambiguous: 0, _pad: 0 }, 0);
        }
    }
}

/// Whether `addr` is link-local: 169.254.0.0/16 (also v4-mapped) or fe80::/10. Read in
/// place, so `learn`'s frame holds no copy of it.
#[inline(always)]
fn link_local(addr: &[u8; 16], v6: bool) -> bool {
    let mapped = v6 && addr[..10].iter().all(|b| *b == 0) && addr[10] == 0xff && addr[11] == 0xff;
    if v6 && !mapped {
        return addr[0] == 0xfe && addr[1] & 0xc0 == 0x80;
    }
    let v4 = if mapped { &addr[12..14] } else { &addr[0..2] };
    v4[0] == 169 && v4[1] == 254
}

/// The address an unbound socket of `netns_cookie` connecting to `dst` will use, when
/// it is known and unique, and whether it is IPv6.
#[inline(always)]
pub(crate) fn source_for(netns_cookie: u64, dst: &[u8; 16], v6: bool) -> Option<([u8; 16], bool)> {
    let (k, _) = key(netns_cookie, dst, v6);
    // SAFETY: the value is copied out at once.
    let known = unsafe { NETNS_ADDR.get(k) }.copied()?;
    (known.ambiguous == 0).then_some((known.addr, k.family == u32::from(AF_INET6)))
}
