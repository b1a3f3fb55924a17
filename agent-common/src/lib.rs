//! Types shared by the cellwatch eBPF programs and the agent: the one `no_std` place
//! where the kernel/user layout of every map key and value is defined.
//!
//! Every type is `#[repr(C)]`, `Copy`, has no implicit padding (padding is spelled out
//! as `_pad` fields that are always zero) and carries a compile-time size assert, so the
//! two sides can never disagree about a layout.
#![no_std]
#![deny(unsafe_code)]

/// Layout version of the maps below. Bumped whenever a key or value changes shape, so an
/// agent that finds maps from an older version knows it cannot read them as they are.
pub const LAYOUT_VERSION: u32 = 4;

/// Cell id of a peer that is in no cell (`external` in metrics).
pub const CELL_EXTERNAL: u32 = 0;
/// Cell id written into the cell tries for `ignore_cidrs`: connections touching such an
/// address are not tracked at all.
pub const CELL_IGNORED: u32 = u32::MAX;
/// Cell id written into the cell tries for `service_cidrs`: a Kubernetes Service's
/// virtual address. A connection to one is judged by the backend its DNAT chose, which
/// the agent finds in conntrack and writes into `RESOLVED`; never a label.
pub const CELL_VIRTUAL: u32 = 0xfffe;
/// The server cell of a connection to a virtual address whose backend could not be
/// found (no conntrack entry, or not NATed): `unresolved` in metrics.
pub const CELL_UNRESOLVED: u32 = 0xfffd;
/// Largest number of cells a config may hold (ids 1..=MAX_CELLS).
pub const MAX_CELLS: u32 = 4096;

/// Map capacities fixed at build time.
/// Pair keys are (src, dst, direction, verdict): 100 cells with every pair active in both
/// directions take 20,000. The map allocates per entry (no preallocation), so the
/// capacity costs nothing until used.
pub const PAIR_STATS_CAPACITY: u32 = 65_536;
/// The shared, preallocated table a pair's figures go to when the per-CPU table cannot
/// allocate its entry at once (a burst of new pairs can drain the kernel's per-CPU
/// allocator caches faster than they refill). About 2.3 MiB.
pub const PAIR_OVERFLOW_CAPACITY: u32 = 4096;
pub const CELLS_V4_CAPACITY: u32 = 262_144;
pub const CELLS_V6_CAPACITY: u32 = 262_144;
pub const POLICY_CAPACITY: u32 = 65536;
/// Prefixes of services with ports, each port an entry (per address family).
pub const SERVICES_CAPACITY: u32 = 65_536;
/// Network namespaces whose source address the programs remember (for enforce mode).
pub const NETNS_CAPACITY: u32 = 16384;
/// Connections older than the agent that it can count (seeded at its first start).
pub const SEEDED_CAPACITY: u32 = 65_536;
/// Connections to virtual addresses that closed before their backend was known, kept
/// until the agent settles them (`DEFERRED`), and resolutions the agent wrote
/// (`RESOLVED`, least recently used first out).
pub const DEFERRED_CAPACITY: u32 = 16_384;
pub const RESOLVED_CAPACITY: u32 = 262_144;
/// Default ring buffer for violation events (bytes; a power of two, page multiple).
pub const EVENTS_DEFAULT_BYTES: u32 = 256 * 1024;
/// Default bound on live connections tracked at once (`--conn-capacity`).
pub const CONNS_DEFAULT_CAPACITY: u32 = 131_072;

/// Address families as the kernel numbers them (`sa_family_t`).
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// This node holds the client socket (the side that called connect).
pub const DIR_EGRESS: u8 = 0;
/// This node holds the server socket (the side that accepted).
pub const DIR_INGRESS: u8 = 1;

pub const VERDICT_ALLOWED: u8 = 0;
pub const VERDICT_VIOLATION: u8 = 1;

/// The `direction` label of [`DIR_EGRESS`] / [`DIR_INGRESS`].
pub const fn direction_label(direction: u8) -> &'static str {
    if direction == DIR_EGRESS { "egress" } else { "ingress" }
}

