//! Address -> cell, and the verdict of a connection. One decision for audit and enforce.
//!
//! The cell map exists twice (sets A and B). A [`View`] reads the generation once and
//! then looks only in that set, so one verdict never mixes two configs.
#![expect(
    unsafe_code,
    reason = "an allow rule is looked up through a map pointer, the clock read by a raw helper"
)]
use agent_common::{
    ALLOW_FOREVER, CELL_EXTERNAL, CELL_FLAG_DRAIN_REFUSE, CELL_FLAG_DRAINED, CELL_FLAG_ENFORCE,
    CELL_FLAG_GLOBAL, CELL_IGNORED, CELL_SERVICE_ADDR, EXTERNAL_IGNORE, EXTERNAL_VIOLATION,
    NO_SERVICE, PolicyKey, SETTING_ENFORCE, SETTING_EXTERNAL, SETTING_GENERATION,
    SETTING_PORTED_SERVICES, ServiceKeyV4, ServiceKeyV6, Verdict, entry_cell, entry_service,
};
use aya_ebpf::{helpers::bpf_ktime_get_ns, maps::lpm_trie::Key};

use crate::maps::{
    CELL_INFO_A, CELL_INFO_B, CELLS_V4_A, CELLS_V4_B, CELLS_V6_A, CELLS_V6_B, POLICY_A, POLICY_B,
    SERVICES_UDP_V4_A, SERVICES_UDP_V4_B, SERVICES_UDP_V6_A, SERVICES_UDP_V6_B, SERVICES_V4_A,
    SERVICES_V4_B, SERVICES_V6_A, SERVICES_V6_B, SETTINGS,
};

/// One consistent set of cell maps: the one in force when the view was taken.
pub(crate) struct View {
    b: bool,
}

impl View {
    #[inline(always)]
    pub(crate) fn current() -> Self {
        Self { b: SETTINGS.get(SETTING_GENERATION).is_some_and(|g| *g & 1 == 1) }
    }

    /// Which set this view reads: 0 (A) or 1 (B).
    #[inline(always)]
    pub(crate) fn generation(&self) -> u8 {
        u8::from(self.b)
    }

    /// Cell of an address: IPv4 in the first 4 bytes when `v6` is false. A v4-mapped
    /// IPv6 address (`::ffff:a.b.c.d`) resolves as the IPv4 address.
    #[inline(always)]
    pub(crate) fn cell_of(&self, addr: &[u8; 16], v6: bool) -> u32 {
        entry_cell(self.entry_of(addr, v6))
    }

    /// The cell trie's entry for an address: its cell, and a service without ports
    /// whose prefix holds it (`agent_common::cell_entry`); [`CELL_EXTERNAL`] if none.
    #[inline(always)]
    fn entry_of(&self, addr: &[u8; 16], v6: bool) -> u32 {
        let v4 = if v6 { v4_mapped(addr) } else { Some([addr[0], addr[1], addr[2], addr[3]]) };
        let found = match (v4, self.b) {
            (Some(a), false) => CELLS_V4_A.get(Key::new(32, a)),
            (Some(a), true) => CELLS_V4_B.get(Key::new(32, a)),
            (None, false) => CELLS_V6_A.get(Key::new(128, *addr)),
            (None, true) => CELLS_V6_B.get(Key::new(128, *addr)),
        };
        found.copied().unwrap_or(CELL_EXTERNAL)
    }

    /// A server's cell and service: the cell lookup names a service without ports; one
    /// more lookup, only when the config has services with ports, finds one of those on
    /// `port` (which then wins).
    #[inline(always)]
    pub(crate) fn server_of(&self, addr: &[u8; 16], v6: bool, port: u16) -> (u32, u16) {
        let entry = self.entry_of(addr, v6);
        let (cell, service) = (entry_cell(entry), entry_service(entry));
        if cell == CELL_IGNORED
            || cell == CELL_EXTERNAL
            || cell == CELL_SERVICE_ADDR
            || !self.ported_services()
        {
            return (cell, service);
        }
        let port = port.to_be_bytes();
        let v4 = if v6 { v4_mapped(addr) } else { Some([addr[0], addr[1], addr[2], addr[3]]) };
        let found = match (v4, self.b) {
            (Some(a), false) => SERVICES_V4_A.get(Key::new(48, ServiceKeyV4 { port, addr: a })),
            (Some(a), true) => SERVICES_V4_B.get(Key::new(48, ServiceKeyV4 { port, addr: a })),
            (None, false) => SERVICES_V6_A.get(Key::new(144, ServiceKeyV6 { port, addr: *addr })),
            (None, true) => SERVICES_V6_B.get(Key::new(144, ServiceKeyV6 { port, addr: *addr })),
        };
        match found {
            #[expect(clippy::cast_possible_truncation, reason = "service ids are below 2^16")]
            Some(id) => (cell, *id as u16),
            None => (cell, service),
        }
    }

