//! UDP: every datagram a socket of the node sends or receives, from the cgroup skb hooks
//! (`cgroup_skb/egress` and `cgroup_skb/ingress` on the cgroup v2 root), counted per cell
//! pair. UDP has no connect or close, so a flow is a 5-tuple as this node's socket sees
//! it, from its first datagram until it has been silent for `--udp-idle`; the end that
//! sent first is the client. A datagram costs one flow lookup and one atomic add into its
//! pair; only a flow's first datagram judges its cells and verdict.
//!
//! Why these hooks: the cgroup `sendmsg`/`recvmsg` hooks see no datagram length, and
//! `sendmsg` runs only for unconnected sends. The skb hooks see every datagram of
//! connected and unconnected sockets, after the kernel routed it (and after an `OUTPUT`
//! DNAT), one packet per datagram (GSO/GRO trains counted by their segments).
//!
//! Enforce mode refuses a datagram of a cross-cell flow at egress: `sendmsg`/`send`
//! return EPERM. A violation counts once per flow, in the TCP pair table's
//! `violations` (`cellwatch_boundary_violations_total` gains the UDP ones).
#![expect(unsafe_code, reason = "map values are updated in place through their pointers")]

use agent_common::{
    AF_INET, AF_INET6, CELL_IGNORED, CELL_SERVICE_ADDR, CTR_UDP_FLOW_TABLE_FULL,
    CTR_UDP_STATS_FULL, DNS_PORT, Direction, FLOW_DNS, FLOW_IGNORED, FlowKey, NO_SERVICE, PairKey,
    SETTING_UDP_IDLE, UDP_IDLE_DEFAULT_SECS, UdpFlow, UdpStats, Verdict,
};
use core::intrinsics::{AtomicOrdering, atomic_cxchg};

use aya_ebpf::{
    bindings::{BPF_EXIST, BPF_NOEXIST},
    helpers::bpf_ktime_get_ns,
    macros::cgroup_skb,
    programs::SkBuffContext,
};

use crate::{
    cells::View,
    ctx::Skb,
    dns,
    maps::{SETTINGS, UDP_FLOWS, UDP_STATS},
    stats::{Slot, add, count},
};

/// The packet goes on.
const PASS: i32 = 1;
/// The packet is dropped; at egress the sender gets EPERM.
const DROP: i32 = 0;
const IPPROTO_UDP: u8 = 17;
const UDP_HEADER: u32 = 8;
const EEXIST: i32 = 17;

#[cgroup_skb(egress)]
fn cellwatch_udp_egress(ctx: SkBuffContext) -> i32 {
    try_udp(&Skb::new(&ctx), true)
}

#[cgroup_skb(ingress)]
fn cellwatch_udp_ingress(ctx: SkBuffContext) -> i32 {
    try_udp(&Skb::new(&ctx), false)
}

/// A UDP datagram, as the local socket sees it.
pub(crate) struct Datagram {
    pub(crate) key: FlowKey,
    pub(crate) v6: bool,
    /// Where the UDP header starts.
    pub(crate) l4: u32,
    /// Payload bytes (of every segment of a train).
    pub(crate) payload: u64,
    pub(crate) segments: u64,
}

/// The datagram in a packet, or `None` for anything that is not UDP. Every packet pays
/// one copy of its first 24 bytes (any IPv4 or IPv6 packet of TCP or UDP has them), which
/// for IPv4 UDP without options is all of it: addresses and ports. IPv6 and IPv4 with
/// options take one more. A function of its own: its copies stay off the stack of the
/// program's longest call chain.
#[inline(never)]
fn parse(skb: &Skb<'_>, egress: bool, d: &mut Datagram) -> bool {
    parse_into(skb, egress, d).is_some()
}