/// The `verdict` label of [`VERDICT_ALLOWED`] / [`VERDICT_VIOLATION`].
pub const fn verdict_label(verdict: u8) -> &'static str {
    if verdict == VERDICT_VIOLATION { "violation" } else { "allowed" }
}

/// Failure reasons, index into [`PairStats::failed`].
pub const FAIL_REFUSED: usize = 0;
pub const FAIL_RESET: usize = 1;
pub const FAIL_TIMEOUT: usize = 2;
pub const FAIL_OTHER: usize = 3;
pub const FAIL_REASONS: usize = 4;
/// The `reason` label of each `FAIL_*` index.
pub const FAIL_LABELS: [&str; FAIL_REASONS] = ["refused", "reset", "timeout", "other"];

/// The `sk_err` values that name a failure (`errno`).
pub const ECONNREFUSED: u32 = 111;
pub const ECONNRESET: u32 = 104;
pub const EPIPE: u32 = 32;
pub const ETIMEDOUT: u32 = 110;

/// Number of log2 histogram buckets. Bucket `i` counts values `v` (in microseconds) with
/// `v < 2^i` that did not fit bucket `i - 1`, i.e. `le = 2^i µs`; the last bucket is
/// everything above `2^(HIST_BUCKETS-2)` µs (Prometheus' `+Inf`).
pub const HIST_BUCKETS: usize = 28;

/// `external` policy for a peer in no cell (config `external:`).
pub const EXTERNAL_ALLOW: u32 = 0;
pub const EXTERNAL_VIOLATION: u32 = 1;
pub const EXTERNAL_IGNORE: u32 = 2;

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

/// Bits of [`CellInfo::flags`].
pub const CELL_FLAG_GLOBAL: u32 = 1;
/// Enforce mode refuses this cell's cross-cell connects (set only under `mode: enforce`,
/// for the cells in `enforce_cells`, or all when it is absent).
pub const CELL_FLAG_ENFORCE: u32 = 2;

/// Indices into the `SETTINGS` array map.
/// Which of the two cell-map sets (0 = A, 1 = B) the programs read. The agent fills the
/// other set completely, then flips this one word: no connection is ever judged against
/// a half-written map.
pub const SETTING_GENERATION: u32 = 0;
/// What the sweep writes besides counting: nothing ([`SWEEP_COUNT`], the periodic
/// sweep), a [`Brief`] of every connection ([`SWEEP_BRIEF`]), or the full record of each
/// connection whose cookie is in `WANTED` ([`SWEEP_WANTED`]). `/connections` runs the
/// last two: the iterator over socket storage restarts its bucket walk each time its
/// output buffer fills, so one pass of full records of every connection would cost the
/// square of their number on a machine with few CPUs (and so few buckets).
pub const SETTING_SWEEP_RECORDS: u32 = 1;
pub const SWEEP_COUNT: u32 = 0;
pub const SWEEP_BRIEF: u32 = 1;
pub const SWEEP_WANTED: u32 = 2;
/// The most connections one `/connections` request lists (its `limit`).
pub const LIST_MAX: u32 = 10_000;
/// `EXTERNAL_*` mode of set A; set B's is at the next index.
pub const SETTING_EXTERNAL: u32 = 2;
/// Violation events allowed per cell pair and direction per second, on each CPU (the
/// agent divides `--violation-event-rate` among the CPUs; 0 = none).
pub const SETTING_EVENT_RATE: u32 = 4;
/// Byte offset of `sock_cookie` in the `tcp:tcp_destroy_sock` record (0 = unknown).
pub const SETTING_DESTROY_COOKIE_OFFSET: u32 = 5;
/// 1 when set A's config is `mode: enforce`; set B's is at the next index.
pub const SETTING_ENFORCE: u32 = 6;
/// Most connections tracked at once (`--conn-capacity`).
pub const SETTING_CONN_CAPACITY: u32 = 8;
/// Byte offset of `skaddr` in the `tcp:tcp_destroy_sock` record (0 = unknown).
pub const SETTING_DESTROY_SKADDR_OFFSET: u32 = 9;
/// A listing's filter, applied by the brief pass: the cell (source or destination) a
/// connection must have, or [`LIST_ANY`]; its verdict (`VERDICT_*`), or [`LIST_ANY`].
pub const SETTING_LIST_CELL: u32 = 10;
pub const SETTING_LIST_VERDICT: u32 = 11;
pub const LIST_ANY: u32 = u32::MAX;
/// 1 when set A's config has services with ports (so the programs look up the ported
/// services' tries at all); set B's is at the next index.
pub const SETTING_PORTED_SERVICES: u32 = 12;
pub const SETTINGS_LEN: u32 = 14;

