//! The layout of every map key and value the programs and the agent share, with its
//! size assert: ids, capacities, connections, and what the agent writes for the programs.

use crate::{Direction, Failure, Verdict};

/// Layout version of the maps below. Bumped whenever a key or value changes shape, so an
/// agent that finds maps from an older version knows it cannot read them as they are.
pub const LAYOUT_VERSION: u32 = 6;

// Cell ids: the cells' own are 1..=MAX_CELLS; that of a peer in no cell,
// `CELL_EXTERNAL` (0), is in `labels.rs`, beside the RTT rule that reads it.
/// Cell id written into the cell tries for `ignore_cidrs`: connections touching such an
/// address are not tracked at all.
pub const CELL_IGNORED: u32 = u32::MAX;
/// Cell id written into the cell tries for `service_cidrs`: a Kubernetes Service's
/// service address. A connection to one is judged by the backend its DNAT chose, which
/// the agent finds in conntrack and writes into `RESOLVED`; never a label.
pub const CELL_SERVICE_ADDR: u32 = 0xfffe;
/// The server cell of a connection to a service address whose backend could not be
/// found (no conntrack entry, or not NATed): `unresolved` in metrics.
pub const CELL_UNRESOLVED: u32 = 0xfffd;
/// Largest number of cells a config may hold (ids 1..=MAX_CELLS).
pub const MAX_CELLS: u32 = 4096;

// Map capacities fixed at build time.
/// Pair keys are (src, dst, direction, verdict): 100 cells with every pair active in both
/// directions take 20,000. The map allocates per entry (no preallocation), so the
/// capacity costs nothing until used.
pub const PAIR_STATS_CAPACITY: u32 = 65_536;
/// The shared, preallocated table a pair's figures go to when the per-CPU table cannot
/// allocate its entry at once (a burst of new pairs can drain the kernel's per-CPU
/// allocator caches faster than they refill). About 2.3 MiB.
pub const PAIR_OVERFLOW_CAPACITY: u32 = 4096;
/// Prefixes of each IPv4 cell trie (`CELLS_V4_A`, `CELLS_V4_B`).
pub const CELLS_V4_CAPACITY: u32 = 262_144;
/// Prefixes of each IPv6 cell trie (`CELLS_V6_A`, `CELLS_V6_B`).
pub const CELLS_V6_CAPACITY: u32 = 262_144;
/// Allow rules of each policy map (`POLICY_A`, `POLICY_B`).
pub const POLICY_CAPACITY: u32 = 65536;
/// Prefixes of services with ports, each port an entry (per address family).
pub const SERVICES_CAPACITY: u32 = 65_536;
/// Network namespaces whose source address the programs remember (for enforce mode).
pub const NETNS_CAPACITY: u32 = 16384;
/// Connections older than the agent that it can count (seeded at its first start).
pub const SEEDED_CAPACITY: u32 = 65_536;
/// Connections to service addresses that closed before their backend was known, kept
/// until the agent settles them (`DEFERRED`).
pub const DEFERRED_CAPACITY: u32 = 16_384;
/// Resolutions the agent wrote for connections to service addresses (`RESOLVED`, least
/// recently used first out).
pub const RESOLVED_CAPACITY: u32 = 262_144;
/// Default ring buffer for violation events (bytes; a power of two, page multiple).
pub const EVENTS_DEFAULT_BYTES: u32 = 256 * 1024;
/// Default bound on live connections tracked at once (`--conn-capacity`).
pub const CONNS_DEFAULT_CAPACITY: u32 = 131_072;

// Address families as the kernel numbers them (`sa_family_t`).
/// IPv4.
pub const AF_INET: u16 = 2;
/// IPv6.
pub const AF_INET6: u16 = 10;

/// Byte offsets of the kernel socket fields the programs read that no context carries
/// (the one entry of the `FIELDS` map). They move between kernel builds, so the agent
/// reads them from the kernel's BTF at start; the programs then read the fields with
/// `bpf_probe_read_kernel`. Every one is required.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldOffsets {
    /// `struct sock`: `sk_err` (int), `sk_flags` (unsigned long, bit [`SOCK_DONE`]).
    pub sk_err: u32,
    pub sk_flags: u32,
    /// `struct sock`: the socket lock's spinlock word and its `owned` (int): both zero
    /// while nobody works on the socket.
    pub sk_lock_slock: u32,
    pub sk_lock_owned: u32,
    /// `struct tcp_sock`: `bytes_acked`, `bytes_received`, `bytes_sent`, `bytes_retrans`
    /// (u64), `total_retrans`, `srtt_us` (u32).
    pub bytes_acked: u32,
    pub bytes_received: u32,
    pub bytes_sent: u32,
    pub bytes_retrans: u32,
    pub total_retrans: u32,
    pub srtt_us: u32,
    /// The `struct tcp_sock` fields above lie in `[span_start, span_start + span_len)`,
    /// which the programs copy in one read when `span_len` is at most [`SPAN_MAX`] (0:
    /// they read field by field). `span_start` is 8-aligned.
    pub span_start: u32,
    pub span_len: u32,
}