/// [`parse`]'s body: `None` for a packet that is not UDP.
#[inline(always)]
fn parse_into(skb: &Skb<'_>, egress: bool, d: &mut Datagram) -> Option<()> {
    let h = skb.bytes::<24>(0)?;
    let b0 = h[0];
    let key = &mut d.key;
    // The source is the local end at egress, the remote one at ingress.
    let (src, dst) = if egress {
        (&mut key.local_addr, &mut key.remote_addr)
    } else {
        (&mut key.remote_addr, &mut key.local_addr)
    };
    let (v6, l4, ports) = match b0 >> 4 {
        4 => {
            if h[9] != IPPROTO_UDP {
                return None;
            }
            src[..4].copy_from_slice(&h[12..16]);
            dst[..4].copy_from_slice(&h[16..20]);
            let ihl = u32::from(b0 & 0x0f) * 4;
            let ports = if ihl == 20 {
                [h[20], h[21], h[22], h[23]]
            } else {
                skb.bytes::<4>(ihl as usize)?
            };
            (false, ihl, ports)
        }
        6 => {
            // Extension headers before UDP are not followed.
            if h[6] != IPPROTO_UDP {
                return None;
            }
            // The destination and the ports.
            let rest = skb.bytes::<20>(24)?;
            src.copy_from_slice(&h[8..24]);
            dst.copy_from_slice(&rest[..16]);
            (true, 40, [rest[16], rest[17], rest[18], rest[19]])
        }
        _ => return None,
    };
    let (sport, dport) =
        (u16::from_be_bytes([ports[0], ports[1]]), u16::from_be_bytes([ports[2], ports[3]]));
    (key.local_port, key.remote_port) = if egress { (sport, dport) } else { (dport, sport) };
    key.family = if v6 { AF_INET6 } else { AF_INET };
    d.v6 = v6;
    d.l4 = l4;
    d.payload = u64::from(skb.len().saturating_sub(l4 + UDP_HEADER));
    d.segments = u64::from(skb.segments());
    Some(())
}

#[inline(always)]
fn try_udp(skb: &Skb<'_>, egress: bool) -> i32 {
    let mut d = Datagram { key: FlowKey::default(), v6: false, l4: 0, payload: 0, segments: 0 };
    if !parse(skb, egress, &mut d) {
        return PASS;
    }
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let (flow, start) = flow_of(&d, egress, now);
    if flow.flags & FLOW_IGNORED != 0 {
        return PASS;
    }
    let pair = flow.pair;
    let violating = pair.verdict() == Verdict::VIOLATION;
    let began = start == Start::Began;
    if began && violating {
        violation(pair.src_cell, pair.dst_cell, pair.direction());
    }
    // Enforce mode judges even a flow the full table could not keep (fail open is for
    // what cannot be judged, and this was).
    if egress && violating && refused(&pair) {
        if let Some(s) = stats(&pair) {
            // SAFETY: `s` is this CPU's value of a live entry.
            unsafe { add(&raw mut (*s).denied, 1) };
        }
        return DROP;
    }
    if start == Start::Untracked {
        return PASS;
    }
    let Some(s) = stats(&pair) else { return PASS };
    // SAFETY: `s` is this CPU's value of a live entry; its fields are 8-aligned.
    unsafe {
        if began {
            add(&raw mut (*s).opened, 1);
        }
        if egress {
            add(&raw mut (*s).datagrams_sent, d.segments);
            add(&raw mut (*s).bytes_sent, d.payload);
        } else {
            add(&raw mut (*s).datagrams_received, d.segments);
            add(&raw mut (*s).bytes_received, d.payload);
        }
    }
    if flow.flags & FLOW_DNS != 0 && egress {
        dns::query(skb, &d, &pair, now);
    } else if !egress && d.key.remote_port == DNS_PORT {
        dns::answer(skb, &d, flow.flags & FLOW_DNS != 0, now);
    }
    PASS
}

/// `--udp-idle` in nanoseconds.
#[inline(always)]
fn idle_ns() -> u64 {
    let secs = SETTINGS.get(SETTING_UDP_IDLE).copied().filter(|s| *s > 0);
    u64::from(secs.unwrap_or(UDP_IDLE_DEFAULT_SECS)) * 1_000_000_000
}

/// How a datagram stands to its flow.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    /// The flow was live: the datagram counts in it.
    Live,
    /// The datagram began it (a first datagram, or the first after `--udp-idle` of
    /// silence): its opening (and violation) count too. Exactly one datagram begins a
    /// flow, whichever CPUs race.
    Began,
    /// Not tracked: an end in an ignored range (nothing counts, nothing is kept), or a
    /// full flow table (the datagram counts as lost, not in a pair whose client it
    /// cannot tell).
    Untracked,
}