    /// A UDP server's cell and service: services with `protocol: udp` always name their
    /// ports, so they are in tries of their own, looked up once per flow.
    #[inline(always)]
    pub(crate) fn udp_server_of(&self, addr: &[u8; 16], v6: bool, port: u16) -> (u32, u16) {
        let cell = self.cell_of(addr, v6);
        if cell == CELL_IGNORED || cell == CELL_EXTERNAL || cell == CELL_SERVICE_ADDR {
            return (cell, NO_SERVICE);
        }
        let port = port.to_be_bytes();
        let v4 = if v6 { v4_mapped(addr) } else { Some([addr[0], addr[1], addr[2], addr[3]]) };
        let found = match (v4, self.b) {
            (Some(a), false) => SERVICES_UDP_V4_A.get(Key::new(48, ServiceKeyV4 { port, addr: a })),
            (Some(a), true) => SERVICES_UDP_V4_B.get(Key::new(48, ServiceKeyV4 { port, addr: a })),
            (None, false) => {
                SERVICES_UDP_V6_A.get(Key::new(144, ServiceKeyV6 { port, addr: *addr }))
            }
            (None, true) => {
                SERVICES_UDP_V6_B.get(Key::new(144, ServiceKeyV6 { port, addr: *addr }))
            }
        };
        #[expect(clippy::cast_possible_truncation, reason = "service ids are below 2^16")]
        (cell, found.map_or(NO_SERVICE, |id| *id as u16))
    }

    #[inline(always)]
    fn ported_services(&self) -> bool {
        SETTINGS.get(SETTING_PORTED_SERVICES + u32::from(self.b)).is_some_and(|s| *s == 1)
    }

    /// Verdict of a connection from `src` (client cell) to `dst` (server cell) on the
    /// server `port`, or `None` when it is not to be tracked (ignored range, or
    /// `external: ignore`).
    #[inline(always)]
    pub(crate) fn verdict(&self, src: u32, dst: u32, port: u16) -> Option<Verdict> {
        if src == CELL_IGNORED || dst == CELL_IGNORED {
            return None;
        }
        // A service address: tracked, and judged by its backend once the agent has found
        // it (`service_addr.rs`); enforce lets the connect through.
        if dst == CELL_SERVICE_ADDR {
            let ignored = src == CELL_EXTERNAL
                && SETTINGS.get(SETTING_EXTERNAL + u32::from(self.b)).copied()
                    == Some(EXTERNAL_IGNORE);
            return (!ignored).then_some(Verdict::ALLOWED);
        }
        if src == CELL_EXTERNAL || dst == CELL_EXTERNAL {
            let mode = SETTINGS.get(SETTING_EXTERNAL + u32::from(self.b)).copied().unwrap_or(0);
            return match mode {
                EXTERNAL_IGNORE => None,
                // Neither end in a cell: no boundary is crossed.
                _ if src == dst => Some(Verdict::ALLOWED),
                EXTERNAL_VIOLATION => Some(Verdict::VIOLATION),
                _ => Some(Verdict::ALLOWED),
            };
        }
        if src == dst
            || self.is_global(src)
            || self.is_global(dst)
            || self.allowed(src, dst, port)
            || self.allowed(src, dst, 0)
        {
            return Some(Verdict::ALLOWED);
        }
        Some(Verdict::VIOLATION)
    }

    /// Whether this config is `mode: enforce` at all.
    #[inline(always)]
    pub(crate) fn enforcing(&self) -> bool {
        SETTINGS.get(SETTING_ENFORCE + u32::from(self.b)).is_some_and(|m| *m == 1)
    }

    /// Whether enforce mode refuses cross-cell connects made from `cell`.
    #[inline(always)]
    pub(crate) fn enforced(&self, cell: u32) -> bool {
        self.has_flag(cell, CELL_FLAG_ENFORCE)
    }

    #[inline(always)]
    pub(crate) fn is_global(&self, cell: u32) -> bool {
        self.has_flag(cell, CELL_FLAG_GLOBAL)
    }

    /// Whether `cell` is drained (what opens into it is counted apart, `drain.rs`).
    #[inline(always)]
    pub(crate) fn is_drained(&self, cell: u32) -> bool {
        self.has_flag(cell, CELL_FLAG_DRAINED)
    }

    /// Whether `cell` is drained with `drain: refuse` under `mode: enforce`.
    #[inline(always)]
    pub(crate) fn refuses_drained(&self, cell: u32) -> bool {
        self.has_flag(cell, CELL_FLAG_DRAIN_REFUSE)
    }

    #[inline(always)]
    fn has_flag(&self, cell: u32, flag: u32) -> bool {
        let info = if self.b { CELL_INFO_B.get(cell) } else { CELL_INFO_A.get(cell) };
        info.is_some_and(|i| i.flags & flag != 0)
    }

    /// Whether an allow rule lets `src` call `dst` on `port` now: a temporary rule's
    /// flows are violations from its deadline on, with no reload.
    #[inline(always)]
    fn allowed(&self, src: u32, dst: u32, port: u16) -> bool {
        let key = PolicyKey { src_cell: src, dst_cell: dst, port, _pad: [0; 6] };
        // SAFETY: the value is a plain u64, copied out at once.
        let until =
            unsafe { if self.b { POLICY_B.get(key).copied() } else { POLICY_A.get(key).copied() } };
        // SAFETY: bpf_ktime_get_ns has no preconditions.
        until.is_some_and(|u| u == ALLOW_FOREVER || unsafe { bpf_ktime_get_ns() } < u)
    }
}

#[inline(always)]
pub(crate) fn v4_mapped(a: &[u8; 16]) -> Option<[u8; 4]> {
    let prefix = a[0] | a[1] | a[2] | a[3] | a[4] | a[5] | a[6] | a[7] | a[8] | a[9];
    if prefix == 0 && a[10] == 0xff && a[11] == 0xff {
        Some([a[12], a[13], a[14], a[15]])
    } else {
        None
    }
}
