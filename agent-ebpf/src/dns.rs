//! DNS over UDP, from the header only (no names, so cardinality stays cells x services x
//! response codes): a query a client on this node sends to a configured service on port
//! 53 is remembered by its client end and id; its answer, matched by the same, counts
//! once per (client cell, service, response code) with the query-to-answer latency.
//! Counted on the client's node only, so a cluster's sum counts each query once.
#![expect(unsafe_code, reason = "map values are updated in place through their pointers")]

use agent_common::{
    CTR_DNS_UNMATCHED, DnsKey, DnsPending, DnsPendingKey, DnsStats, FlowKey, PairKey,
};
use aya_ebpf::bindings::BPF_NOEXIST;

use crate::{
    ctx::Skb,
    maps::{DNS_PENDING, DNS_STATS},
    stats::{add, count, observe},
    udp::Datagram,
};

/// The DNS header's first four bytes: id, and the flags (QR, opcode, ..., RCODE).
#[inline(always)]
fn header(skb: &Skb<'_>, d: &Datagram) -> Option<(u16, bool, u8)> {
    if d.payload < 12 {
        return None;
    }
    let h = skb.bytes::<4>((d.l4 + 8) as usize)?;
    Some((u16::from_be_bytes([h[0], h[1]]), h[2] & 0x80 != 0, h[3] & 0x0f))
}

/// The client's end of a query or answer.
#[inline(always)]
fn pending_key(d: &Datagram, id: u16) -> DnsPendingKey {
    let k = &d.key;
    DnsPendingKey { flow: FlowKey { remote_addr: [0; 16], remote_port: 0, ..*k }, id, _pad: [0; 6] }
}

/// A datagram a DNS client on this node sends: a query is remembered.
#[inline(never)]
pub(crate) fn query(skb: &Skb<'_>, d: &Datagram, pair: &PairKey, now: u64) {
    let Some((id, false, _)) = header(skb, d) else { return };
    let q = DnsPending { sent_ns: now, src_cell: pair.src_cell, service: pair.service, _pad: 0 };
    let _ = DNS_PENDING.insert(pending_key(d, id), q, 0);
}

/// A datagram from port 53 to a socket on this node: an answer to a remembered query
/// counts, once (whoever removes the query counts it). An answer on a flow to a
/// configured DNS service (`dns_flow`) that matches no query is counted as lost; one
/// from any other resolver is none of ours (through a Service address, the answer's flow
/// is not the query's, but the query is found all the same).
#[inline(never)]
pub(crate) fn answer(skb: &Skb<'_>, d: &Datagram, dns_flow: bool, now: u64) {
    let Some((id, true, rcode)) = header(skb, d) else { return };
    let key = pending_key(d, id);
    // SAFETY: the value is plain data, copied out at once.
    let Some(q) = (unsafe { DNS_PENDING.get(key) }).copied() else {
        if dns_flow {
            count(CTR_DNS_UNMATCHED);
        }
        return;
    };
    if DNS_PENDING.remove(key).is_err() {
        return;
    }
    let k = DnsKey { src_cell: q.src_cell, service: q.service, rcode, _pad: 0 };
    let s = match DNS_STATS.get_ptr_mut(k) {
        Some(s) => s,
        None => {
            #[expect(
                clippy::needless_borrows_for_generic_args,
                reason = "borrowed, the zero is read from .rodata instead of built on the stack"
            )]
            let _ = DNS_STATS.insert(&k, &DnsStats::ZERO, u64::from(BPF_NOEXIST));
            let Some(s) = DNS_STATS.get_ptr_mut(k) else {
                count(CTR_DNS_UNMATCHED);
                return;
            };
            s
        }
    };
    let latency = now.saturating_sub(q.sent_ns);
    // SAFETY: `s` is this CPU's value of a live entry; its fields are 8-aligned.
    unsafe {
        add(&raw mut (*s).answers, 1);
        add(&raw mut (*s).latency_sum_ns, latency);
        observe(&raw mut (*s).latency_hist, latency / 1000);
    }
}
