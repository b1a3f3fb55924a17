//! The Prometheus view of the kernel's counters: a [`Snapshot`] of them ([`snapshot`]),
//! rendered as the text of the contract's metrics ([`render`]), with the histogram
//! buckets the user chose ([`buckets`]) at the detail level chosen ([`detail`]); every
//! family's name is in [`families`]. The agent appends its own metrics ([`encode`]);
//! [`proto`] turns the text into the protobuf exposition with native histograms.
//!
//! The text is written straight into a buffer handed on in chunks: no intermediate
//! metric objects and no whole copy of the text, so a scrape of 10,000 cell pairs costs
//! one pass and little memory. Pure: the same snapshot and names always render the same
//! text. The format's primitives are in [`text`]; each group of families ([`pairs`],
//! [`services`], [`drains`], [`udp`], [`bookkeeping`]) declares its own and writes them with those.

mod bookkeeping;
mod buckets;
mod detail;
mod drains;
pub mod families;
mod pairs;
pub mod proto;
mod services;
mod snapshot;
mod text;
mod udp;

use prometheus::{Encoder, TextEncoder, proto::MetricFamily};

pub use buckets::Buckets;
pub use detail::Detail;
pub use snapshot::{Catalog, HOLDOUTS_PER_CELL, Holdout, MapFill, OpTime, Snapshot, TemporaryRule};

use crate::ids::CellIds;
use text::{Bounds, CHUNK, Out};

/// What a render exports: the histogram buckets and the detail level.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub buckets: Buckets,
    pub detail: Detail,
}

/// Every kernel-derived family of the contract, as text, appended to `out`.
pub fn render(snap: &Snapshot, ids: &CellIds, opts: &Options, out: &mut String) {
    let mut o = Out { buf: std::mem::take(out), drain: None };
    render_into(snap, ids, opts, &mut o);
    *out = o.buf;
}

/// As [`render`], the text handed to `drain` in chunks of about 64 KiB, each ending a
/// line: what a scrape holds at once is a chunk, not the whole text.
pub fn render_chunked(snap: &Snapshot, ids: &CellIds, opts: &Options, drain: &mut dyn FnMut(&str)) {
    let mut o = Out { buf: String::with_capacity(CHUNK + 4096), drain: Some(drain) };
    render_into(snap, ids, opts, &mut o);
    if let Some(drain) = o.drain {
        drain(&o.buf);
    }
}

/// The pairs' families, the services' (after the catalog), then the bookkeeping.
fn render_into(snap: &Snapshot, ids: &CellIds, opts: &Options, out: &mut Out<'_>) {
    // `le="…"` of each exported bound, once.
    let bounds = Bounds::of(&opts.buckets);
    pairs::render(snap, ids, &bounds, opts.detail, out);
    services::render(snap, ids, &bounds, opts.detail, out);
    drains::render(snap, ids, out);
    udp::render(snap, ids, &bounds, opts.detail, out);
    bookkeeping::render(snap, out);
}

/// Appends the text exposition of `fams` (the agent's own metrics) to `out`. A family
/// with no samples is left out, as the text format requires.
pub fn encode(mut fams: Vec<MetricFamily>, out: &mut String) -> Result<(), prometheus::Error> {
    fams.retain(|f| !f.get_metric().is_empty());
    let mut buf = Vec::with_capacity(16 * 1024);
    TextEncoder::new().encode(&fams, &mut buf)?;
    out.push_str(&String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))?);
    Ok(())
}

#[cfg(test)]
mod tests;