/// `sk_flags` bit set by `tcp_fin` when the peer's FIN arrives (`enum sock_flags`).
pub const SOCK_DONE: u64 = 1 << 1;

/// Indices into the per-CPU `COUNTERS` array: bookkeeping of the kernel side.
/// A connection not tracked because `--conn-capacity` connections were tracked.
pub const CTR_CONN_TABLE_FULL: u32 = 0;
/// A pair-statistics update dropped because the pair table was full.
pub const CTR_STATS_TABLE_FULL: u32 = 1;
/// Connections that began / ended being tracked (live = difference, summed over CPUs).
pub const CTR_CONN_TRACKED: u32 = 2;
pub const CTR_CONN_FORGOTTEN: u32 = 3;
/// Violation events: sent, dropped by the per-pair rate limit, dropped because the ring
/// buffer was full. sent + rate_limited + ringbuf_full = violations seen.
pub const CTR_EVENTS_SENT: u32 = 4;
pub const CTR_EVENTS_RATE_LIMITED: u32 = 5;
pub const CTR_EVENTS_RINGBUF_FULL: u32 = 6;
/// A connect that enforce mode could not judge, and so let through: an unbound socket in
/// a network namespace whose source address is not known yet, or not unique.
pub const CTR_ENFORCE_UNRESOLVED: u32 = 7;
/// Live connections the sweep visited (all sweeps), and those it found busy three times
/// in a row and left for the next sweep.
pub const CTR_SWEEP_VISITED: u32 = 8;
pub const CTR_SWEEP_BUSY: u32 = 9;
/// Connections to a virtual address: whose backend request was dropped (ring buffer
/// full; the sweep or the agent's scan of `DEFERRED` asks again), and that closed before
/// their backend was known but found `DEFERRED` full (not counted: lost).
pub const CTR_RESOLVE_RINGBUF_FULL: u32 = 10;
pub const CTR_DEFERRED_FULL: u32 = 11;
pub const COUNTERS_LEN: u32 = 12;

/// Slots of the `PROFILE` map (kept only when the agent runs with `--profile-kernel`):
/// one per `sock_ops` op (`BPF_SOCK_OPS_*`, below 16), and [`PROFILE_STATE_CLOSE`] for
/// the state change to CLOSE apart from the other state changes.
pub const PROFILE_SLOTS: u32 = 17;
pub const PROFILE_STATE_CLOSE: u32 = 16;

/// Runs and nanoseconds of one profiled `sock_ops` op on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCost {
    pub runs: u64,
    pub ns: u64,
}

/// Index into the `LIVE` array: connections tracked now, across CPUs (the capacity check).
pub const LIVE_CONNS: u32 = 0;
pub const LIVE_LEN: u32 = 1;

/// Key of the per-cell-pair statistics map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PairKey {
    /// Cell id of the client (the side that called connect).
    pub src_cell: u32,
    /// Cell id of the server.
    pub dst_cell: u32,
    /// [`DIR_EGRESS`] or [`DIR_INGRESS`].
    pub direction: u8,
    /// [`VERDICT_ALLOWED`] or [`VERDICT_VIOLATION`].
    pub verdict: u8,
    /// Service id of the server's end (config `services:`), or [`NO_SERVICE`]. A pair's
    /// figures are split by service; the pair's own families add them up.
    pub service: u16,
    pub _pad: [u8; 4],
}

