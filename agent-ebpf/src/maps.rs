//! Every map the programs share with the agent. Names are the contract with the loader
//! in `agent/src/kernel/object.rs` (a unit test there checks the two lists agree).
use agent_common::{
    CellInfo, CellName, Conn, Deferred, DnsKey, DnsPending, DnsPendingKey, DnsStats, FieldOffsets,
    FlowKey, NetnsAddr, NetnsKey, OpCost, PairKey, PairStats, PolicyKey, Resolution, Seeded,
    ServiceKeyV4, ServiceKeyV6, UdpFlow, UdpStats,
};
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    btf_maps::SkStorage,
    macros::{btf_map, map},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};

/// Each tracked connection's state, in its socket's own storage: no lookup by key, and
/// freed with the socket.
#[btf_map]
pub(crate) static CONN: SkStorage<Conn> = SkStorage::new();

/// Counters and histograms per (src cell, dst cell, direction, verdict), per CPU.
/// Entries are allocated on first use so idle pairs cost nothing.
#[map]
pub(crate) static PAIR_STATS: PerCpuHashMap<PairKey, PairStats> =
    PerCpuHashMap::with_max_entries(agent_common::PAIR_STATS_CAPACITY, BPF_F_NO_PREALLOC);

/// Where a pair's figures go when `PAIR_STATS` cannot allocate its entry: one value
/// shared by every CPU (every update is atomic), preallocated so an insert never waits
/// on the allocator. The agent adds both tables up.
#[map]
pub(crate) static PAIR_OVERFLOW: HashMap<PairKey, PairStats> =
    HashMap::with_max_entries(agent_common::PAIR_OVERFLOW_CAPACITY, 0);

// The cell map comes in two sets, A and B; `SETTINGS[SETTING_GENERATION]` says which
// one the programs read (see `cells.rs`).

/// IPv4 prefix -> cell id, set A.
#[map]
pub(crate) static CELLS_V4_A: LpmTrie<[u8; 4], u32> =
    LpmTrie::with_max_entries(agent_common::CELLS_V4_CAPACITY, 0);
/// IPv4 prefix -> cell id, set B.
#[map]
pub(crate) static CELLS_V4_B: LpmTrie<[u8; 4], u32> =
    LpmTrie::with_max_entries(agent_common::CELLS_V4_CAPACITY, 0);

/// IPv6 prefix -> cell id, set A.
#[map]
pub(crate) static CELLS_V6_A: LpmTrie<[u8; 16], u32> =
    LpmTrie::with_max_entries(agent_common::CELLS_V6_CAPACITY, 0);
/// IPv6 prefix -> cell id, set B.
#[map]
pub(crate) static CELLS_V6_B: LpmTrie<[u8; 16], u32> =
    LpmTrie::with_max_entries(agent_common::CELLS_V6_CAPACITY, 0);

/// Services with ports, per set: (port, address prefix) -> service id. Services without
/// ports are in the cell tries themselves (see `agent_common::cell_entry`).
#[map]
pub(crate) static SERVICES_V4_A: LpmTrie<ServiceKeyV4, u32> =
    LpmTrie::with_max_entries(agent_common::SERVICES_CAPACITY, 0);

#[map]
pub(crate) static SERVICES_V4_B: LpmTrie<ServiceKeyV4, u32> =
    LpmTrie::with_max_entries(agent_common::SERVICES_CAPACITY, 0);

#[map]
pub(crate) static SERVICES_V6_A: LpmTrie<ServiceKeyV6, u32> =
    LpmTrie::with_max_entries(agent_common::SERVICES_CAPACITY, 0);

#[map]
pub(crate) static SERVICES_V6_B: LpmTrie<ServiceKeyV6, u32> =
    LpmTrie::with_max_entries(agent_common::SERVICES_CAPACITY, 0);

/// Services with `protocol: udp` (always with ports), per set, keyed as above.
#[map]
pub(crate) static SERVICES_UDP_V4_A: LpmTrie<ServiceKeyV4, u32> =
    LpmTrie::with_max_entries(agent_common::SERVICES_CAPACITY, 0);

#[map]
pub(crate) static SERVICES_UDP_V4_B: LpmTrie<ServiceKeyV4, u32> =
    LpmTrie::with_max_entries(agent_common::SERVICES_CAPACITY, 0);

#[map]
pub(crate) static SERVICES_UDP_V6_A: LpmTrie<ServiceKeyV6, u32> =
    LpmTrie::with_max_entries(agent_common::SERVICES_CAPACITY, 0);

#[map]
pub(crate) static SERVICES_UDP_V6_B: LpmTrie<ServiceKeyV6, u32> =
    LpmTrie::with_max_entries(agent_common::SERVICES_CAPACITY, 0);

/// Per cell id: flags such as global, set A.
#[map]
pub(crate) static CELL_INFO_A: Array<CellInfo> =
    Array::with_max_entries(agent_common::MAX_CELLS + 1, 0);
/// Per cell id: flags such as global, set B.
#[map]
pub(crate) static CELL_INFO_B: Array<CellInfo> =
    Array::with_max_entries(agent_common::MAX_CELLS + 1, 0);

/// Allow rules (present = allowed until the value, see `PolicyKey`), set A.
#[map]
pub(crate) static POLICY_A: HashMap<PolicyKey, u64> =
    HashMap::with_max_entries(agent_common::POLICY_CAPACITY, 0);
/// Allow rules (present = allowed until the value, see `PolicyKey`), set B.
#[map]
pub(crate) static POLICY_B: HashMap<PolicyKey, u64> =
    HashMap::with_max_entries(agent_common::POLICY_CAPACITY, 0);