/// The most bytes of `struct tcp_sock` the programs copy in one read (a per-CPU scratch
/// buffer's size).
pub const SPAN_MAX: u32 = 1024;

impl FieldOffsets {
    /// Sets the span of the `tcp_sock` fields (see [`FieldOffsets::span_start`]).
    pub fn with_span(mut self) -> Self {
        let fields = [
            (self.bytes_acked, 8),
            (self.bytes_received, 8),
            (self.bytes_sent, 8),
            (self.bytes_retrans, 8),
            (self.total_retrans, 4),
            (self.srtt_us, 4),
        ];
        let mut start = u32::MAX;
        let mut end = 0;
        for (off, size) in fields {
            start = if off < start { off } else { start };
            end = if off + size > end { off + size } else { end };
        }
        let start = start & !7;
        let len = end.saturating_sub(start);
        (self.span_start, self.span_len) = if len <= SPAN_MAX { (start, len) } else { (0, 0) };
        self
    }
}

// Bits of `CellInfo::flags`.
/// A global cell: its connections to and from any cell are allowed.
pub const CELL_FLAG_GLOBAL: u32 = 1;
/// Enforce mode refuses this cell's cross-cell connects (set only under `mode: enforce`,
/// for the cells in `enforce_cells`, or all when it is absent).
pub const CELL_FLAG_ENFORCE: u32 = 2;
/// A drained cell: what opens into it is counted apart (`PairStats::drain_opened`).
pub const CELL_FLAG_DRAINED: u32 = 4;
/// A drained cell with `drain: refuse` under `mode: enforce`: new connects into it from
/// other cells are refused.
pub const CELL_FLAG_DRAIN_REFUSE: u32 = 8;

/// The allow-rule map's value of a rule with no deadline.
pub const ALLOW_FOREVER: u64 = u64::MAX;

/// `sk_flags` bit set by `tcp_fin` when the peer's FIN arrives (`enum sock_flags`).
pub const SOCK_DONE: u64 = 1 << 1;

/// Key of the per-cell-pair statistics map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PairKey {
    /// Cell id of the client (the side that called connect).
    pub src_cell: u32,
    /// Cell id of the server.
    pub dst_cell: u32,
    /// A [`Direction`] (see [`PairKey::direction`]).
    pub direction: u8,
    /// A [`Verdict`] (see [`PairKey::verdict`]).
    pub verdict: u8,
    /// Service id of the server's end (config `services:`), or [`NO_SERVICE`]. A pair's
    /// figures are split by service; the pair's own families add them up.
    pub service: u16,
    pub _pad: [u8; 4],
}

impl PairKey {
    pub const fn new(src_cell: u32, dst_cell: u32, direction: Direction, verdict: Verdict) -> Self {
        Self {
            src_cell,
            dst_cell,
            direction: direction.0,
            verdict: verdict.0,
            service: NO_SERVICE,
            _pad: [0; 4],
        }
    }

    pub const fn direction(&self) -> Direction {
        Direction(self.direction)
    }

    pub const fn verdict(&self) -> Verdict {
        Verdict(self.verdict)
    }

    /// The same pair, for connections to `service`.
    #[must_use]
    pub const fn with_service(mut self, service: u16) -> Self {
        self.service = service;
        self
    }
}

/// Key of the tries of services with ports: the port (network order) first, then the
/// address, so one longest-prefix lookup matches both (`prefix_len` = 16 + the CIDR's).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceKeyV4 {
    pub port: [u8; 2],
    pub addr: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceKeyV6 {
    pub port: [u8; 2],
    pub addr: [u8; 16],
}

/// [`PairKey::service`] of a connection to no configured service.
pub const NO_SERVICE: u16 = 0;

/// What the cell tries hold for a prefix: the cell id in the low 16 bits and, for a
/// prefix of a service without ports, the service id in the high 16 ([`CELL_IGNORED`]
/// for an ignored range). So the one cell lookup a connection makes also names such a
/// service.
pub const fn cell_entry(cell: u32, service: u16) -> u32 {
    cell | ((service as u32) << 16)
}

/// The cell of a cell-trie entry (see [`cell_entry`]).
pub const fn entry_cell(entry: u32) -> u32 {
    if entry == CELL_IGNORED { CELL_IGNORED } else { entry & 0xffff }
}

