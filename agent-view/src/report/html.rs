//! `cellwatch report --format html`: the report as one self-contained page for people to
//! look at, with no script, no asset and no address of anything else (CSS inline, system
//! fonts; a Content-Security-Policy that lets the browser load nothing). [`matrix`] draws
//! the cell matrix as a heatmap with the leaks marked, [`graph`] the blast radius as
//! inline SVG; here are the page, the containment, the outliers, the temporary rules and
//! the notes. Every figure is on the page twice: as text, and in `data-*` attributes that
//! hold the model's numbers as the JSON writes them (whole counts, shares as fractions,
//! `null` for none), so a test can hold the page against `--format json`. Every name and
//! reason is HTML-escaped.
#![forbid(unsafe_code)]

mod graph;
mod matrix;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;

use super::{
    Destination, FACTOR, FAILURE_RATIO_FLOOR, MIN_CONNECTS_PER_SECOND, Outlier, P99_FLOOR_SECONDS,
    Report, Share, Signal,
};
use crate::format::{fmt_bytes, fmt_duration, fmt_span, pct, printable};

/// The page's style: system fonts only, nothing fetched.
const STYLE: &str = r#"
:root { color-scheme: light; --leak: #c8102e; --ink: #1f2328; --muted: #59636e; --line: #d0d7de; }
* { box-sizing: border-box; }
body { margin: 0; background: #f6f8fa; color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; }
main { max-width: 1360px; margin: 0 auto; padding: 20px 28px 40px; }
header h1 { margin: 0 0 4px; font-size: 24px; }
.meta { margin: 0; color: var(--muted); }
.meta code { color: var(--ink); }
nav { margin: 10px 0 0; display: flex; gap: 14px; flex-wrap: wrap; }
nav a { color: #0550ae; text-decoration: none; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px;
  padding: 14px 18px 18px; margin: 18px 0 0; overflow-x: auto; }
h2 { margin: 0 0 4px; font-size: 18px; }
p.what { margin: 0 0 12px; color: var(--muted); }
p.empty { margin: 8px 0 0; color: var(--muted); font-style: italic; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; text-align: left; }
thead th { border-bottom: 1px solid var(--line); font-weight: 600; color: var(--muted);
  font-size: 12px; text-transform: uppercase; letter-spacing: .03em; }
tbody tr + tr th, tbody tr + tr td { border-top: 1px solid #eaeef2; }
td.num, th.num { text-align: right; }
td.num { white-space: nowrap; }
small.tag { display: block; color: var(--muted); font-weight: 400; font-size: 11px; }
.matrix { margin-top: 4px; }
.matrix th.corner { font-size: 11px; color: var(--muted); text-transform: none; font-weight: 400; }
.matrix thead th { text-align: center; text-transform: none; letter-spacing: 0; font-size: 13px;
  color: var(--ink); }
.matrix tbody th { white-space: nowrap; }
.matrix td.pair { width: 132px; height: 64px; text-align: center; vertical-align: middle;
  border: 2px solid #fff; padding: 4px; }
.matrix td.none { background: #f3f4f6; color: #9aa3ad; }
.matrix td.inside { box-shadow: inset 0 0 0 2px rgba(0, 0, 0, .18); }
.matrix td.leak { outline: 3px solid var(--leak); outline-offset: -3px; }
.matrix .n { display: block; font-size: 16px; font-weight: 600; }
.matrix .b { display: block; font-size: 11px; opacity: .85; }
.mark { display: inline-block; margin-top: 2px; padding: 0 5px; border-radius: 3px;
  background: var(--leak); color: #fff; font-size: 11px; font-weight: 700; white-space: nowrap; }
.legend { display: flex; flex-wrap: wrap; gap: 16px; align-items: center; margin-top: 12px;
  color: var(--muted); font-size: 12px; }
.legend .scale { display: flex; align-items: center; gap: 2px; }
.legend .sw { display: inline-block; width: 30px; height: 18px; border: 1px solid #fff; }
.legend .sw.leak { outline: 3px solid var(--leak); outline-offset: -3px; background: #f3f4f6; }
.legend .sw.inside { box-shadow: inset 0 0 0 2px rgba(0, 0, 0, .18); background: #f3f4f6; }
svg.graph { display: block; width: 100%; height: auto; max-width: 1000px; }
svg.graph text { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; }
svg.graph .label { font-size: 12px; fill: var(--ink); paint-order: stroke; stroke: #fff;
  stroke-width: 4px; stroke-linejoin: round; }
svg.graph .name { font-size: 13px; font-weight: 600; fill: var(--ink); }
svg.graph .sub { font-size: 11px; fill: var(--muted); }
svg.graph .edge path { fill: none; stroke: #54aeff; stroke-opacity: .8; }
svg.graph .edge.outlier path { stroke: var(--leak); }
svg.graph .node rect { fill: #fff; stroke: #8c959f; stroke-width: 1.5; }
svg.graph .node.global rect { fill: #eaeef2; }
svg.graph .node.service rect { fill: #ddf4ff; stroke: #0969da; }
svg.graph .node.outlier rect { stroke: var(--leak); stroke-width: 3; }
.bar { display: flex; width: 120px; height: 12px; border-radius: 3px; overflow: hidden;
  background: #eaeef2; }
.bar span { display: block; height: 100%; }
.s-inside { background: #2da44e; }
.s-global { background: #54aeff; }
.s-other_cells { background: #fb8f44; }
.s-external { background: #8250df; }
.keys { display: flex; gap: 12px; margin: 0 0 8px; font-size: 12px; color: var(--muted); }
.keys i { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
  margin-right: 4px; vertical-align: -1px; }
tr.outlier td, tr.outlier th { color: var(--leak); }
ul.notes { margin: 6px 0 0; padding-left: 20px; }
"#;

/// The four places a cell's connections go, as the JSON names them, and as the page says.
const SCOPES: [(&str, &str); 4] = [
    ("inside", "Inside"),
    ("global", "Global"),
    ("other_cells", "Other cells"),
    ("external", "External"),
];

/// Text made safe anywhere in HTML: in an element, or in a quoted attribute.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn bytes(v: u64) -> String {
    fmt_bytes(Some(v as f64))
}

/// A figure in an attribute, as the JSON writes it: the shortest decimal that reads back
/// as the same `f64`, and `null` for none (or for what JSON cannot hold).
fn fraction(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite()).map_or_else(|| "null".to_owned(), |v| v.to_string())
}

/// A share's four numbers as `data-*` attributes, each with a space before it.
fn share_attrs(s: &Share) -> String {
    format!(
        " data-connections=\"{}\" data-connections-share=\"{}\" data-bytes=\"{}\" \
         data-bytes-share=\"{}\"",
        s.connections,
        fraction(s.connections_share),
        s.bytes,
        fraction(s.bytes_share)
    )
}

/// A section's start: its id, its title and what it shows.
fn section(out: &mut String, id: &str, title: &str, what: &str) {
    let _ = writeln!(
        out,
        "<section id=\"{id}\">\n<h2>{}</h2>\n<p class=\"what\">{}</p>",
        esc(title),
        esc(what)
    );
}

impl Report {
    /// The report as one self-contained HTML page; `source` names the Prometheus it was
    /// read from (shown as text, never linked).
    pub fn html(&self, source: &str) -> String {
        let mut out = String::with_capacity(32 * 1024);
        self.html_head(source, &mut out);
        matrix::write(self, &mut out);
        graph::write(self, &mut out);
        self.html_containment(&mut out);
        self.html_outliers(&mut out);
        self.html_temporary_rules(&mut out);
        self.html_notes(&mut out);
        out.push_str("</main>\n</body>\n</html>\n");
        out
    }

    fn html_head(&self, source: &str, out: &mut String) {
        let globals = self.cells.iter().filter(|c| c.global).count();
        let _ = write!(
            out,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
             style-src 'unsafe-inline'\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>cellwatch report: the last {range}</title>\n<style>{STYLE}</style>\n\
             </head>\n<body>\n<main id=\"report\" data-source=\"{src}\" data-range=\"{range}\" \
             data-range-seconds=\"{secs}\" data-cells=\"{cells}\" data-global-cells=\"{globals}\" \
             data-services=\"{services}\">\n<header>\n<h1>cellwatch report</h1>\n\
             <p class=\"meta\"><code>{src}</code> · the last {range} · cells: {cells} \
             ({globals} global) · services: {services}</p>\n<nav>",
            range = esc(&self.range),
            src = esc(source),
            secs = self.range_seconds,
            cells = self.cells.len(),
            services = self.services.len(),
        );
        for (id, title) in [
            ("matrix", "Cell matrix"),
            ("blast-radius", "Blast radius"),
            ("containment", "Containment"),
            ("outliers", "Outliers"),
            ("temporary-rules", "Temporary allow rules"),
        ] {
            let _ = write!(out, "<a href=\"#{id}\">{title}</a>");
        }
        out.push_str("</nav>\n</header>\n");
    }

    fn html_containment(&self, out: &mut String) {
        section(
            out,
            "containment",
            "Containment of each cell",
            "Where its clients' connections and bytes went: inside it, to a global cell, to \
             another cell, or to a peer in no cell.",
        );
        if self.cells.is_empty() {
            out.push_str("<p class=\"empty\">No cell.</p>\n</section>\n");
            return;
        }
        out.push_str("<p class=\"keys\">");
        for (key, name) in SCOPES {
            let _ = write!(out, "<span><i class=\"s-{key}\"></i>{name}</span>");
        }
        out.push_str("</p>\n<table class=\"containment\">\n<thead><tr><th>Cell</th>");
        out.push_str("<th class=\"num\">Connections</th><th></th>");
        for (_, name) in SCOPES {
            let _ = write!(out, "<th class=\"num\">{name}</th>");
        }
        out.push_str("<th class=\"num\">Bytes</th><th></th>");
        for (_, name) in SCOPES {
            let _ = write!(out, "<th class=\"num\">{name}</th>");
        }
        out.push_str("</tr></thead>\n<tbody>\n");
        for c in &self.cells {
            let k = &c.containment;
            let scopes = [&k.inside, &k.global, &k.other_cells, &k.external];
            let _ = write!(
                out,
                "<tr data-cell=\"{name}\" data-global=\"{}\" data-connections=\"{}\" \
                 data-bytes=\"{}\"><th>{name}{}</th><td class=\"num\">{}</td><td>{}</td>",
                c.global,
                c.connections,
                c.bytes,
                if c.global { "<small class=\"tag\">global</small>" } else { "" },
                c.connections,
                bar(&scopes.map(|s| s.connections_share)),
                name = esc(&c.cell),
            );
            for ((key, _), s) in SCOPES.iter().zip(scopes) {
                let _ = write!(
                    out,
                    "<td class=\"num\" data-scope=\"{key}\"{}>{}</td>",
                    share_attrs(s),
                    pct(s.connections_share)
                );
            }
            let _ = write!(
                out,
                "<td class=\"num\">{}</td><td>{}</td>",
                esc(&bytes(c.bytes)),
                bar(&scopes.map(|s| s.bytes_share))
            );
            for s in scopes {
                let _ = write!(out, "<td class=\"num\">{}</td>", pct(s.bytes_share));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</tbody>\n</table>\n</section>\n");
    }

    fn html_outliers(&self, out: &mut String) {
        section(
            out,
            "outliers",
            "Outliers",
            &format!(
                "Cells more than {FACTOR}x the median of the other cells calling the same \
                 destination (failures above {}, connect p99 above {}; cells with at least {} \
                 connects/s to it).",
                pct(Some(FAILURE_RATIO_FLOOR)),
                fmt_duration(P99_FLOOR_SECONDS),
                MIN_CONNECTS_PER_SECOND
            ),
        );
        if self.outliers.is_empty() {
            out.push_str("<p class=\"empty\">None.</p>\n</section>\n");
            return;
        }
        out.push_str(
            "<table class=\"outliers\">\n<thead><tr><th>Cell</th><th>Destination</th>\
             <th>Signal</th><th class=\"num\">Value</th><th class=\"num\">Others' median</th>\
             <th class=\"num\">Others</th><th class=\"num\">Connects</th></tr></thead>\n<tbody>\n",
        );
        for o in &self.outliers {
            out.push_str(&outlier_row(o));
        }
        out.push_str("</tbody>\n</table>\n</section>\n");
    }

    fn html_temporary_rules(&self, out: &mut String) {
        section(
            out,
            "temporary-rules",
            "Temporary allow rules in force",
            &format!(
                "Each one's deadline, and what its flow (client cell to server cell) carried \
                 over the last {}.",
                self.range
            ),
        );
        if self.temporary_rules.is_empty() {
            out.push_str(
                "<p class=\"empty\">None: no allow rule with an <code>until:</code> still \
                 ahead.</p>\n</section>\n",
            );
            return;
        }
        out.push_str(
            "<table class=\"rules\">\n<thead><tr><th>From</th><th>To</th><th>Deadline</th>\
             <th class=\"num\">Left</th><th class=\"num\">Connections</th>\
             <th class=\"num\">Bytes</th><th>Reason</th></tr></thead>\n<tbody>\n",
        );
        for r in &self.temporary_rules {
            let _ = writeln!(
                out,
                "<tr data-from=\"{from}\" data-to=\"{to}\" data-reason=\"{reason}\" \
                 data-expires=\"{expires}\" data-expires-in-seconds=\"{left}\" \
                 data-connections=\"{conns}\" data-bytes=\"{b}\"><td>{from}</td><td>{to}</td>\
                 <td>{expires}</td><td class=\"num\">{}</td><td class=\"num\">{conns}</td>\
                 <td class=\"num\">{}</td><td>{}</td></tr>",
                fmt_span(r.expires_in_seconds),
                esc(&bytes(r.bytes)),
                if r.reason.is_empty() { "-".to_owned() } else { esc(&printable(&r.reason)) },
                from = esc(&r.from),
                to = esc(&r.to),
                reason = esc(&r.reason),
                expires = esc(&r.expires),
                left = r.expires_in_seconds,
                conns = r.connections,
                b = r.bytes,
            );
        }
        out.push_str("</tbody>\n</table>\n</section>\n");
    }

    fn html_notes(&self, out: &mut String) {
        if self.notes.is_empty() {
            return;
        }
        section(out, "notes", "Notes", "What the report could not tell.");
        out.push_str("<ul class=\"notes\">\n");
        for n in &self.notes {
            let _ = writeln!(out, "<li>{}</li>", esc(n));
        }
        out.push_str("</ul>\n</section>\n");
    }
}

/// The four shares as one stacked bar, in the order of [`SCOPES`].
fn bar(shares: &[Option<f64>; 4]) -> String {
    let mut out = String::from("<div class=\"bar\">");
    for ((key, name), share) in SCOPES.iter().zip(shares) {
        if let Some(v) = share.filter(|v| *v > 0.0) {
            let _ = write!(
                out,
                "<span class=\"s-{key}\" style=\"width:{:.2}%\" title=\"{name} {}\"></span>",
                v * 100.0,
                pct(Some(v))
            );
        }
    }
    out.push_str("</div>");
    out
}

/// One outlier's row: its figures as text and, exactly, in attributes.
fn outlier_row(o: &Outlier) -> String {
    let (kind, dest) = match &o.destination {
        Destination::Service(s) => ("service", s),
        Destination::Cell(c) => ("cell", c),
    };
    let signal = match o.signal {
        Signal::ConnectFailures => ("connect_failures", "failed connects"),
        Signal::ConnectP99 => ("connect_p99", "connect p99"),
    };
    format!(
        "<tr class=\"outlier\" data-cell=\"{cell}\" data-kind=\"{kind}\" \
         data-destination=\"{dest}\" data-signal=\"{}\" data-value=\"{}\" \
         data-peer-median=\"{}\" data-peers=\"{}\" data-connects=\"{}\"><th>{cell}</th>\
         <td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
         <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>\n",
        signal.0,
        fraction(Some(o.value)),
        fraction(Some(o.peer_median)),
        o.peers,
        o.connects,
        esc(&o.destination()),
        signal.1,
        esc(&o.figure(o.value)),
        esc(&o.figure(o.peer_median)),
        o.peers,
        o.connects,
        cell = esc(&o.cell),
        dest = esc(dest),
    )
}
