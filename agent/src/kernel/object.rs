//! The embedded eBPF object and the names of what the agent uses in it: its programs
//! and their hooks or iterator targets, and the maps that are pinned. A unit test parses the object and
//! checks these lists against what it really holds, so the two cannot drift apart.

/// The eBPF object, built from `agent-ebpf` by this crate's build script.
pub(super) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cellwatch"));

pub(super) const SOCKOPS: &str = "cellwatch_sockops";
pub(super) const CONNECT4: &str = "cellwatch_connect4";
pub(super) const CONNECT6: &str = "cellwatch_connect6";
pub(super) const DESTROY: &str = "cellwatch_destroy";
pub(super) const SWEEP: &str = "cellwatch_sweep";
pub(super) const SWEEP_TCP: &str = "cellwatch_sweep_tcp";
pub(super) const SEED: &str = "cellwatch_seed";
pub(super) const SETTLE: &str = "cellwatch_settle";
/// Run by the agent with `BPF_PROG_TEST_RUN`, never attached.
pub(super) const SETTLE_ONE: &str = "cellwatch_settle_one";
/// The smallest programs of the optional kinds, loaded only to probe them.
pub(super) const PROBE_TCP: &str = "cellwatch_probe_tcp";
pub(super) const PROBE_RAW_TP: &str = "cellwatch_probe_raw_tp";
/// Every UDP datagram, at the cgroup skb hooks (optional: `udp`).
pub(super) const UDP_EGRESS: &str = "cellwatch_udp_egress";
pub(super) const UDP_INGRESS: &str = "cellwatch_udp_ingress";

/// The tracepoint category of the destroy program.
pub(super) const TCP: &str = "tcp";
pub(super) const DESTROY_EVENT: &str = "tcp_destroy_sock";

/// Where a program goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Hook {
    /// cgroup `connect4`/`connect6` on the cgroup v2 root.
    Connect,
    /// `sock_ops` on the cgroup v2 root.
    SockOps,
    /// A `tcp:` tracepoint.
    Tracepoint(&'static str),
    /// cgroup skb egress (`true`) or ingress on the cgroup v2 root.
    Skb(bool),
}

/// The programs that are always on their hooks, in attach order: the connect hooks go
/// before `sock_ops`, so every connect it sees has its storage.
pub(super) const PROGRAMS: [(&str, Hook); 3] =
    [(CONNECT4, Hook::Connect), (CONNECT6, Hook::Connect), (SOCKOPS, Hook::SockOps)];

/// On their hooks when the kernel takes them and `--without udp` does not say otherwise.
pub(super) const UDP_PROGRAMS: [(&str, Hook); 2] =
    [(UDP_EGRESS, Hook::Skb(true)), (UDP_INGRESS, Hook::Skb(false))];

/// On its hook only while connections older than the agent are open.
pub(super) const SEEDED_CLOSE: (&str, Hook) = (DESTROY, Hook::Tracepoint(DESTROY_EVENT));

/// Iterators, run by the agent (never attached to a hook): the live sweep over the
/// connection storage or over each namespace's TCP sockets, the seeding walk over the
/// TCP sockets, and the settling over `DEFERRED`, with the kernel's iterator target of
/// each.
pub(super) const ITERATORS: [(&str, &str); 5] = [
    (SWEEP, "bpf_sk_storage_map"),
    (SWEEP_TCP, "tcp"),
    (PROBE_TCP, "tcp"),
    (SEED, "tcp"),
    (SETTLE, "bpf_map_elem"),
];

pub(super) const CONN: &str = "CONN";
pub(super) const PAIR_STATS: &str = "PAIR_STATS";
pub(super) const PAIR_OVERFLOW: &str = "PAIR_OVERFLOW";
pub(super) const WANTED: &str = "WANTED";
pub(super) const EVENTS: &str = "EVENTS";
pub(super) const SEEDED: &str = "SEEDED";
pub(super) const SEED_PLAN: &str = "SEED_PLAN";
pub(super) const SETTINGS: &str = "SETTINGS";
pub(super) const FIELDS: &str = "FIELDS";
pub(super) const COUNTERS: &str = "COUNTERS";
pub(super) const LIVE: &str = "LIVE";
pub(super) const PROFILE: &str = "PROFILE";
/// The read-only global that turns per-op profiling on (`--profile-kernel`).
pub(super) const PROFILE_KERNEL: &str = "PROFILE_KERNEL";
pub(super) const CELL_NAMES: &str = "CELL_NAMES";
pub(super) const META: &str = "META";
pub(super) const RESOLVED: &str = "RESOLVED";
pub(super) const DEFERRED: &str = "DEFERRED";
pub(super) const UDP_FLOWS: &str = "UDP_FLOWS";
pub(super) const UDP_STATS: &str = "UDP_STATS";
pub(super) const DNS_PENDING: &str = "DNS_PENDING";
pub(super) const DNS_STATS: &str = "DNS_STATS";

