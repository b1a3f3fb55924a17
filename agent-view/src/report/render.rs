//! `cellwatch report`'s three outputs: text for people, JSON for scripts (the model as
//! serde writes it: see the README for its shape), and graphviz dot, where cells and
//! services are nodes (a service inside the box of the cell it lies in) and each
//! dependency is an edge as wide as its share of the busiest one's connections. A UDP
//! service's connections are its flows, and each output says so where it counts them.
#![forbid(unsafe_code)]

use std::fmt::Write as _;

use super::{
    Calls, Destination, FACTOR, FAILURE_RATIO_FLOOR, MIN_CONNECTS_PER_SECOND, Outlier,
    P99_FLOOR_SECONDS, Report, Share, Signal,
};
use agent_core::names::EXTERNAL;

use crate::format::{Table, fmt_bytes, fmt_duration, fmt_span, pct, printable};

fn bytes(v: u64) -> String {
    fmt_bytes(Some(v as f64))
}

/// Rows as aligned columns under `header`, each line indented by `indent`; `numeric`
/// columns are aligned right.
fn table(indent: &str, header: &[&str], numeric: &[bool], rows: &[Vec<String>]) -> String {
    Table::new(indent, header, numeric).render(rows)
}

impl Outlier {
    /// The cell's figure, or its peers' median, as text.
    pub(super) fn figure(&self, v: f64) -> String {
        match self.signal {
            Signal::ConnectFailures => pct(Some(v)),
            Signal::ConnectP99 => fmt_duration(v),
        }
    }

    pub(super) fn destination(&self) -> String {
        match &self.destination {
            Destination::Service(s) => format!("service {s}"),
            Destination::Cell(c) => format!("cell {c}"),
        }
    }

    /// `cell-1 -> service orders-db: 30.0% of connects failed; the other 3 cells' median 0.0% (600 connects)`
    pub(super) fn line(&self) -> String {
        let what = match self.signal {
            Signal::ConnectFailures => format!("{} of connects failed", self.figure(self.value)),
            Signal::ConnectP99 => format!("connect p99 {}", self.figure(self.value)),
        };
        let peers = if self.peers == 1 {
            "the other cell's".to_owned()
        } else {
            format!("the other {} cells' median", self.peers)
        };
        format!(
            "{} -> {}: {what}; {peers} {} ({} connects)",
            self.cell,
            self.destination(),
            self.figure(self.peer_median),
            self.connects
        )
    }
}

impl Report {
    /// The report for people; `source` names the Prometheus it was read from.
    pub fn text(&self, source: &str) -> String {
        let mut out = String::new();
        let globals = self.cells.iter().filter(|c| c.global).count();
        let _ = writeln!(
            out,
            "cellwatch report  {source}  the last {}  cells: {} ({globals} global)  services: {}",
            self.range,
            self.cells.len(),
            self.services.len()
        );
        self.text_blast_radius(&mut out);
        self.text_dependencies(&mut out);
        self.text_containment(&mut out);
        self.text_outliers(&mut out);
        self.text_temporary_rules(&mut out);
        for n in &self.notes {
            let _ = writeln!(out, "\nnote: {n}");
        }
        out
    }

