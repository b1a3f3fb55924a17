//! Address -> cell, and the verdict of a connection. One decision for audit and enforce.
use agent_common::{
    CELL_EXTERNAL, CELL_FLAG_GLOBAL, CELL_IGNORED, EXTERNAL_IGNORE, EXTERNAL_VIOLATION, PolicyKey,
    SETTING_EXTERNAL, VERDICT_ALLOWED, VERDICT_VIOLATION,
};
use aya_ebpf::maps::lpm_trie::Key;

use crate::maps::{CELL_INFO, CELLS_V4, CELLS_V6, POLICY, SETTINGS};

/// Cell of an address: IPv4 in the first 4 bytes when `v6` is false. A v4-mapped IPv6
/// address (`::ffff:a.b.c.d`) resolves as the IPv4 address.
#[inline(always)]
pub(crate) fn cell_of(addr: &[u8; 16], v6: bool) -> u32 {
    let v4 = if v6 { v4_mapped(addr) } else { Some([addr[0], addr[1], addr[2], addr[3]]) };
    let found = match v4 {
        Some(a) => CELLS_V4.get(Key::new(32, a)),
        None => CELLS_V6.get(Key::new(128, *addr)),
    };
    match found {
        Some(id) => *id,
        None => CELL_EXTERNAL,
    }
}

#[inline(always)]
fn v4_mapped(a: &[u8; 16]) -> Option<[u8; 4]> {
    let prefix = a[0] | a[1] | a[2] | a[3] | a[4] | a[5] | a[6] | a[7] | a[8] | a[9];
    if prefix == 0 && a[10] == 0xff && a[11] == 0xff {
        Some([a[12], a[13], a[14], a[15]])
    } else {
        None
    }
}

/// Verdict of a connection from `src` (client cell) to `dst` (server cell) on the server
/// `port`, or `None` when it is not to be tracked (ignored range, or `external: ignore`).
#[inline(always)]
pub(crate) fn verdict(src: u32, dst: u32, port: u16) -> Option<u8> {
    if src == CELL_IGNORED || dst == CELL_IGNORED {
        return None;
    }
    if src == CELL_EXTERNAL || dst == CELL_EXTERNAL {
        let mode = SETTINGS.get(SETTING_EXTERNAL).copied().unwrap_or(0);
        return match mode {
            EXTERNAL_IGNORE => None,
            // Neither end in a cell: no boundary is crossed.
            _ if src == dst => Some(VERDICT_ALLOWED),
            EXTERNAL_VIOLATION => Some(VERDICT_VIOLATION),
            _ => Some(VERDICT_ALLOWED),
        };
    }
    if src == dst {
        return Some(VERDICT_ALLOWED);
    }
    if is_global(src) || is_global(dst) || allowed(src, dst, port) || allowed(src, dst, 0) {
        return Some(VERDICT_ALLOWED);
    }
    Some(VERDICT_VIOLATION)
}

#[inline(always)]
fn is_global(cell: u32) -> bool {
    CELL_INFO.get(cell).is_some_and(|i| i.flags & CELL_FLAG_GLOBAL != 0)
}

#[inline(always)]
fn allowed(src: u32, dst: u32, port: u16) -> bool {
    let key = PolicyKey { src_cell: src, dst_cell: dst, port, _pad: [0; 6] };
    // SAFETY: the value is a u8 we only test for presence.
    unsafe { POLICY.get(key).is_some() }
}