/// The maps of one cell-map set: IPv4 trie, IPv6 trie, cell flags, allow rules.
#[derive(Clone, Copy, Debug)]
pub(super) struct SetNames {
    pub(super) v4: &'static str,
    pub(super) v6: &'static str,
    pub(super) info: &'static str,
    pub(super) policy: &'static str,
    /// The tries of services with ports.
    pub(super) svc_v4: &'static str,
    pub(super) svc_v6: &'static str,
    /// The tries of UDP services.
    pub(super) udp_v4: &'static str,
    pub(super) udp_v6: &'static str,
}

/// Sets A and B, in generation order.
pub(super) const SETS: [SetNames; 2] = [
    SetNames {
        v4: "CELLS_V4_A",
        v6: "CELLS_V6_A",
        info: "CELL_INFO_A",
        policy: "POLICY_A",
        svc_v4: "SERVICES_V4_A",
        svc_v6: "SERVICES_V6_A",
        udp_v4: "SERVICES_UDP_V4_A",
        udp_v6: "SERVICES_UDP_V6_A",
    },
    SetNames {
        v4: "CELLS_V4_B",
        v6: "CELLS_V6_B",
        info: "CELL_INFO_B",
        policy: "POLICY_B",
        svc_v4: "SERVICES_V4_B",
        svc_v6: "SERVICES_V6_B",
        udp_v4: "SERVICES_UDP_V4_B",
        udp_v6: "SERVICES_UDP_V6_B",
    },
];

/// The maps that outlive the agent: every map of the object. The programs keep their
/// state in them, the agent its bookkeeping (`CELL_NAMES`, `META`), and aya-log's buffer
/// is among them so adopted programs still log.
pub(super) const PINNED_MAPS: &[&str] = &[
    CONN,
    PAIR_STATS,
    PAIR_OVERFLOW,
    SETS[0].v4,
    SETS[1].v4,
    SETS[0].v6,
    SETS[1].v6,
    SETS[0].info,
    SETS[1].info,
    SETS[0].policy,
    SETS[1].policy,
    SETS[0].svc_v4,
    SETS[1].svc_v4,
    SETS[0].svc_v6,
    SETS[1].svc_v6,
    SETS[0].udp_v4,
    SETS[1].udp_v4,
    SETS[0].udp_v6,
    SETS[1].udp_v6,
    UDP_FLOWS,
    UDP_STATS,
    DNS_PENDING,
    DNS_STATS,
    "NETNS_ADDR",
    EVENTS,
    SEEDED,
    SEED_PLAN,
    RESOLVED,
    DEFERRED,
    "DEFER_SCRATCH",
    WANTED,
    SETTINGS,
    FIELDS,
    COUNTERS,
    LIVE,
    PROFILE,
    // Scratch space for one program run; pinned with the rest so nothing is left out.
    "SCRATCH",
    CELL_NAMES,
    META,
    AYA_LOGS,
];

/// Maps and links that earlier layouts pinned (before layout 4), so that discarding or
/// uninstalling their state removes them too: the only names beside this build's that
/// uninstall removes.
pub(super) const RETIRED_MAPS: &[&str] = &[
    "CELLS_V4",
    "CELLS_V6",
    "CELL_INFO",
    "CONNS",
    "EVENT_RATE",
    "OWNERS",
    "POLICY",
    "SEED_OPENED",
];
pub(super) const RETIRED_LINKS: &[&str] = &["cellwatch_rst"];

/// The suffix of a link pinned beside the one it replaces, for a moment (bpffs refuses
/// names with a dot).
pub(super) const NEXT_SUFFIX: &str = "_next";

/// Whether `name` is a map the agent pins (now or in an earlier layout).
pub(super) fn is_our_map(name: &str) -> bool {
    PINNED_MAPS.contains(&name) || RETIRED_MAPS.contains(&name)
}

/// Whether `name` is a link the agent pins: a program on a hook (now or in an earlier
/// layout), or one about to replace it.
pub(super) fn is_our_link(name: &str) -> bool {
    let base = name.strip_suffix(NEXT_SUFFIX).unwrap_or(name);
    PROGRAMS.iter().chain(&UDP_PROGRAMS).any(|(n, _)| *n == base)
        || SEEDED_CLOSE.0 == base
        || RETIRED_LINKS.contains(&base)
}

/// aya-log's ring buffer, made by `aya-log-ebpf`.
const AYA_LOGS: &str = "AYA_LOGS";

#[cfg(test)]
mod tests;