/// The flow of a datagram, and how the datagram stands to it.
#[inline(always)]
fn flow_of(d: &Datagram, egress: bool, now: u64) -> (UdpFlow, Start) {
    if let Some(f) = UDP_FLOWS.get_ptr_mut(d.key) {
        // SAFETY: `f` points to a live flow entry; `last_ns` is an 8-aligned word of it,
        // read and written whole.
        unsafe {
            let last = core::ptr::read_volatile(&raw const (*f).last_ns);
            if now.saturating_sub(last) <= idle_ns() {
                core::ptr::write_volatile(&raw mut (*f).last_ns, now);
                return (*f, Start::Live);
            }
            // Silent too long: the CPU that moves its clock on begins it anew.
            let (_, won) = atomic_cxchg::<
                u64,
                { AtomicOrdering::Relaxed },
                { AtomicOrdering::Relaxed },
            >(&raw mut (*f).last_ns, last, now);
            if !won {
                return (*f, Start::Live);
            }
        }
        let flow = judge(d, egress, now);
        if flow.flags & FLOW_IGNORED != 0 {
            let _ = UDP_FLOWS.remove(d.key);
            return (flow, Start::Untracked);
        }
        // The whole value at once: a reader sees the old flow or the new one.
        let _ = UDP_FLOWS.insert(d.key, flow, u64::from(BPF_EXIST));
        return (flow, Start::Began);
    }
    let flow = judge(d, egress, now);
    if flow.flags & FLOW_IGNORED != 0 {
        return (flow, Start::Untracked);
    }
    match UDP_FLOWS.insert(d.key, flow, u64::from(BPF_NOEXIST)) {
        Ok(()) => (flow, Start::Began),
        // Another CPU began it first.
        Err(e) if e == -EEXIST => {
            // SAFETY: a plain-data value, copied out at once.
            (unsafe { UDP_FLOWS.get(d.key) }.copied().unwrap_or(flow), Start::Live)
        }
        Err(_) => {
            count(CTR_UDP_FLOW_TABLE_FULL);
            (flow, Start::Untracked)
        }
    }
}

/// A flow's cells, service and verdict, judged at its beginning.
#[inline(never)]
fn judge(d: &Datagram, egress: bool, now: u64) -> UdpFlow {
    let view = View::current();
    let k = &d.key;
    // The client is the end that sent first.
    let (client, server, port, direction) = if egress {
        (&k.local_addr, &k.remote_addr, k.remote_port, Direction::EGRESS)
    } else {
        (&k.remote_addr, &k.local_addr, k.local_port, Direction::INGRESS)
    };
    let (dst_cell, service) = view.udp_server_of(server, d.v6, port);
    // An ignored server (loopback, by default) needs no second lookup.
    let src_cell = if dst_cell == CELL_IGNORED { CELL_IGNORED } else { view.cell_of(client, d.v6) };
    // A Service address (`service_cidrs`) seen here is the source of an answer un-NATed
    // on its way back: its backend is unknown, so it is not counted as a flow of its own.
    let verdict = if src_cell == CELL_SERVICE_ADDR || dst_cell == CELL_SERVICE_ADDR {
        None
    } else {
        view.verdict(src_cell, dst_cell, port)
    };
    let mut flow = UdpFlow {
        last_ns: now,
        pair: PairKey::new(src_cell, dst_cell, direction, verdict.unwrap_or(Verdict::ALLOWED))
            .with_service(service),
        flags: 0,
        _pad: 0,
    };
    if verdict.is_none() {
        flow.flags |= FLOW_IGNORED;
    } else if egress && service != NO_SERVICE && port == DNS_PORT {
        flow.flags |= FLOW_DNS;
    }
    flow
}

/// One violation, in the TCP pair table (no service: the TCP service families must not
/// gain UDP rows).
#[inline(always)]
fn violation(src_cell: u32, dst_cell: u32, direction: Direction) {
    let key = PairKey::new(src_cell, dst_cell, direction, Verdict::VIOLATION);
    if let Some(slot) = Slot::of(&key) {
        // SAFETY: this CPU's value of a live pair entry.
        unsafe { add(&raw mut (*slot.stats()).violations, 1) };
    }
}

/// Whether enforce mode refuses a datagram of this (violating, egress) flow now: judged
/// on every send, so a reload to audit mode lets the flow through at once.
#[inline(always)]
fn refused(pair: &PairKey) -> bool {
    let view = View::current();
    view.enforcing() && view.enforced(pair.src_cell)
}

/// This CPU's UDP statistics of `key`, made on first use.
#[inline(always)]
fn stats(key: &PairKey) -> Option<*mut UdpStats> {
    if let Some(p) = UDP_STATS.get_ptr_mut(key) {
        return Some(p);
    }
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "borrowed, the zero is read from .rodata instead of built on the stack"
    )]
    let _ = UDP_STATS.insert(key, &UdpStats::ZERO, u64::from(BPF_NOEXIST));
    let p = UDP_STATS.get_ptr_mut(key);
    if p.is_none() {
        count(CTR_UDP_STATS_FULL);
    }
    p
}