impl PairKey {
    pub const fn new(src_cell: u32, dst_cell: u32, direction: u8, verdict: u8) -> Self {
        Self { src_cell, dst_cell, direction, verdict, service: NO_SERVICE, _pad: [0; 4] }
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

/// Counters and histograms of one cell pair, one copy per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairStats {
    /// Connections that reached ESTABLISHED.
    pub opened: u64,
    /// Established connections that reached CLOSE.
    pub closed: u64,
    /// Connections judged `violation` when first seen (connect for egress,
    /// established for ingress), whether or not they then succeeded.
    pub violations: u64,
    /// Connects refused by enforce mode.
    pub denied: u64,
    /// Client connects that never reached ESTABLISHED, by reason.
    pub failed: [u64; FAIL_REASONS],
    /// Payload bytes this node's socket sent and the peer acknowledged (SYN and FIN,
    /// which take a sequence number each, are not counted).
    pub bytes_sent: u64,
    /// Payload bytes this node's socket received.
    pub bytes_received: u64,
    pub retransmits: u64,
    /// Sum of connect latencies in nanoseconds (egress only).
    pub latency_sum_ns: u64,
    /// Connect latency histogram (log2 µs buckets).
    pub latency_hist: [u64; HIST_BUCKETS],
    /// Sum of smoothed RTTs in microseconds.
    pub rtt_sum_us: u64,
    /// Smoothed RTT histogram (log2 µs buckets): one sample per live connection per
    /// sweep, and one at its close.
    pub rtt_hist: [u64; HIST_BUCKETS],
    /// The violation-event rate limit of this pair on this CPU: the start of the current
    /// one-second window and the events sent in it. Bookkeeping, not a statistic.
    pub ev_window_ns: u64,
    pub ev_count: u64,
}

impl PairStats {
    pub const ZERO: Self = Self {
        opened: 0,
        closed: 0,
        violations: 0,
        denied: 0,
        failed: [0; FAIL_REASONS],
        bytes_sent: 0,
        bytes_received: 0,
        retransmits: 0,
        latency_sum_ns: 0,
        latency_hist: [0; HIST_BUCKETS],
        rtt_sum_us: 0,
        rtt_hist: [0; HIST_BUCKETS],
        ev_window_ns: 0,
        ev_count: 0,
    };

    /// Adds `o` into `self`: per-CPU copies summed into one (userspace only).
    pub fn merge(&mut self, o: &Self) {
        self.opened += o.opened;
        self.closed += o.closed;
        self.violations += o.violations;
        self.denied += o.denied;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.retransmits += o.retransmits;
        self.latency_sum_ns += o.latency_sum_ns;
        self.rtt_sum_us += o.rtt_sum_us;
        for (a, b) in self.failed.iter_mut().zip(o.failed) {
            *a += b;
        }
        for (a, b) in self.latency_hist.iter_mut().zip(o.latency_hist) {
            *a += b;
        }
        for (a, b) in self.rtt_hist.iter_mut().zip(o.rtt_hist) {
            *a += b;
        }
    }
}

/// Bits of [`Conn::flags`].
/// The connection reached ESTABLISHED (and was counted opened).
pub const CONN_ESTABLISHED: u8 = 1;
/// The connection is counted: its cells and verdict are set, its close will be seen.
pub const CONN_TRACKED: u8 = 2;
/// Older than the agent: put in by the seeding iterator at the agent's first start. Its
/// claims are kept in `SEEDED` under its cookie, where `tcp:tcp_destroy_sock` finds them.
pub const CONN_SEEDED: u8 = 4;
/// To a virtual address (`service_cidrs`): its server cell, service and verdict come from
/// `RESOLVED`, and nothing is counted before they do.
pub const CONN_VIRTUAL: u8 = 8;
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
    pub direction: u8,
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
    /// A connection to a virtual address: 1 once its open (and violation) is counted
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
    /// Payload sent and acknowledged since `base`: acknowledged sequence space, bounded
    /// by the payload ever sent, so the FIN (acknowledged, never payload) is left out
    /// without knowing whether it was sent.
    pub const fn payload_sent(&self, base: &Progress) -> u64 {
        let acked = self.acked.saturating_sub(base.acked);
        let sent = self.sent_once.saturating_sub(base.sent_once);
        if acked < sent { acked } else { sent }
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
        PairKey::new(self.src_cell, self.dst_cell, self.direction, self.verdict)
            .with_service(self.service)
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

/// One connection as the sweep reports it to `/connections`: its [`Conn`] as stored,
/// followed by this tail, its figures now (what its pair's counters hold of it, so the
/// two always agree).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepTail {
    /// What the connection has added to its pair's counters, after this sweep.
    pub claimed: Claimed,
    /// The smoothed RTT this sweep observed (0 when the socket stayed busy).
    pub srtt_us: u32,
    pub _pad: u32,
}

/// What a listing's first sweep says of each open connection that passes its filter:
/// enough to order them, in 16 bytes (the fewer bytes, the fewer times the iterator
/// restarts its walk).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Brief {
    pub cookie: u64,
    pub start_ns: u64,
}

