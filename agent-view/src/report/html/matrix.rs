//! The page's cell matrix: client cells (rows) by server cells (columns), each pair's
//! connections opened as a heatmap colour (on a log scale, the busiest pair darkest), its
//! bytes and violations as text, the pairs with violations (the leaks) outlined in red and
//! marked, and a legend. A cell's own column is its containment's `inside`; the other
//! pairs are its dependencies (`cells` in the JSON), `external` a column of its own.
#![forbid(unsafe_code)]

use std::fmt::Write as _;

use super::{bytes, esc, section};
use crate::report::{Cell, Report};

/// One pair's figures, as the JSON has them (0 for a pair the report does not list).
#[derive(Clone, Copy, Default)]
struct Pair {
    opened: u64,
    bytes: u64,
    violations: u64,
}

/// The matrix's columns: every cell of the report, then the other destinations its cells
/// called (`external`), each with whether it is global.
fn columns(r: &Report) -> Vec<(&str, bool)> {
    let mut cols: Vec<(&str, bool)> = r.cells.iter().map(|c| (c.cell.as_str(), c.global)).collect();
    for d in r.cells.iter().flat_map(|c| &c.cells) {
        if !cols.iter().any(|(n, _)| *n == d.cell) {
            cols.push((d.cell.as_str(), d.global));
        }
    }
    cols
}

/// What `src` sent to `dst`: its containment's inside for itself, else its dependency.
fn pair(src: &Cell, dst: &str) -> Pair {
    if src.cell == dst {
        let inside = &src.containment.inside;
        return Pair { opened: inside.connections, bytes: inside.bytes, violations: 0 };
    }
    src.cells.iter().find(|d| d.cell == dst).map_or_else(Pair::default, |d| Pair {
        opened: d.connections,
        bytes: d.bytes,
        violations: d.violations,
    })
}

/// The heatmap's lightness for `v` of `max` connections: 97% (none) to 40% (the
/// busiest), on a log scale so that small pairs still show.
fn lightness(v: u64, max: u64) -> f64 {
    if max == 0 || v == 0 {
        return 97.0;
    }
    let t = (v as f64).ln_1p() / (max as f64).ln_1p();
    92.0 - 52.0 * t.clamp(0.0, 1.0)
}

/// A heatmap colour as CSS, and whether its text must be light.
fn shade(v: u64, max: u64) -> (String, bool) {
    let l = lightness(v, max);
    (format!("hsl(212, 70%, {l:.1}%)"), l < 62.0)
}

pub(super) fn write(r: &Report, out: &mut String) {
    section(
        out,
        "matrix",
        "Cell matrix",
        "Connections opened from each client cell (rows) to each server cell (columns) over \
         the range, darker for more; a pair outlined in red with a leak mark had boundary \
         violations (connects against policy, opened or refused).",
    );
    if r.cells.is_empty() {
        out.push_str("<p class=\"empty\">No cell.</p>\n</section>\n");
        return;
    }
    let cols = columns(r);
    let max = r
        .cells
        .iter()
        .flat_map(|c| cols.iter().map(move |(d, _)| pair(c, d).opened))
        .max()
        .unwrap_or(0);
    out.push_str(
        "<table class=\"matrix\">\n<thead><tr><th class=\"corner\">client &#8595; \
         server &#8594;</th>",
    );
    for (name, global) in &cols {
        let tag = if *global { "<small class=\"tag\">global</small>" } else { "" };
        let _ = write!(out, "<th scope=\"col\" data-dst=\"{0}\">{0}{tag}</th>", esc(name));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for c in &r.cells {
        let tag = if c.global { "<small class=\"tag\">global</small>" } else { "" };
        let _ = write!(out, "<tr><th scope=\"row\" data-src=\"{0}\">{0}{tag}</th>", esc(&c.cell));
        for (dst, _) in &cols {
            out.push_str(&cell(&c.cell, dst, pair(c, dst), max));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
    legend(max, out);
    out.push_str("</section>\n");
}

/// One pair's cell of the table: its figures as text and, exactly, in attributes.
fn cell(src: &str, dst: &str, p: Pair, max: u64) -> String {
    let mut class = vec!["pair"];
    if src == dst {
        class.push("inside");
    }
    if p.violations > 0 {
        class.push("leak");
    }
    let any = p.opened > 0 || p.bytes > 0 || p.violations > 0;
    let mut style = String::new();
    if any {
        let (bg, light) = shade(p.opened, max);
        style =
            format!(" style=\"background:{bg};color:{}\"", if light { "#fff" } else { "#1f2328" });
    } else {
        class.push("none");
    }
    let mut title = format!("{src} -> {dst}: {} connections, {}", p.opened, bytes(p.bytes));
    let mut text = if any {
        format!("<span class=\"n\">{}</span><span class=\"b\">{}</span>", p.opened, bytes(p.bytes))
    } else {
        "&#183;".to_owned()
    };
    if p.violations > 0 {
        let _ = write!(title, ", {} violations: a leak", p.violations);
        let _ = write!(text, "<span class=\"mark\">leak &#183; {} viol.</span>", p.violations);
    }
    format!(
        "<td class=\"{}\"{style} data-src=\"{}\" data-dst=\"{}\" data-opened=\"{}\" \
         data-bytes=\"{}\" data-violations=\"{}\" title=\"{}\">{text}</td>",
        class.join(" "),
        esc(src),
        esc(dst),
        p.opened,
        p.bytes,
        p.violations,
        esc(&title)
    )
}

/// The colour scale from none to the busiest pair, and what the marks mean.
fn legend(max: u64, out: &mut String) {
    out.push_str("<div class=\"legend\"><span class=\"scale\">connections: ");
    // Five steps of the log scale, back to connection counts.
    let steps: Vec<u64> = if max == 0 {
        vec![0]
    } else {
        (0..5).map(|i| steps_at(f64::from(i) / 4.0, max)).collect()
    };
    for v in &steps {
        let (bg, _) = shade(*v, max);
        let _ = write!(out, "<span class=\"sw\" style=\"background:{bg}\" title=\"{v}\"></span>");
    }
    let _ = write!(out, " 0 to {max}</span>");
    out.push_str(
        "<span><span class=\"sw leak\"></span> leak: boundary violations counted \
         <span class=\"mark\">leak</span></span>",
    );
    out.push_str(
        "<span><span class=\"sw inside\"></span> inside the cell (its containment)</span>",
    );
    out.push_str("<span><span class=\"sw\" style=\"background:#f3f4f6\"></span> none</span>");
    out.push_str("</div>\n");
}

/// The count at fraction `t` of the log scale up to `max`.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "0 <= t <= 1: from 0 to max, rounded"
)]
fn steps_at(t: f64, max: u64) -> u64 {
    ((max as f64).ln_1p() * t).exp_m1().round().max(0.0) as u64
}
