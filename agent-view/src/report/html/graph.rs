//! The page's blast radius: a graph as inline SVG, laid out here in two layers (the
//! client cells that called a service on the left, in the report's order, `external`
//! last; the services on the right), an edge from each client cell to each service it
//! called, as wide as its share of the busiest edge's connections and red when the cell
//! is an outlier to that service; then each service's blast radius as a table. A UDP
//! service's connections are its flows, and its edges and node say so.
#![forbid(unsafe_code)]

use std::fmt::Write as _;

use super::{bytes, esc, section, share_attrs};
use crate::{
    format::pct,
    report::{Calls, Destination, Report, Service, Share},
};
use agent_core::names::EXTERNAL;

/// The SVG's width, a node's size, the distance between the tops of two nodes, and the
/// space above the first.
const WIDTH: u32 = 960;
const NODE_W: u32 = 230;
const NODE_H: u32 = 42;
const STEP: u32 = 58;
const TOP: u32 = 34;

/// A name as a node shows it: at most 28 characters (the whole name is its tooltip).
fn short(name: &str) -> String {
    if name.chars().count() <= 28 {
        return name.to_owned();
    }
    let mut s: String = name.chars().take(27).collect();
    s.push('…');
    s
}

/// The client cells of the graph: each cell that called a service, in the report's
/// order, with whether it is global; `external` last when clients in no cell did.
fn clients(r: &Report) -> Vec<(&str, bool)> {
    let mut out: Vec<(&str, bool)> = r
        .cells
        .iter()
        .filter(|c| r.services.iter().any(|s| s.dependents.iter().any(|d| d.cell == c.cell)))
        .map(|c| (c.cell.as_str(), c.global))
        .collect();
    for s in &r.services {
        for d in &s.dependents {
            if !out.iter().any(|(n, _)| *n == d.cell) {
                out.push((d.cell.as_str(), false));
            }
        }
    }
    if r.services.iter().any(|s| s.external.is_some()) {
        out.push((EXTERNAL, false));
    }
    out
}

/// A count of nodes as SVG units (saturating: a graph that big is not drawn well anyway).
fn n32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The top of the `i`th of `n` nodes in a column, the columns centred on `rows`.
fn top(i: usize, n: usize, rows: usize) -> u32 {
    let offset = n32(rows.saturating_sub(n)).saturating_mul(STEP) / 2;
    TOP.saturating_add(offset).saturating_add(n32(i).saturating_mul(STEP))
}

/// One edge: the client's index, the service's index, and its share of the service.
struct Edge<'a> {
    client: usize,
    service: usize,
    cell: &'a str,
    share: &'a Share,
}

fn edges<'a>(r: &'a Report, clients: &[(&str, bool)]) -> Vec<Edge<'a>> {
    let mut out = Vec::new();
    let index = |name: &str| clients.iter().position(|(n, _)| *n == name);
    for (j, s) in r.services.iter().enumerate() {
        let callers = s.dependents.iter().map(|d| (d.cell.as_str(), &d.share));
        for (cell, share) in callers.chain(s.external.as_ref().map(|e| (EXTERNAL, e))) {
            if let Some(i) = index(cell) {
                out.push(Edge { client: i, service: j, cell, share });
            }
        }
    }
    out
}

pub(super) fn write(r: &Report, out: &mut String) {
    section(
        out,
        "blast-radius",
        "Blast radius of each service",
        "The cells whose clients reached each service over the range, and their share of its \
         connections (UDP flows, for a UDP service) and bytes: if it fails, they may fail with \
         it. An edge is as wide as its share of the busiest edge's connections; red when the \
         cell is an outlier to it.",
    );
    if r.services.is_empty() {
        out.push_str(
            "<p class=\"empty\">No service: name them under <code>services:</code> in the \
             agents' config.</p>\n</section>\n",
        );
        return;
    }
    let clients = clients(r);
    let rows = clients.len().max(r.services.len());
    let height = TOP.saturating_add(n32(rows).saturating_mul(STEP)).saturating_add(8);
    let _ = writeln!(
        out,
        "<svg class=\"graph\" viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" \
         height=\"{height}\" role=\"img\" aria-label=\"blast radius graph\">"
    );
    let _ = writeln!(
        out,
        "<text class=\"sub\" x=\"10\" y=\"18\">client cells</text>\
         <text class=\"sub\" x=\"{}\" y=\"18\">services</text>",
        WIDTH - NODE_W - 10
    );
    let all = edges(r, &clients);
    let max = all.iter().map(|e| e.share.connections).max().unwrap_or(0);
    for e in &all {
        write_edge(r, e, (clients.len(), r.services.len(), rows), max, out);
    }
    for (i, (name, global)) in clients.iter().enumerate() {
        write_client(r, name, *global, top(i, clients.len(), rows), out);
    }
    for (j, s) in r.services.iter().enumerate() {
        write_service(s, top(j, r.services.len(), rows), out);
    }
    out.push_str("</svg>\n");
    table(r, out);
    out.push_str("</section>\n");
}

