//! The embedded eBPF object and the names of what the agent uses in it: its programs
//! and their hooks, and the maps that are pinned. A unit test parses the object and
//! checks these lists against what it really holds, so the two cannot drift apart.

/// The eBPF object, built from `agent-ebpf` by this crate's build script.
pub(super) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cellwatch"));

pub(super) const SOCKOPS: &str = "cellwatch_sockops";
pub(super) const CONNECT4: &str = "cellwatch_connect4";
pub(super) const CONNECT6: &str = "cellwatch_connect6";
pub(super) const RST: &str = "cellwatch_rst";
pub(super) const DESTROY: &str = "cellwatch_destroy";

/// The tracepoint category of the two tracepoint programs.
pub(super) const TCP: &str = "tcp";
pub(super) const RST_EVENT: &str = "tcp_receive_reset";
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
}

/// Every program and its hook, in attach order: the connect hooks go before `sock_ops`,
/// so it finds the owner of every connect it sees.
pub(super) const PROGRAMS: [(&str, Hook); 5] = [
    (CONNECT4, Hook::Connect),
    (CONNECT6, Hook::Connect),
    (SOCKOPS, Hook::SockOps),
    (RST, Hook::Tracepoint(RST_EVENT)),
    (DESTROY, Hook::Tracepoint(DESTROY_EVENT)),
];

pub(super) const CONNS: &str = "CONNS";
pub(super) const PAIR_STATS: &str = "PAIR_STATS";
pub(super) const OWNERS: &str = "OWNERS";
pub(super) const EVENTS: &str = "EVENTS";
pub(super) const SEED_OPENED: &str = "SEED_OPENED";
pub(super) const SETTINGS: &str = "SETTINGS";
pub(super) const COUNTERS: &str = "COUNTERS";
pub(super) const CELL_NAMES: &str = "CELL_NAMES";
pub(super) const META: &str = "META";

/// The maps of one cell-map set: IPv4 trie, IPv6 trie, cell flags, allow rules.
#[derive(Clone, Copy, Debug)]
pub(super) struct SetNames {
    pub(super) v4: &'static str,
    pub(super) v6: &'static str,
    pub(super) info: &'static str,
    pub(super) policy: &'static str,
}

/// Sets A and B, in generation order.
pub(super) const SETS: [SetNames; 2] = [
    SetNames { v4: "CELLS_V4_A", v6: "CELLS_V6_A", info: "CELL_INFO_A", policy: "POLICY_A" },
    SetNames { v4: "CELLS_V4_B", v6: "CELLS_V6_B", info: "CELL_INFO_B", policy: "POLICY_B" },
];

/// The maps that outlive the agent. Everything the programs keep state in, plus the
/// agent's own bookkeeping (`CELL_NAMES`, `META`) and aya-log's buffer, so adopted
/// programs still log.
pub(super) const PINNED_MAPS: &[&str] = &[
    CONNS,
    PAIR_STATS,
    SETS[0].v4,
    SETS[1].v4,
    SETS[0].v6,
    SETS[1].v6,
    SETS[0].info,
    SETS[1].info,
    SETS[0].policy,
    SETS[1].policy,
    OWNERS,
    "NETNS_ADDR",
    EVENTS,
    "EVENT_RATE",
    SEED_OPENED,
    SETTINGS,
    COUNTERS,
    CELL_NAMES,
    META,
    AYA_LOGS,
];

/// aya-log's ring buffer, made by `aya-log-ebpf`.
const AYA_LOGS: &str = "AYA_LOGS";

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Parsing needs no kernel and no root: the object is only read.
    fn object() -> aya_obj::Object {
        aya_obj::Object::parse(EBPF_OBJECT).expect("the embedded eBPF object parses")
    }

    #[test]
    fn every_map_of_the_object_is_pinned_and_no_other() {
        let obj = object();
        let in_object: BTreeSet<&str> = obj.maps.keys().map(String::as_str).collect();
        let pinned: BTreeSet<&str> = PINNED_MAPS.iter().copied().collect();
        assert_eq!(pinned.len(), PINNED_MAPS.len(), "a map is listed twice");
        // `.rodata`, `.bss` and the like are the object's own data sections, not maps
        // the agent names.
        let named: BTreeSet<&str> = in_object.into_iter().filter(|m| !m.starts_with('.')).collect();
        assert_eq!(named, pinned, "the object's maps and the agent's list differ");
    }

    #[test]
    fn every_program_of_the_object_has_a_hook_and_no_other() {
        let in_object: BTreeSet<String> = object().programs.keys().cloned().collect();
        let hooked: BTreeSet<String> = PROGRAMS.iter().map(|(n, _)| (*n).to_owned()).collect();
        assert_eq!(in_object, hooked, "the object's programs and the agent's list differ");
    }
}
