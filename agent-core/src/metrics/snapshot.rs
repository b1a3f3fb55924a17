//! What a scrape reads from the kernel in one pass, and the config's catalog: the input
//! of every kernel-derived family.
use agent_common::{COUNTERS_LEN, DnsKey, DnsStats, PairKey, PairStats, UdpStats, Verdict};

use super::text::slot;

/// Everything a scrape needs from the kernel, read in one pass.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Per (src, dst, direction, verdict, service), summed over CPUs, sorted by key.
    pub pairs: Vec<(PairKey, PairStats)>,
    /// UDP statistics per (src, dst, direction, verdict, service), summed over CPUs.
    pub udp: Vec<(PairKey, UdpStats)>,
    /// DNS answers per (client cell, service, response code), summed over CPUs.
    pub dns: Vec<(DnsKey, DnsStats)>,
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
    /// The client processes holding connections open into drained cells, at most
    /// [`HOLDOUTS_PER_CELL`] per cell (`cellwatch_drain_holdouts`).
    pub holdouts: Vec<Holdout>,
}

/// Most client processes named per drained cell by `cellwatch_drain_holdouts`.
pub const HOLDOUTS_PER_CELL: usize = 20;

/// Connections one client process on this node holds open into a drained cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holdout {
    /// The drained cell's id, and the client's.
    pub cell: u32,
    pub src_cell: u32,
    pub comm: String,
    /// The container's id (12 hex digits), or `host`.
    pub container: String,
    pub connections: u64,
}

/// A temporary allow rule of the config in force, for its deadline's gauge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemporaryRule {
    pub from: String,
    pub to: String,
    pub reason: String,
    /// The deadline, in Unix seconds.
    pub until: u64,
}

/// What the config in force names: each cell (id, global) and each service (id, name,
/// the id of its cell). Names of cells come from the cell ids.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Catalog {
    pub cells: Vec<(u32, bool)>,
    pub services: Vec<(u16, String, u32)>,
    /// Each drained cell's id and the drain's start, in Unix seconds.
    pub drains: Vec<(u32, u64)>,
    pub temporary: Vec<TemporaryRule>,
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

/// What a run of neighbouring keys of [`Snapshot::pairs`] adds up to, the part every
/// family group shares: opened and closed by verdict (by [`slot`]), which verdicts have a
/// key (each gets its series), the bytes, and the run's place in the key order (its keys
/// are `order[span.0..span.1]`; histograms stay in the snapshot).
#[derive(Default)]
pub(super) struct Tally {
    pub(super) opened: [u64; 2],
    pub(super) closed: [u64; 2],
    pub(super) has: [bool; 2],
    pub(super) sent: u64,
    pub(super) received: u64,
    pub(super) span: (usize, usize),
}

impl Tally {
    /// Adds one key's statistics.
    fn add(&mut self, verdict: Verdict, s: &PairStats) {
        let v = slot(verdict);
        self.has[v] = true;
        self.opened[v] += s.opened;
        self.closed[v] += s.closed;
        self.sent += s.bytes_sent;
        self.received += s.bytes_received;
    }

    /// Connections open: opened less closed, over verdicts.
    pub(super) fn active(&self) -> u64 {
        let (opened, closed): (u64, u64) = (self.opened.iter().sum(), self.closed.iter().sum());
        opened.saturating_sub(closed)
    }
}

/// The runs of `snap`'s keys in `order` that share a `row` key, in order: each a `G`
/// whose [`Tally`] (`tally`) holds what they share, and to which `more` adds the rest.
pub(super) fn runs<K: PartialEq, G: Default>(
    snap: &Snapshot,
    order: &[usize],
    row: impl Fn(&PairKey) -> K,
    tally: impl Fn(&mut G) -> &mut Tally,
    mut more: impl FnMut(&mut G, &PairKey, &PairStats),
) -> Vec<(K, G)> {
    let mut out: Vec<(K, G)> = Vec::new();
    for (at, &i) in order.iter().enumerate() {
        let (k, s) = &snap.pairs[i];
        let rk = row(k);
        if out.last().is_none_or(|(last, _)| *last != rk) {
            let mut g = G::default();
            tally(&mut g).span = (at, at);
            out.push((rk, g));
        }
        let Some((_, g)) = out.last_mut() else { continue };
        let t = tally(g);
        t.span.1 = at + 1;
        t.add(k.verdict(), s);
        more(g, k, s);
    }
    out
}