/// Bytes of one sweep record: a [`Conn`], then a [`SweepTail`].
pub const SWEEP_RECORD_BYTES: usize =
    core::mem::size_of::<Conn>() + core::mem::size_of::<SweepTail>();

/// [`ViolationEvent::kind`]: a connection judged `violation`.
pub const EVENT_VIOLATION: u8 = 1;
/// [`ViolationEvent::kind`]: a connect refused by enforce mode.
pub const EVENT_DENIED: u8 = 2;
/// [`ViolationEvent::kind`]: not a violation but a request: find the backend of this
/// connection to a virtual address (`src` is the client, `dst` the virtual address).
pub const EVENT_RESOLVE: u8 = 3;

/// Where a connection to a virtual address went, as the agent judged its backend
/// (`RESOLVED`, by socket cookie).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    pub dst_cell: u32,
    pub service: u16,
    pub verdict: u8,
    pub _pad: u8,
}

/// A connection to a virtual address that closed before its backend was known
/// (`DEFERRED`, by socket cookie): the connection and its last figures, counted when the
/// agent has written its resolution and run the settling iterator.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deferred {
    pub conn: Conn,
    /// The socket's counters at its close.
    pub last: Progress,
    /// The failure index (`FAIL_*`) of its end, or [`NO_FAILURE`].
    pub failure: u32,
    pub srtt_us: u32,
    /// 1 when the peer's FIN had come.
    pub fin: u32,
    /// 1 once the settling counted it (the agent then removes it).
    pub settled: u32,
}

/// [`Deferred::failure`] of a connection that ended without one.
pub const NO_FAILURE: u32 = u32::MAX;

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

/// One violation, sent through the ring buffer. `src` is always the client.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViolationEvent {
    /// `bpf_ktime_get_ns` when it was seen.
    pub ts_ns: u64,
    pub cookie: u64,
    /// cgroup of the connecting process (egress), 0 when unknown.
    pub cgroup_id: u64,
    /// Process id (egress), 0 when unknown.
    pub pid: u32,
    pub src_cell: u32,
    pub dst_cell: u32,
    pub family: u16,
    pub src_port: u16,
    pub dst_port: u16,
    pub direction: u8,
    pub kind: u8,
    pub _pad: u32,
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub comm: [u8; 16],
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
/// (0 = every port) is allowed when the key is present.
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

/// Indices into the `META` array map: what a restarted agent checks before it adopts
/// the pinned maps. Written by the agent last, once everything is attached.
/// [`LAYOUT_VERSION`] of the pinned maps (0 = a start that never finished).
pub const META_LAYOUT: u32 = 0;
/// Hash of the eBPF object whose programs the pinned links run.
pub const META_BUILD: u32 = 1;
/// Config reloads that succeeded and that failed, kept across restarts (written by the
/// agent alone, so `cellwatch_config_reloads_total` never goes back).
pub const META_RELOADS_SUCCESS: u32 = 2;
pub const META_RELOADS_ERROR: u32 = 3;
pub const META_LEN: u32 = 4;

