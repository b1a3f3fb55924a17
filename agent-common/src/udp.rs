//! UDP flows and DNS: the keys and values of the flow table, the per-pair UDP
//! statistics, and the DNS answers per (client cell, service) with their latency.
use crate::{HIST_BUCKETS, PairKey};

/// Flows (5-tuples) the flow table holds at once (`UDP_FLOWS`); the datagrams of a flow
/// beyond it are counted as lost.
pub const UDP_FLOWS_CAPACITY: u32 = 262_144;
/// Keys of the per-pair UDP statistics (`UDP_STATS`), allocated on first use.
pub const UDP_STATS_CAPACITY: u32 = 65_536;
/// DNS queries awaiting their answer at once (`DNS_PENDING`, least recently used out
/// first): at 10,000 queries a second answered within 10 ms, 100 wait at a time.
pub const DNS_PENDING_CAPACITY: u32 = 16_384;
/// Keys of the DNS statistics (`DNS_STATS`): client cells x services x response codes.
pub const DNS_STATS_CAPACITY: u32 = 16_384;
/// Default idle time after which a UDP flow ends (`--udp-idle`), seconds.
pub const UDP_IDLE_DEFAULT_SECS: u32 = 60;
/// The DNS port: traffic to a configured service on it is read as DNS.
pub const DNS_PORT: u16 = 53;

/// One UDP flow as the socket on this node sees it: its own end and the peer's.
/// Addresses in network order, IPv4 in the first 4 bytes; ports in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub local_port: u16,
    pub remote_port: u16,
    /// AF_INET or AF_INET6.
    pub family: u16,
    pub _pad: u16,
}

// Bits of `UdpFlow::flags`.
/// Not tracked: an end is in an ignored range (never kept in the table).
pub const FLOW_IGNORED: u32 = 1;
/// The local socket is a DNS client of a configured service on port 53.
pub const FLOW_DNS: u32 = 2;

/// A live flow (`UDP_FLOWS`): when it last moved a datagram, and the pair it counts under.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpFlow {
    /// `bpf_ktime_get_ns` of its last datagram.
    pub last_ns: u64,
    /// Client (the end that sent first), server, direction (egress: the client's socket
    /// is on this node), verdict and the server's service.
    pub pair: PairKey,
    /// `FLOW_*` bits.
    pub flags: u32,
    pub _pad: u32,
}

/// UDP statistics of one pair key, one copy per CPU (`UDP_STATS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpStats {
    /// Flows that began (a first datagram, or one after `--udp-idle` of silence).
    pub opened: u64,
    /// Sends refused by enforce mode.
    pub denied: u64,
    /// Datagrams and payload bytes this node's socket sent and received.
    pub datagrams_sent: u64,
    pub bytes_sent: u64,
    pub datagrams_received: u64,
    pub bytes_received: u64,
}

impl UdpStats {
    pub const ZERO: Self = Self {
        opened: 0,
        denied: 0,
        datagrams_sent: 0,
        bytes_sent: 0,
        datagrams_received: 0,
        bytes_received: 0,
    };

    pub fn merge(&mut self, o: &Self) {
        self.opened += o.opened;
        self.denied += o.denied;
        self.datagrams_sent += o.datagrams_sent;
        self.bytes_sent += o.bytes_sent;
        self.datagrams_received += o.datagrams_received;
        self.bytes_received += o.bytes_received;
    }
}

/// A DNS query awaiting its answer (`DNS_PENDING`): the client's end of its flow (the
/// remote end zero, so an answer through a Service address, un-NATed on its way back,
/// still finds it) and the query id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsPendingKey {
    pub flow: FlowKey,
    pub id: u16,
    pub _pad: [u8; 6],
}

/// What a waiting DNS query is remembered by: when it left, and whose it is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsPending {
    pub sent_ns: u64,
    pub src_cell: u32,
    pub service: u16,
    pub _pad: u16,
}

/// Key of the DNS statistics: client cell, service, response code (0..=15).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsKey {
    pub src_cell: u32,
    pub service: u16,
    pub rcode: u8,
    pub _pad: u8,
}

/// DNS answers of one key, one copy per CPU (`DNS_STATS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsStats {
    pub answers: u64,
    /// Query-to-answer latency: sum in nanoseconds, log2 µs histogram.
    pub latency_sum_ns: u64,
    pub latency_hist: [u64; HIST_BUCKETS],
}

impl DnsStats {
    pub const ZERO: Self = Self { answers: 0, latency_sum_ns: 0, latency_hist: [0; HIST_BUCKETS] };

    pub fn merge(&mut self, o: &Self) {
        self.answers += o.answers;
        self.latency_sum_ns += o.latency_sum_ns;
        for (a, b) in self.latency_hist.iter_mut().zip(o.latency_hist) {
            *a += b;
        }
    }
}

/// The label of a DNS response code (RFC 1035, 6895): the common ones by name, the rest
/// as `other`.
pub const fn rcode_label(rcode: u8) -> &'static str {
    match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => "other",
    }
}

const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
const _: () = assert!(core::mem::size_of::<UdpFlow>() == 32);
const _: () = assert!(core::mem::size_of::<UdpStats>() == 48);
const _: () = assert!(core::mem::size_of::<DnsPendingKey>() == 48);
const _: () = assert!(core::mem::size_of::<DnsKey>() == 8);
const _: () = assert!(core::mem::size_of::<DnsPending>() == 16);
const _: () = assert!(core::mem::size_of::<DnsStats>() == (2 + HIST_BUCKETS) * 8);