/// An edge from its client to its service, with its connections and share on it.
fn write_edge(
    r: &Report,
    e: &Edge<'_>,
    (n_clients, n_services, rows): (usize, usize, usize),
    max: u64,
    out: &mut String,
) {
    let service = &r.services[e.service];
    let (x1, x2) = (10 + NODE_W, WIDTH - NODE_W - 10);
    let y1 = top(e.client, n_clients, rows) + NODE_H / 2;
    let y2 = top(e.service, n_services, rows) + NODE_H / 2;
    let xm = (x1 + x2) / 2;
    let width = if max > 0 { 1.5 + 8.0 * e.share.connections as f64 / max as f64 } else { 1.5 };
    let outlier = r.outliers.iter().any(|o| {
        o.cell == e.cell && o.destination == Destination::Service(service.service.clone())
    });
    let class = if outlier { "edge outlier" } else { "edge" };
    let calls = service.calls();
    let label =
        format!("{} {} · {}", e.share.connections, calls.short(), pct(e.share.connections_share));
    let _ = writeln!(
        out,
        "<g class=\"{class}\" data-cell=\"{cell}\" data-service=\"{svc}\"{attrs}>\
         <title>{cell} -&gt; {svc}: {} {} ({}), {} ({})</title>\
         <path d=\"M{x1} {y1} C{xm} {y1} {xm} {y2} {x2} {y2}\" stroke-width=\"{width:.1}\"/>\
         <text class=\"label\" x=\"{xm}\" y=\"{}\" text-anchor=\"middle\">{}</text></g>",
        e.share.connections,
        calls.words(),
        pct(e.share.connections_share),
        esc(&bytes(e.share.bytes)),
        pct(e.share.bytes_share),
        (y1 + y2) / 2 + 4,
        esc(&label),
        cell = esc(e.cell),
        svc = esc(&service.service),
        attrs = share_attrs(e.share),
    );
}

fn write_client(r: &Report, name: &str, global: bool, y: u32, out: &mut String) {
    let mut class = vec!["node", "cell"];
    if global {
        class.push("global");
    }
    if r.outliers.iter().any(|o| o.cell == name && matches!(o.destination, Destination::Service(_)))
    {
        class.push("outlier");
    }
    let sub = match (name == EXTERNAL, global) {
        (true, _) => "clients in no cell",
        (false, true) => "global cell",
        (false, false) => "cell",
    };
    let _ = writeln!(
        out,
        "<g class=\"{}\" data-kind=\"cell\" data-name=\"{n}\"><title>{n}</title>\
         <rect x=\"10\" y=\"{y}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"6\"/>\
         <text class=\"name\" x=\"22\" y=\"{}\">{}</text>\
         <text class=\"sub\" x=\"22\" y=\"{}\">{sub}</text></g>",
        class.join(" "),
        y + 18,
        esc(&short(name)),
        y + 34,
        n = esc(name),
    );
}

fn write_service(s: &Service, y: u32, out: &mut String) {
    let x = WIDTH - NODE_W - 10;
    let home = match (&s.cell, s.global) {
        (Some(c), true) => format!("in {c} (global)"),
        (Some(c), false) => format!("in {c}"),
        (None, _) => "in no known cell".to_owned(),
    };
    let sub = if s.dependents.is_empty() && s.external.is_none() {
        format!("{home} · no caller")
    } else {
        format!("{home} · {} {} · {}", s.connections, s.calls().short(), bytes(s.bytes))
    };
    let _ = writeln!(
        out,
        "<g class=\"node service\" data-kind=\"service\" data-name=\"{n}\" data-cell=\"{}\" \
         data-global=\"{}\" data-connections=\"{}\" data-flows=\"{}\" data-bytes=\"{}\">\
         <title>{n}</title>\
         <rect x=\"{x}\" y=\"{y}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"6\"/>\
         <text class=\"name\" x=\"{}\" y=\"{}\">{}</text>\
         <text class=\"sub\" x=\"{}\" y=\"{}\">{}</text></g>",
        esc(s.cell.as_deref().unwrap_or("")),
        s.global,
        s.connections,
        s.flows,
        s.bytes,
        x + 12,
        y + 18,
        esc(&short(&s.service)),
        x + 12,
        y + 34,
        esc(&sub),
        n = esc(&s.service),
    );
}

/// Each service's callers with their shares, as the text report's table; its column of
/// connections says whether they include UDP flows.
fn table(r: &Report, out: &mut String) {
    let sum = |of: fn(&Service) -> u64| r.services.iter().map(of).sum();
    let calls = match Calls::of(sum(|s| s.connections), sum(|s| s.flows)) {
        Calls::Connections => "Connections",
        Calls::Flows => "UDP flows",
        Calls::Both => "Connections / UDP flows",
    };
    let _ = write!(
        out,
        "<table class=\"blast\">\n<thead><tr><th>Service</th><th>Cell</th>\
         <th class=\"num\">{calls}</th><th class=\"num\">Share</th>\
         <th class=\"num\">Bytes</th><th class=\"num\">Share</th></tr></thead>\n<tbody>\n",
    );
    for s in &r.services {
        let callers = s.dependents.iter().map(|d| (d.cell.as_str(), &d.share));
        let mut any = false;
        for (cell, sh) in callers.chain(s.external.as_ref().map(|e| (EXTERNAL, e))) {
            any = true;
            let _ = writeln!(
                out,
                "<tr data-service=\"{svc}\" data-cell=\"{c}\"{}><th>{svc}</th><td>{c}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td></tr>",
                share_attrs(sh),
                sh.connections,
                pct(sh.connections_share),
                esc(&bytes(sh.bytes)),
                pct(sh.bytes_share),
                svc = esc(&s.service),
                c = esc(cell),
            );
        }
        if !any {
            let _ = writeln!(
                out,
                "<tr data-service=\"{0}\" class=\"none\"><th>{0}</th><td colspan=\"5\">no \
                 caller</td></tr>",
                esc(&s.service)
            );
        }
    }
    out.push_str("</tbody>\n</table>\n");
}
