//! The Prometheus view of the kernel's counters: a [`Snapshot`] of them, rendered as the
//! metric families of the contract ([`families`]) and as text ([`encode`]). Pure: the
//! same snapshot and cell names always render the same text.

mod families;

use agent_common::{COUNTERS_LEN, PairKey, PairStats};
use prometheus::{Encoder, TextEncoder, proto::MetricFamily};

pub use families::{bucket_bounds, families};

/// Everything a scrape needs from the kernel, read in one pass.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Per (src, dst, direction, verdict), summed over CPUs, sorted by key.
    pub pairs: Vec<(PairKey, PairStats)>,
    /// `CTR_*` counters summed over CPUs.
    pub counters: [u64; COUNTERS_LEN as usize],
    pub fill: Vec<MapFill>,
    /// Ring-buffer records the agent could not decode (never expected; counted to be
    /// seen): `cellwatch_events_lost_total{source="violation_undecodable"}`.
    pub undecodable_events: u64,
}

/// Entries and capacity of one kernel map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapFill {
    pub map: &'static str,
    pub entries: u64,
    pub capacity: u64,
}

/// The text exposition of `fams`. A family with no samples (no traffic yet) is left
/// out, as the text format requires.
pub fn encode(mut fams: Vec<MetricFamily>) -> Result<String, prometheus::Error> {
    fams.retain(|f| !f.get_metric().is_empty());
    let mut buf = Vec::with_capacity(64 * 1024);
    TextEncoder::new().encode(&fams, &mut buf)?;
    String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
}
