//! The demo's live table: per cell pair, what the counted side of each connection saw
//! ([`agent_view::side`]), read back from the agent's own `/metrics`, with violations
//! marked. Bytes are the client's, as the report reads them ([`side::client_bytes`]).
#![forbid(unsafe_code)]

use std::{collections::BTreeMap, fmt::Write as _};

use agent_core::{metrics::families as f, promtext::Sample};
use agent_view::{
    format::Table as Columns,
    side::{self, Way},
};

/// One cell pair, as its clients saw it.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Row {
    pub(crate) opened: f64,
    pub(crate) violations: f64,
    pub(crate) active: f64,
    pub(crate) refused: f64,
    /// Payload bytes the client sent and received.
    pub(crate) sent: f64,
    pub(crate) received: f64,
}

/// Rows by (src cell, dst cell).
pub(crate) type Table = BTreeMap<(String, String), Row>;

/// Builds the table from the counted side of each connection: a connection between two
/// demo cells is also seen from its server socket (ingress), which would only repeat the
/// numbers. An external client's bytes, seen from its server, count the other way.
pub(crate) fn build(samples: &[Sample]) -> Table {
    let mut t = Table::new();
    for s in samples.iter().filter(|s| side::counts_sample(s)) {
        let field: fn(&mut Row) -> &mut f64 = match s.name.as_str() {
            f::CONNECTIONS_OPENED_TOTAL => |r| &mut r.opened,
            // Counted at connect: refused attempts are in it too.
            f::BOUNDARY_VIOLATIONS_TOTAL => |r| &mut r.violations,
            f::CONNECTIONS_ACTIVE => |r| &mut r.active,
            f::BYTES_SENT_TOTAL | f::BYTES_RECEIVED_TOTAL => {
                let socket = if s.name == f::BYTES_SENT_TOTAL { Way::Sent } else { Way::Received };
                match side::client_bytes(socket, s.label("direction")) {
                    Way::Sent => |r| &mut r.sent,
                    Way::Received => |r| &mut r.received,
                }
            }
            f::CONNECTIONS_FAILED_TOTAL if s.label("reason") == "refused" => |r| &mut r.refused,
            _ => continue,
        };
        let key = (s.label("src_cell").to_owned(), s.label("dst_cell").to_owned());
        *field(t.entry(key).or_default()) += s.value;
    }
    t
}

/// The columns: headings, which are numbers, and the least widths.
const COLUMNS: Columns<'static> = Columns {
    indent: "  ",
    gap: " ",
    header: &[
        "SRC CELL",
        "DST CELL",
        "OPENED",
        "VIOLATIONS",
        "ACTIVE",
        "REFUSED",
        "SENT B",
        "RECV B",
    ],
    numeric: &[false, false, true, true, true, true, true, true],
    min: &[9, 9, 8, 10, 7, 8, 8, 9],
};

/// The table as text. With `color`, violation rows are red (for a terminal); without,
/// they are marked by words alone.
pub(crate) fn render(t: &Table, color: bool) -> String {
    let rows: Vec<Vec<String>> = t
        .iter()
        .map(|((src, dst), r)| {
            let mut row = vec![src.clone(), dst.clone()];
            let figures = [r.opened, r.violations, r.active, r.refused, r.sent, r.received];
            row.extend(figures.iter().map(f64::to_string));
            row
        })
        .collect();
    let mut lines = COLUMNS.lines(&rows).into_iter();
    let mut out = lines.next().unwrap_or_default() + "\n";
    if t.is_empty() {
        out.push_str("  (no connections counted yet)\n");
    }
    for (line, r) in lines.zip(t.values()) {
        if r.violations > 0.0 {
            let mark = "  <- cross-cell leak";
            let _ = if color {
                writeln!(out, "\x1b[1;31m{line}{mark}\x1b[0m")
            } else {
                writeln!(out, "{line}{mark}")
            };
        } else {
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

#[cfg(test)]
mod tests;