/// The service of a cell-trie entry (see [`cell_entry`]), [`NO_SERVICE`] if none.
pub const fn entry_service(entry: u32) -> u16 {
    if entry == CELL_IGNORED { NO_SERVICE } else { (entry >> 16) as u16 }
}

// Bits of `Conn::flags`.
/// The connection reached ESTABLISHED (and was counted opened).
pub const CONN_ESTABLISHED: u8 = 1;
/// The connection is counted: its cells and verdict are set, its close will be seen.
pub const CONN_TRACKED: u8 = 2;
/// Older than the agent: put in by the seeding iterator at the agent's first start. Its
/// claims are kept in `SEEDED` under its cookie, where `tcp:tcp_destroy_sock` finds them.
pub const CONN_SEEDED: u8 = 4;
/// To a service address (`service_cidrs`): its server cell, service and verdict come from
/// `RESOLVED`, and nothing is counted before they do.
pub const CONN_SERVICE_ADDR: u8 = 8;
/// Set by `connect4`/`connect6` only, until `sock_ops` sees the SYN: the process bound
/// the socket to a source address itself (perhaps one not its own, with IP_FREEBIND),
/// so that address teaches nothing about the namespace's.
pub const CONN_USER_BOUND: u8 = 16;

/// What the kernel keeps about one connection, in the socket's own storage (`CONN`): made
/// by `connect4`/`connect6` for a client (with its owner), by `sock_ops` for a server,
/// freed with the socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    /// `bpf_ktime_get_ns` at connect (egress) or at established (ingress).
    pub start_ns: u64,
    /// `bpf_ktime_get_ns` at established; 0 while connecting.
    pub established_ns: u64,
    pub cookie: u64,
    /// The process that called connect (egress; 0 when unknown).
    pub cgroup_id: u64,
    pub pid: u32,
    pub src_cell: u32,
    pub dst_cell: u32,
    /// Set (to 1) by the close before it claims its last figures; a sweep that finds it
    /// set claims nothing. A word of its own, so it is stored whole.
    pub closed: u32,
    /// A [`Direction`] (see [`Conn::direction`]).
    pub direction: u8,
    /// A [`Verdict`] (see [`Conn::verdict`]).
    pub verdict: u8,
    /// `CONN_*` bits, set while the socket is locked (connect, established).
    pub flags: u8,
    /// The cell-map set (0 = A, 1 = B) `connect4`/`connect6` judged the server by.
    pub generation: u8,
    /// AF_INET or AF_INET6 (as seen by the socket; v4-mapped stays AF_INET6).
    pub family: u16,
    pub local_port: u16,
    pub remote_port: u16,
    /// The server's service ([`PairKey::service`]).
    pub service: u16,
    pub _pad2: u32,
    /// Local and remote address, network byte order; IPv4 in the first 4 bytes.
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    /// The connecting thread's name (egress).
    pub comm: [u8; 16],
    /// What the connection moved before it was counted: the handshake's share, or, for a
    /// connection older than the agent, everything before the agent started.
    pub base: Progress,
    /// What this connection has added to its pair's counters so far. Each claim moves it
    /// forward with an atomic exchange, so the sweep and the close never count a byte
    /// twice.
    pub claimed: Claimed,
    /// A connection to a service address: 1 once its open (and violation) is counted
    /// under its backend, by whichever of the sweep, the close or the settling got there
    /// first (a compare-and-swap: 64 bits, as BPF's is). 0 otherwise.
    pub counted: u64,
}

/// Cumulative socket counters, as the kernel keeps them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// `bytes_acked`: sequence space the peer acknowledged (SYN and FIN included).
    pub acked: u64,
    /// `bytes_sent - bytes_retrans`: payload sent once (SYN and FIN carry none).
    pub sent_once: u64,
    /// `bytes_received`: sequence space received (SYN and FIN included).
    pub received: u64,
    /// `total_retrans`.
    pub retrans: u64,
}

impl Progress {
    /// Payload this socket sent since `base`, each byte once (a retransmission is not
    /// sent again; SYN and FIN carry none). Not what the peer acknowledged: a peer that
    /// resets the connection before its delayed ACK leaves sent bytes unacknowledged,
    /// and they were sent all the same.
    pub const fn payload_sent(&self, base: &Progress) -> u64 {
        self.sent_once.saturating_sub(base.sent_once)
    }

    /// Payload received since `base`, less the peer's FIN when it came (`fin`).
    pub const fn payload_received(&self, base: &Progress, fin: bool) -> u64 {
        self.received.saturating_sub(base.received).saturating_sub(fin as u64)
    }
}

/// What a connection has added to its pair's counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Claimed {
    pub sent: u64,
    pub received: u64,
    pub retrans: u64,
}

