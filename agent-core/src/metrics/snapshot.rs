//! What a scrape reads from the kernel in one pass, and the config's catalog: the input
//! of every kernel-derived family.
use agent_common::{COUNTERS_LEN, PairKey, PairStats};

/// Everything a scrape needs from the kernel, read in one pass.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Per (src, dst, direction, verdict, service), summed over CPUs, sorted by key.
    pub pairs: Vec<(PairKey, PairStats)>,
    /// `CTR_*` counters summed over CPUs.
    pub counters: [u64; COUNTERS_LEN as usize],
    pub fill: Vec<MapFill>,
    /// Ring-buffer records the agent could not decode (never expected; counted to be
    /// seen): `cellwatch_events_lost_total{source="violation_undecodable"}`.
    pub undecodable_events: u64,
    /// Violation log lines the agent's node-wide rate held back (the events are served
    /// at `/violations` all the same): `cellwatch_violation_log_suppressed_total`.
    pub log_suppressed: u64,
    /// Time per `sock_ops` op, when the agent profiles the kernel (`--profile-kernel`).
    pub ops: Vec<OpTime>,
    /// The config's cells and services, for `cellwatch_cell_info` and
    /// `cellwatch_service_info`.
    pub catalog: Catalog,
}

/// What the config in force names: each cell (id, global) and each service (id, name,
/// the id of its cell). Names of cells come from the cell ids.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Catalog {
    pub cells: Vec<(u32, bool)>,
    pub services: Vec<(u16, String, u32)>,
}

/// Runs and time of one profiled `sock_ops` op, summed over CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpTime {
    /// `BPF_SOCK_OPS_*`, or `PROFILE_STATE_CLOSE`.
    pub op: u32,
    pub runs: u64,
    pub ns: u64,
}

/// Entries and capacity of one kernel map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapFill {
    pub map: &'static str,
    pub entries: u64,
    pub capacity: u64,
}