/// The source address each network namespace's sockets use (see `netns.rs`).
#[map]
pub(crate) static NETNS_ADDR: LruHashMap<NetnsKey, NetnsAddr> =
    LruHashMap::with_max_entries(agent_common::NETNS_CAPACITY, 0);

/// Violation events for the agent (size set by the agent).
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(agent_common::EVENTS_DEFAULT_BYTES, 0);

/// Connections older than the agent, by socket cookie, until they close (see `seed.rs`).
#[map]
pub(crate) static SEEDED: HashMap<u64, Seeded> =
    HashMap::with_max_entries(agent_common::SEEDED_CAPACITY, BPF_F_NO_PREALLOC);

/// The seeding plan: socket cookie -> the connection as the agent judged it, for
/// the seeding iterator to put in storage. Written and emptied by the agent.
#[map]
pub(crate) static SEED_PLAN: HashMap<u64, Conn> =
    HashMap::with_max_entries(agent_common::SEEDED_CAPACITY, BPF_F_NO_PREALLOC);

/// Where each connection to a service address went, by socket cookie: written by the
/// agent from conntrack, read by the sweep, the close and the settling (see `service_addr.rs`).
#[map]
pub(crate) static RESOLVED: LruHashMap<u64, Resolution> =
    LruHashMap::with_max_entries(agent_common::RESOLVED_CAPACITY, 0);

/// Connections to a service address that closed before their backend was known, by
/// socket cookie, until the settling counts them (see `settle.rs`).
#[map]
pub(crate) static DEFERRED: HashMap<u64, Deferred> =
    HashMap::with_max_entries(agent_common::DEFERRED_CAPACITY, BPF_F_NO_PREALLOC);

/// Where a `DEFERRED` entry is put together before it is inserted (a `Deferred` would
/// not fit the 512-byte stack beside the rest).
#[map]
pub(crate) static DEFER_SCRATCH: PerCpuArray<Deferred> = PerCpuArray::with_max_entries(1, 0);

/// Scalar settings (`SETTING_*` indices).
#[map]
pub(crate) static SETTINGS: Array<u32> = Array::with_max_entries(agent_common::SETTINGS_LEN, 0);

/// Byte offsets of kernel socket fields, from the kernel's BTF (one entry).
#[map]
pub(crate) static FIELDS: Array<FieldOffsets> = Array::with_max_entries(1, 0);

/// Bookkeeping counters (`CTR_*` indices), per CPU.
#[map]
pub(crate) static COUNTERS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(agent_common::COUNTERS_LEN, 0);

/// The cookies of the connections a `/connections` request lists: the sweep writes the
/// full record of these only (`SWEEP_WANTED`).
#[map]
pub(crate) static WANTED: HashMap<u64, u8> = HashMap::with_max_entries(agent_common::LIST_MAX, 0);

/// A per-CPU buffer the `struct tcp_sock` fields are copied into in one read
/// (`kread.rs`): one probe read instead of one per field. Eight bytes past SPAN_MAX, so
/// a masked offset always has room for the field it reads.
#[map]
pub(crate) static SCRATCH: PerCpuArray<[u8; agent_common::SPAN_MAX as usize + 8]> =
    PerCpuArray::with_max_entries(1, 0);

/// Time per `sock_ops` op, per CPU: written only when the agent loaded the programs
/// with `--profile-kernel` (see `PROFILE` in `sockops.rs`).
#[map]
pub(crate) static PROFILE: PerCpuArray<OpCost> =
    PerCpuArray::with_max_entries(agent_common::PROFILE_SLOTS, 0);

/// Shared counters (`LIVE_*` indices), updated atomically across CPUs.
#[map]
pub(crate) static LIVE: Array<u64> = Array::with_max_entries(agent_common::LIVE_LEN, 0);

/// Cell id -> name, so a restarted agent keeps labelling ids as before. Written and read
/// by the agent only.
#[map]
pub(crate) static CELL_NAMES: Array<CellName> =
    Array::with_max_entries(agent_common::MAX_CELLS + 1, 0);

/// Layout version and program build of the pinned state (`META_*` indices). Written and
/// read by the agent only.
#[map]
pub(crate) static META: Array<u32> = Array::with_max_entries(agent_common::META_LEN, 0);

/// Live UDP flows, by 5-tuple as this node's socket sees it (see `udp.rs`). Entries are
/// allocated on first use; the agent removes those idle for `--udp-idle`.
#[map]
pub(crate) static UDP_FLOWS: HashMap<FlowKey, UdpFlow> =
    HashMap::with_max_entries(agent_common::UDP_FLOWS_CAPACITY, BPF_F_NO_PREALLOC);

/// UDP counters per (src cell, dst cell, direction, verdict, service), per CPU.
#[map]
pub(crate) static UDP_STATS: PerCpuHashMap<PairKey, UdpStats> =
    PerCpuHashMap::with_max_entries(agent_common::UDP_STATS_CAPACITY, BPF_F_NO_PREALLOC);

/// DNS queries sent and not yet answered, by the client's end and query id (`dns.rs`).
#[map]
pub(crate) static DNS_PENDING: LruHashMap<DnsPendingKey, DnsPending> =
    LruHashMap::with_max_entries(agent_common::DNS_PENDING_CAPACITY, 0);

/// DNS answers and latency per (client cell, service, response code), per CPU.
#[map]
pub(crate) static DNS_STATS: PerCpuHashMap<DnsKey, DnsStats> =
    PerCpuHashMap::with_max_entries(agent_common::DNS_STATS_CAPACITY, BPF_F_NO_PREALLOC);