impl Conn {
    /// The statistics key this connection counts under.
    pub const fn pair_key(&self) -> PairKey {
        PairKey::new(self.src_cell, self.dst_cell, self.direction(), self.verdict())
            .with_service(self.service)
    }

    pub const fn direction(&self) -> Direction {
        Direction(self.direction)
    }

    pub const fn verdict(&self) -> Verdict {
        Verdict(self.verdict)
    }
}

/// A connection older than the agent, by socket cookie (`SEEDED`): its pair and what it
/// has added to it, where `tcp:tcp_destroy_sock` can find them when it closes (that
/// tracepoint cannot reach socket storage).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seeded {
    pub key: PairKey,
    pub base: Progress,
    pub claimed: Claimed,
}

/// Where a connection to a service address went, as the agent judged its backend
/// (`RESOLVED`, by socket cookie).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    pub dst_cell: u32,
    pub service: u16,
    /// A [`Verdict`] (see [`Resolution::verdict`]).
    pub verdict: u8,
    pub _pad: u8,
}

impl Resolution {
    pub const fn verdict(&self) -> Verdict {
        Verdict(self.verdict)
    }
}

/// A connection to a service address that closed before its backend was known
/// (`DEFERRED`, by socket cookie): the connection and its last figures, counted when the
/// agent has written its resolution and run the settling iterator.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deferred {
    pub conn: Conn,
    /// The socket's counters at its close.
    pub last: Progress,
    /// The [`Failure`] of its end, or [`Failure::NONE`] (see [`Deferred::failure`]).
    pub failure: u32,
    pub srtt_us: u32,
    /// 1 when the peer's FIN had come.
    pub fin: u32,
    /// 1 once the settling counted it (the agent then removes it).
    pub settled: u32,
}

impl Deferred {
    pub const fn failure(&self) -> Failure {
        Failure(self.failure)
    }
}

/// Key of the learned source address of a network namespace, per address family.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetnsKey {
    pub netns_cookie: u64,
    /// 2 (IPv4, v4-mapped included) or 10 (IPv6).
    pub family: u32,
    pub _pad: u32,
}

/// The source address a network namespace's TCP sockets use, learned from its
/// connections; `ambiguous` once two different ones were seen (a node's own namespace).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetnsAddr {
    /// IPv4 in the first 4 bytes.
    pub addr: [u8; 16],
    pub ambiguous: u32,
    pub _pad: u32,
}

/// What the agent knows about one cell id (array map indexed by id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CellInfo {
    /// [`CELL_FLAG_GLOBAL`], …
    pub flags: u32,
    pub _pad: u32,
}

/// Key of the allow-rule map: a flow from `src_cell` to `dst_cell` on `port`
/// (0 = every port) is allowed when the key is present, until its value: the deadline
/// of a temporary rule on the kernel's monotonic clock (`bpf_ktime_get_ns`), or
/// [`ALLOW_FOREVER`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub src_cell: u32,
    pub dst_cell: u32,
    pub port: u16,
    pub _pad: [u8; 6],
}

/// Longest cell name (a Kubernetes label value).
pub const CELL_NAME_MAX: usize = 63;

/// The name of a cell id (array map indexed by id), so an agent that adopts pinned
/// maps after a restart labels their cell ids as the one before it did. Written and
/// read by the agent only.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CellName {
    /// Bytes of `name` in use; 0 = no cell has this id.
    pub len: u8,
    pub name: [u8; CELL_NAME_MAX],
}

const _: () = assert!(core::mem::size_of::<PairKey>() == 16);
const _: () = assert!(core::mem::size_of::<Resolution>() == 8);
const _: () = assert!(core::mem::size_of::<Deferred>() == core::mem::size_of::<Conn>() + 32 + 16);
const _: () = assert!(core::mem::size_of::<CellName>() == 64);
const _: () = assert!(core::mem::size_of::<Conn>() == 176);
const _: () = assert!(core::mem::size_of::<FieldOffsets>() == 48);
const _: () = assert!(core::mem::size_of::<Progress>() == 32);
const _: () = assert!(core::mem::size_of::<Claimed>() == 24);
const _: () = assert!(core::mem::size_of::<Seeded>() == 72);
const _: () = assert!(core::mem::size_of::<ServiceKeyV4>() == 6);
const _: () = assert!(core::mem::size_of::<ServiceKeyV6>() == 18);
const _: () = assert!(core::mem::size_of::<CellInfo>() == 8);
const _: () = assert!(core::mem::size_of::<PolicyKey>() == 16);
const _: () = assert!(core::mem::size_of::<NetnsKey>() == 16);
const _: () = assert!(core::mem::size_of::<NetnsAddr>() == 24);

#[cfg(test)]
mod tests;