    fn text_blast_radius(&self, out: &mut String) {
        out.push_str(
            "\nBLAST RADIUS of each service: the cells that called it, and their share of its \
             connections and bytes\n",
        );
        if self.services.is_empty() {
            out.push_str("  (no service: name them under `services:` in the agents' config)\n");
        }
        for s in &self.services {
            let place = match (&s.cell, s.global) {
                (Some(c), true) => format!("in {c}, a global cell"),
                (Some(c), false) => format!("in {c}"),
                (None, _) => "in no known cell".to_owned(),
            };
            if s.dependents.is_empty() && s.external.is_none() {
                let _ = writeln!(out, "  {} ({place}): no caller", s.service);
                continue;
            }
            let cells = match s.dependents.len() {
                1 => "1 cell".to_owned(),
                n => format!("{n} cells"),
            };
            let calls = s.calls();
            let _ = writeln!(
                out,
                "  {} ({place}): {cells}, {} {}, {}",
                s.service,
                s.connections,
                calls.words(),
                bytes(s.bytes)
            );
            let row = |name: &str, sh: &Share| {
                vec![
                    name.to_owned(),
                    sh.connections.to_string(),
                    pct(sh.connections_share),
                    bytes(sh.bytes),
                    pct(sh.bytes_share),
                ]
            };
            let mut rows: Vec<Vec<String>> =
                s.dependents.iter().map(|d| row(&d.cell, &d.share)).collect();
            if let Some(e) = &s.external {
                rows.push(row("(external)", e));
            }
            out.push_str(&table(
                "    ",
                &["CELL", calls.column(), "SHARE", "BYTES", "SHARE"],
                &[false, true, true, true, true],
                &rows,
            ));
        }
    }

    fn text_dependencies(&self, out: &mut String) {
        out.push_str(
            "\nDEPENDENCIES of each cell: the services and the other cells its clients called\n",
        );
        let rows: Vec<Vec<String>> = self
            .cells
            .iter()
            .map(|c| {
                let services: Vec<String> = c
                    .services
                    .iter()
                    .map(|s| match &s.cell {
                        Some(home) => format!("{} (in {home})", s.service),
                        None => s.service.clone(),
                    })
                    .collect();
                let cells = |global: bool| {
                    c.cells.iter().filter(|d| d.global == global).map(|d| d.cell.clone()).collect()
                };
                let list =
                    |l: Vec<String>| if l.is_empty() { "-".to_owned() } else { l.join(", ") };
                vec![c.cell.clone(), list(services), list(cells(true)), list(cells(false))]
            })
            .collect();
        if rows.is_empty() {
            out.push_str("  (no cell)\n");
            return;
        }
        out.push_str(&table(
            "  ",
            &["CELL", "SERVICES", "GLOBAL CELLS", "OTHER CELLS"],
            &[false; 4],
            &rows,
        ));
    }

    fn text_containment(&self, out: &mut String) {
        out.push_str("\nCONTAINMENT of each cell: where its clients' connections and bytes went\n");
        if self.cells.is_empty() {
            out.push_str("  (no cell)\n");
            return;
        }
        let rows: Vec<Vec<String>> = self
            .cells
            .iter()
            .map(|c| {
                let k = &c.containment;
                let scopes = [&k.inside, &k.global, &k.other_cells, &k.external];
                let mut row = vec![c.cell.clone(), c.connections.to_string()];
                row.extend(scopes.iter().map(|s| pct(s.connections_share)));
                row.push(bytes(c.bytes));
                row.extend(scopes.iter().map(|s| pct(s.bytes_share)));
                row
            })
            .collect();
        let scopes = ["INSIDE", "GLOBAL", "OTHER CELLS", "EXTERNAL"];
        let mut header = vec!["CELL", "CONNECTIONS"];
        header.extend(scopes);
        header.push("BYTES");
        header.extend(scopes);
        let mut numeric = vec![true; header.len()];
        numeric[0] = false;
        out.push_str(&table("  ", &header, &numeric, &rows));
    }

