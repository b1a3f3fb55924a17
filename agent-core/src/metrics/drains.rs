//! The drain families: for each drained cell its start, what opened into it while it was
//! drained, what `drain: refuse` refused, what is still open into it and which client
//! processes hold that; and the deadline of each temporary allow rule.
use std::collections::BTreeMap;

use agent_common::Direction;

use super::{
    families as f,
    snapshot::Snapshot,
    text::{Def, Family, Kind, Out, quoted},
};
use crate::ids::CellIds;

const START: Def = Def {
    name: f::DRAIN_START_TIMESTAMP_SECONDS,
    kind: Kind::Gauge,
    help: "Each drained cell: the drain's start as the config records it, or when this agent \
           first applied `drained: true`, in Unix seconds",
};
const OPENED: Def = Def {
    name: f::DRAIN_CONNECTIONS_OPENED_TOTAL,
    kind: Kind::Counter,
    help: "TCP connections that reached ESTABLISHED into a cell while it was drained (over \
           all its drains), per client cell and direction",
};
const REFUSED: Def = Def {
    name: f::DRAIN_CONNECTIONS_REFUSED_TOTAL,
    kind: Kind::Counter,
    help: "Connects into a drained cell refused by `drain: refuse` (enforce mode), per \
           client cell",
};
const ACTIVE: Def = Def {
    name: f::DRAIN_CONNECTIONS_ACTIVE,
    kind: Kind::Gauge,
    help: "Established TCP connections open now into a drained cell, opened before the drain \
           or during it, per client cell and direction",
};
const HOLDOUTS: Def = Def {
    name: f::DRAIN_HOLDOUTS,
    kind: Kind::Gauge,
    help: "Connections open now into a drained cell per client process on this node (the \
           top processes per cell), by command and container",
};
const EXPIRY: Def = Def {
    name: f::ALLOW_RULE_EXPIRY_TIMESTAMP_SECONDS,
    kind: Kind::Gauge,
    help: "Each temporary allow rule's deadline in Unix seconds: its flows are violations \
           from then on",
};

/// What one (cell, client cell, direction) holds.
#[derive(Default)]
struct Row {
    /// The cell is drained now: its gauges are written.
    drained: bool,
    opened: u64,
    active: u64,
    refused: u64,
}

/// Every drain family and the rules' deadlines, appended to `out`.
pub(super) fn render(snap: &Snapshot, ids: &CellIds, out: &mut Out<'_>) {
    let drains = &snap.catalog.drains;
    let mut f = Family::new(out, &START);
    for (cell, since) in drains {
        f.sample(&format!("cell={}", quoted(ids.name(*cell))), "", *since);
    }
    // A drain's counters are written while the cell is drained, and after, once they
    // counted anything: a series that comes and goes with each drain would read as new
    // connections whenever the cell is drained again.
    let mut rows: BTreeMap<(u32, u32, Direction), Row> = BTreeMap::new();
    for (k, s) in &snap.pairs {
        let drained = drains.iter().any(|(cell, _)| *cell == k.dst_cell);
        if drained || s.drain_opened > 0 || s.drain_denied > 0 {
            let r = rows.entry((k.dst_cell, k.src_cell, k.direction())).or_default();
            r.drained = drained;
            r.opened += s.drain_opened;
            r.active += s.opened.saturating_sub(s.closed);
            r.refused += s.drain_denied;
        }
    }
    let label = |cell: u32, src: u32| {
        format!("cell={},src_cell={}", quoted(ids.name(cell)), quoted(ids.name(src)))
    };
    let mut f = Family::new(out, &OPENED);
    for ((cell, src, dir), r) in &rows {
        f.sample(&label(*cell, *src), &format!("direction=\"{}\"", dir.label()), r.opened);
    }
    let mut f = Family::new(out, &REFUSED);
    for ((cell, src, dir), r) in &rows {
        if *dir == Direction::EGRESS {
            f.sample(&label(*cell, *src), "", r.refused);
        }
    }
    let mut f = Family::new(out, &ACTIVE);
    for ((cell, src, dir), r) in rows.iter().filter(|(_, r)| r.drained) {
        f.sample(&label(*cell, *src), &format!("direction=\"{}\"", dir.label()), r.active);
    }
    let mut f = Family::new(out, &HOLDOUTS);
    for h in &snap.holdouts {
        let process = format!("comm={},container={}", quoted(&h.comm), quoted(&h.container));
        f.sample(&label(h.cell, h.src_cell), &process, h.connections);
    }
    let mut f = Family::new(out, &EXPIRY);
    for r in &snap.catalog.temporary {
        let labels =
            format!("from={},to={},reason={}", quoted(&r.from), quoted(&r.to), quoted(&r.reason));
        f.sample(&labels, "", r.until);
    }
}