const _: () = assert!(core::mem::size_of::<PairKey>() == 16);
const _: () = assert!(core::mem::size_of::<Resolution>() == 8);
const _: () = assert!(core::mem::size_of::<Deferred>() == core::mem::size_of::<Conn>() + 32 + 16);
const _: () = assert!(core::mem::size_of::<CellName>() == 64);
const _: () =
    assert!(core::mem::size_of::<PairStats>() == (11 + FAIL_REASONS + 2 * HIST_BUCKETS) * 8);
const _: () = assert!(core::mem::size_of::<Conn>() == 176);
const _: () = assert!(core::mem::size_of::<FieldOffsets>() == 48);
const _: () = assert!(core::mem::size_of::<OpCost>() == 16);
const _: () = assert!(core::mem::size_of::<Progress>() == 32);
const _: () = assert!(core::mem::size_of::<Claimed>() == 24);
const _: () = assert!(core::mem::size_of::<Seeded>() == 72);
const _: () = assert!(core::mem::size_of::<SweepTail>() == 32);
const _: () = assert!(core::mem::size_of::<Brief>() == 16);
const _: () = assert!(core::mem::size_of::<ServiceKeyV4>() == 6);
const _: () = assert!(core::mem::size_of::<ServiceKeyV6>() == 18);
const _: () = assert!(core::mem::size_of::<CellInfo>() == 8);
const _: () = assert!(core::mem::size_of::<ViolationEvent>() == 96);
const _: () = assert!(core::mem::size_of::<PolicyKey>() == 16);
const _: () = assert!(core::mem::size_of::<NetnsKey>() == 16);
const _: () = assert!(core::mem::size_of::<NetnsAddr>() == 24);

/// Histogram bucket of a value in microseconds: the smallest `i` with `v < 2^i`, i.e.
/// `le = 2^i` µs, clamped to the last (+Inf) bucket. Shared by kernel and tests so the
/// bucket maths exist once.
#[inline(always)]
pub const fn hist_bucket(v_us: u64) -> usize {
    // v < 2^i  <=>  i > log2(v)  <=>  i = 64 - leading_zeros(v) for v > 0; v = 0 -> bucket 0.
    let i = (64 - v_us.leading_zeros()) as usize;
    if i >= HIST_BUCKETS { HIST_BUCKETS - 1 } else { i }
}

#[cfg(feature = "user")]
mod user {
    //! `aya::Pod` for every type that crosses into a map, on the userspace side only.
    #![expect(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]
    use super::*;

    /// Marks each type as plain old data for aya's map accessors.
    macro_rules! pod {
        ($($t:ty),* $(,)?) => {$(
            // SAFETY: #[repr(C)], Copy, made only of integers and integer arrays, with
            // every padding byte an explicit field (see the size asserts above).
            unsafe impl aya::Pod for $t {}
        )*};
    }

    pod!(
        PairKey,
        PairStats,
        Conn,
        Resolution,
        Deferred,
        Progress,
        Claimed,
        Seeded,
        SweepTail,
        Brief,
        ServiceKeyV4,
        ServiceKeyV6,
        CellInfo,
        PolicyKey,
        ViolationEvent,
        NetnsKey,
        NetnsAddr,
        CellName,
        FieldOffsets,
        OpCost,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_log2_upper_bounds() {
        assert_eq!(hist_bucket(0), 0);
        assert_eq!(hist_bucket(1), 1); // 1 < 2^1
        assert_eq!(hist_bucket(2), 2);
        assert_eq!(hist_bucket(3), 2);
        assert_eq!(hist_bucket(4), 3);
        assert_eq!(hist_bucket(1023), 10);
        assert_eq!(hist_bucket(1024), 11);
        assert_eq!(hist_bucket(u64::MAX), HIST_BUCKETS - 1);
        for v in [1u64, 7, 100, 5000, 1 << 20] {
            let i = hist_bucket(v);
            assert!(v < (1u64 << i), "{v} must be below le=2^{i}");
            assert!(i == 0 || v >= (1u64 << (i - 1)), "{v} belongs in a lower bucket");
        }
    }
}