    fn text_outliers(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\nOUTLIERS: cells more than {FACTOR}x the median of the other cells calling the same \
             destination\n  (failures above {}, connect p99 above {}; cells with at least {} \
             connects/s to it)",
            pct(Some(FAILURE_RATIO_FLOOR)),
            fmt_duration(P99_FLOOR_SECONDS),
            MIN_CONNECTS_PER_SECOND
        );
        if self.outliers.is_empty() {
            out.push_str("  (none)\n");
        }
        for o in &self.outliers {
            let _ = writeln!(out, "  {}", o.line());
        }
    }

    fn text_temporary_rules(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\nTEMPORARY ALLOW RULES in force: each one's deadline, and what its flow carried \
             over the last {}",
            self.range
        );
        if self.temporary_rules.is_empty() {
            out.push_str("  (none: no allow rule with an `until:` still ahead)\n");
            return;
        }
        let rows: Vec<Vec<String>> = self
            .temporary_rules
            .iter()
            .map(|r| {
                vec![
                    r.from.clone(),
                    r.to.clone(),
                    r.expires.clone(),
                    fmt_span(r.expires_in_seconds),
                    r.connections.to_string(),
                    bytes(r.bytes),
                    if r.reason.is_empty() { "-".to_owned() } else { printable(&r.reason) },
                ]
            })
            .collect();
        out.push_str(&table(
            "  ",
            &["FROM", "TO", "DEADLINE", "LEFT", "CONNECTIONS", "BYTES", "REASON"],
            &[false, false, false, true, true, true, false],
            &rows,
        ));
    }

    /// The report as pretty JSON, one line per field.
    pub fn json(&self) -> Result<String, serde_json::Error> {
        Ok(format!("{}\n", serde_json::to_string_pretty(self)?))
    }

    /// The dependency graph in graphviz dot: `dot -Tsvg` draws it.
    pub fn dot(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "digraph cellwatch {{");
        let _ = writeln!(
            out,
            "  graph [rankdir=LR, fontname=\"Helvetica\", labelloc=t, label={}];",
            quote(&format!("cellwatch report: dependencies over the last {}", self.range))
        );
        out.push_str("  node [fontname=\"Helvetica\", fontsize=11];\n");
        out.push_str("  edge [fontname=\"Helvetica\", fontsize=9];\n");
        self.dot_nodes(&mut out);
        let edges = self.dot_edges();
        let external = id("cell", EXTERNAL);
        if edges.iter().any(|(a, b, ..)| *a == external || *b == external) {
            let _ = writeln!(
                out,
                "  {} [label=\"external\\n(no cell)\", shape=ellipse, style=dashed];",
                quote(&external)
            );
        }
        write_edges(&edges, &mut out);
        out.push_str("}\n");
        out
    }

    /// A cell's node: a box, filled when global, red when an outlier.
    fn dot_cell_node(&self, name: &str, global: bool, inside: Option<f64>) -> String {
        let mut label = name.to_owned();
        if global {
            label.push_str("\n(global)");
        }
        if let Some(v) = inside {
            let _ = write!(label, "\n{} inside", pct(Some(v)));
        }
        let style = if global { "rounded,filled" } else { "rounded" };
        let outlier = self.outliers.iter().any(|o| o.cell == name);
        let color = if outlier { ", color=red, penwidth=2" } else { "" };
        format!(
            "{} [label={}, shape=box, style=\"{style}\", fillcolor=\"#e8e8e8\"{color}];",
            quote(&id("cell", name)),
            quote(&label)
        )
    }

    /// Each cell, in a box with the services that lie in it; then the services in no cell
    /// the report knows.
    fn dot_nodes(&self, out: &mut String) {
        for c in &self.cells {
            let node =
                self.dot_cell_node(&c.cell, c.global, c.containment.inside.connections_share);
            let inside: Vec<&str> = self
                .services
                .iter()
                .filter(|s| s.cell.as_deref() == Some(c.cell.as_str()))
                .map(|s| s.service.as_str())
                .collect();
            if inside.is_empty() {
                let _ = writeln!(out, "  {node}");
                continue;
            }
            let _ = writeln!(out, "  subgraph {} {{", quote(&id("cluster", &c.cell)));
            let _ = writeln!(
                out,
                "    label={}; style=\"rounded,dashed\"; color=\"#999999\";",
                quote(&c.cell)
            );
            let _ = writeln!(out, "    {node}");
            for s in inside {
                let _ = writeln!(out, "    {}", service_node(s));
            }
            out.push_str("  }\n");
        }
        for s in &self.services {
            if s.cell.as_deref().is_none_or(|c| self.cell(c).is_none()) {
                let _ = writeln!(out, "  {}", service_node(&s.service));
            }
        }
    }

    /// What the outliers of `cell` calling `dest` say on its edge, if any.
    fn dot_mark(&self, cell: &str, dest: &Destination) -> Option<String> {
        let marks: Vec<String> = self
            .outliers
            .iter()
            .filter(|o| o.cell == cell && &o.destination == dest)
            .map(|o| match o.signal {
                Signal::ConnectFailures => format!("outlier: {} failed", o.figure(o.value)),
                Signal::ConnectP99 => format!("outlier: p99 {}", o.figure(o.value)),
            })
            .collect();
        (!marks.is_empty()).then(|| marks.join("\n"))
    }

    /// Every dependency: cells to services and to cells, then clients in no cell to
    /// services.
    fn dot_edges(&self) -> Vec<Edge> {
        let mut edges: Vec<Edge> = Vec::new();
        for c in &self.cells {
            for s in &c.services {
                let m = self.dot_mark(&c.cell, &Destination::Service(s.service.clone()));
                edges.push((
                    id("cell", &c.cell),
                    id("service", &s.service),
                    (s.connections, s.calls()),
                    s.bytes,
                    m,
                ));
            }
            for d in &c.cells {
                let m = self.dot_mark(&c.cell, &Destination::Cell(d.cell.clone()));
                edges.push((
                    id("cell", &c.cell),
                    id("cell", &d.cell),
                    (d.connections, Calls::Connections),
                    d.bytes,
                    m,
                ));
            }
        }
        for s in &self.services {
            if let Some(e) = &s.external {
                edges.push((
                    id("cell", EXTERNAL),
                    id("service", &s.service),
                    (e.connections, s.calls()),
                    e.bytes,
                    None,
                ));
            }
        }
        edges
    }
}

/// One edge of the graph: from, to, connections (and what they are), bytes, and the
/// outlier mark.
type Edge = (String, String, (u64, Calls), u64, Option<String>);

/// A service's node.
fn service_node(name: &str) -> String {
    format!("{} [label={}, shape=cylinder];", quote(&id("service", name)), quote(name))
}

/// The edges, as wide as their share of the busiest one's connections (or bytes, when
/// no edge has a connection in the range).
fn write_edges(edges: &[Edge], out: &mut String) {
    let by_conns = edges.iter().any(|e| e.2.0 > 0);
    let size = |e: &Edge| (if by_conns { e.2.0 } else { e.3 }) as f64;
    let max = edges.iter().map(size).fold(0.0, f64::max);
    for e in edges {
        let share = if max > 0.0 { size(e) / max } else { 0.0 };
        let mut label = format!("{} {}\n{}", e.2.0, e.2.1.short(), bytes(e.3));
        let mut color = String::new();
        if let Some(m) = &e.4 {
            let _ = write!(label, "\n{m}");
            color = ", color=red, fontcolor=red".to_owned();
        }
        let _ = writeln!(
            out,
            "  {} -> {} [label={}, penwidth={:.2}, weight={}{color}];",
            quote(&e.0),
            quote(&e.1),
            quote(&label),
            1.0 + 4.0 * share,
            1 + whole_tenths(share)
        );
    }
}

/// A share (0 to 1) in tenths, for dot's integer edge weights.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "0 <= share <= 1: 0 to 10"
)]
fn whole_tenths(share: f64) -> u32 {
    (share.clamp(0.0, 1.0) * 10.0).round() as u32
}

/// A node's id: its kind and name, so a cell and a service of the same name differ.
fn id(kind: &str, name: &str) -> String {
    format!("{kind}:{name}")
}

/// A dot string: quoted, with `"` and `\` escaped and newlines as dot's `\n`.
pub(super) fn quote(s: &str) -> String {
    let escaped = s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    format!("\"{escaped}\"")
}
