//! The HTML page of a report built by hand: self-contained, every name escaped, and its
//! `data-*` figures (heatmap, blast radius, containment, outliers, rules) the model's.
#![expect(
    clippy::too_many_lines,
    reason = "the sample report is one table of figures: it reads best whole, however long"
)]
use std::collections::BTreeMap;

use crate::report::{
    Cell, CellDependency, Containment, Dependent, Destination, Outlier, Report, Service,
    ServiceDependency, Share, Signal, TemporaryRule,
};

/// A name with every character HTML must escape.
const NASTY: &str = "c<&\"'>x";

fn share(connections: u64, of: u64, bytes: u64, of_bytes: u64) -> Share {
    let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
    Share {
        connections,
        connections_share: ratio(connections, of),
        bytes,
        bytes_share: ratio(bytes, of_bytes),
    }
}

fn dep(cell: &str, global: bool, connections: u64, bytes: u64, violations: u64) -> CellDependency {
    CellDependency { cell: cell.to_owned(), global, connections, bytes, violations }
}

/// cell-1 keeps 60 of 100 connections inside, sends 30 to global and 10 to cell-2, and
/// leaks 4 violations to [`NASTY`] (a refused connect: no connection); [`NASTY`] leaks
/// 7 to cell-1 and calls external. cell-1 and cell-2 call `orders<db>` (cell-1 the
/// outlier), clients in no cell too; `ledger` has no caller.
fn sample() -> Report {
    let cell1 = Cell {
        cell: "cell-1".to_owned(),
        global: false,
        connections: 100,
        bytes: 4000,
        containment: Containment {
            inside: share(60, 100, 2400, 4000),
            global: share(30, 100, 1200, 4000),
            other_cells: share(10, 100, 400, 4000),
            external: share(0, 100, 0, 4000),
        },
        services: vec![ServiceDependency {
            service: "orders<db>".to_owned(),
            cell: Some("global".to_owned()),
            connections: 20,
            flows: 0,
            bytes: 800,
        }],
        cells: vec![
            dep("cell-2", false, 10, 400, 0),
            dep(NASTY, false, 0, 0, 4),
            dep("global", true, 30, 1200, 0),
        ],
    };
    let nasty = Cell {
        cell: NASTY.to_owned(),
        global: false,
        connections: 12,
        bytes: 0,
        containment: Containment {
            other_cells: share(7, 12, 0, 0),
            external: share(5, 12, 0, 0),
            ..Containment::default()
        },
        services: vec![],
        cells: vec![dep("cell-1", false, 7, 0, 7), dep("external", false, 5, 0, 0)],
    };
    let empty = |name: &str, global: bool| Cell {
        cell: name.to_owned(),
        global,
        connections: 0,
        bytes: 0,
        containment: Containment::default(),
        services: vec![],
        cells: vec![],
    };
    let mut cell2 = empty("cell-2", false);
    cell2.connections = 10;
    cell2.containment.global = share(10, 10, 0, 0);
    cell2.cells = vec![dep("global", true, 10, 0, 0)];
    Report {
        range: "1h".to_owned(),
        range_seconds: 3600,
        cells: vec![cell1, cell2, nasty, empty("global", true)],
        services: vec![
            Service {
                service: "ledger".to_owned(),
                cell: Some("global".to_owned()),
                global: true,
                connections: 0,
                flows: 0,
                bytes: 0,
                dependents: vec![],
                external: None,
            },
            Service {
                service: "orders<db>".to_owned(),
                cell: Some("global".to_owned()),
                global: true,
                connections: 33,
                flows: 0,
                bytes: 800,
                dependents: vec![
                    Dependent { cell: "cell-1".to_owned(), share: share(20, 33, 800, 800) },
                    Dependent { cell: "cell-2".to_owned(), share: share(10, 33, 0, 800) },
                ],
                external: Some(share(3, 33, 0, 800)),
            },
        ],
        outliers: vec![Outlier {
            cell: "cell-1".to_owned(),
            destination: Destination::Service("orders<db>".to_owned()),
            signal: Signal::ConnectFailures,
            value: 0.3,
            peer_median: 0.01,
            peers: 1,
            connects: 29,
        }],
        temporary_rules: vec![TemporaryRule {
            from: "cell-1".to_owned(),
            to: "cell-2".to_owned(),
            reason: "<script>alert('move')</script> & \"more\"".to_owned(),
            expires: "2100-01-01T00:00:00Z".to_owned(),
            expires_in_seconds: 1_000_000,
            connections: 10,
            bytes: 400,
        }],
        notes: vec!["a note <b>".to_owned()],
    }
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The attributes (unescaped) of every start tag of `page` that has `attr`.
fn tags_with(page: &str, attr: &str) -> Vec<BTreeMap<String, String>> {
    page.split('<')
        .filter_map(|t| t.split_once('>').map(|(tag, _)| tag))
        .filter(|tag| tag.contains(&format!(" {attr}=\"")))
        .map(|tag| {
            let mut attrs = BTreeMap::new();
            let mut rest = tag;
            while let Some(eq) = rest.find("=\"") {
                let name = rest[..eq].rsplit(' ').next().unwrap_or("").to_owned();
                let after = &rest[eq + 2..];
                let end = after.find('"').expect("a closing quote");
                attrs.insert(name, unescape(&after[..end]));
                rest = &after[end + 1..];
            }
            attrs
        })
        .collect()
}

fn num(a: &BTreeMap<String, String>, k: &str) -> u64 {
    a[k].parse().unwrap_or_else(|e| panic!("{k}={:?}: {e}", a[k]))
}

fn frac(a: &BTreeMap<String, String>, k: &str) -> Option<f64> {
    match a[k].as_str() {
        "null" => None,
        v => Some(v.parse().unwrap_or_else(|e| panic!("{k}={v:?}: {e}"))),
    }
}

#[test]
fn the_page_is_self_contained() {
    let source = "http://prometheus.example:9090/prom";
    let page = sample().html(source);
    assert!(page.starts_with("<!DOCTYPE html>\n") && page.ends_with("</html>\n"));
    let lower = page.to_lowercase();
    for banned in ["<script", "<link", "<img", "<iframe", "<object", " src=", "url(", "@import"] {
        assert!(!lower.contains(banned), "the page has {banned}");
    }
    let links: Vec<&str> = page.match_indices(" href=").map(|(i, _)| &page[i..i + 8]).collect();
    assert_eq!(links.len(), 5, "the table of contents");
    assert!(links.iter().all(|l| l.starts_with(" href=\"#")), "a link out: {links:?}");
    // The only address is the source's, named as text (never linked).
    let named = page.matches(source).count();
    assert_eq!(named, 2, "the source in data-source and in the header");
    let rest = page.replace(source, "").replace("<meta http-equiv=", "");
    assert!(!rest.contains("http") && !rest.contains("//"), "an address other than the source's");
    assert!(page.contains("content=\"default-src 'none'; style-src 'unsafe-inline'\""));
    for tag in ["section", "table", "tr", "td", "th", "g", "svg", "text", "span", "ul"] {
        let open =
            page.matches(&format!("<{tag} ")).count() + page.matches(&format!("<{tag}>")).count();
        assert_eq!(open, page.matches(&format!("</{tag}>")).count(), "<{tag}> not closed");
    }
}

#[test]
fn every_name_is_escaped() {
    let page = sample().html("<source>");
    assert!(!page.contains(NASTY) && !page.contains("orders<db>") && !page.contains("<b>"));
    assert!(!page.contains("<script"), "the reason is markup");
    assert!(page.contains("c&lt;&amp;&quot;&#39;&gt;x"), "the name, escaped");
    assert!(page.contains(">orders&lt;db&gt;<"));
    assert!(
        page.contains("&lt;script&gt;alert(&#39;move&#39;)&lt;/script&gt; &amp; &quot;more&quot;")
    );
    assert!(page.contains("<code>&lt;source&gt;</code>"));
    assert!(page.contains("<li>a note &lt;b&gt;</li>"));
}

#[test]
fn the_heatmap_holds_the_models_numbers() {
    let r = sample();
    let page = r.html("prometheus");
    let pairs = tags_with(&page, "data-opened");
    let cols = ["cell-1", "cell-2", NASTY, "global", "external"];
    assert_eq!(pairs.len(), r.cells.len() * cols.len(), "one per client cell and column");
    for (p, (src, dst)) in pairs
        .iter()
        .zip(r.cells.iter().flat_map(|c| cols.iter().map(move |d| (c.cell.as_str(), *d))))
    {
        assert_eq!((p["data-src"].as_str(), p["data-dst"].as_str()), (src, dst));
        let c = r.cell(src).unwrap();
        let want = if src == dst {
            (c.containment.inside.connections, c.containment.inside.bytes, 0)
        } else {
            c.cells
                .iter()
                .find(|d| d.cell == dst)
                .map_or((0, 0, 0), |d| (d.connections, d.bytes, d.violations))
        };
        let got = (num(p, "data-opened"), num(p, "data-bytes"), num(p, "data-violations"));
        assert_eq!(got, want, "{src} -> {dst}");
        assert_eq!(p["class"].contains("leak"), want.2 > 0, "{src} -> {dst}: {}", p["class"]);
    }
    // Two leaks, each outlined and marked; the legend says what the mark is.
    assert_eq!(page.matches("class=\"pair leak\"").count(), 2);
    assert!(page.contains("<span class=\"mark\">leak &#183; 4 viol.</span>"));
    assert!(page.contains("<span class=\"mark\">leak &#183; 7 viol.</span>"));
    assert!(page.contains("leak: boundary violations counted"));
    // The busiest pair is the darkest.
    assert!(page.contains("style=\"background:hsl(212, 70%, 40.0%);color:#fff\" data-src=\"cell-1\" data-dst=\"cell-1\""));
}

#[test]
fn the_other_sections_hold_the_models_numbers() {
    let r = sample();
    let page = r.html("prometheus");
    // Blast radius: one edge and one table row per caller, with its share exactly.
    for tag in ["g", "tr"] {
        let callers: Vec<_> = tags_with(&page, "data-service")
            .into_iter()
            .filter(|a| a.contains_key("data-connections-share"))
            .filter(|a| (tag == "g") == a.get("class").is_some_and(|c| c.starts_with("edge")))
            .collect();
        assert_eq!(callers.len(), 3, "{tag}: {callers:?}");
        let db = r.service("orders<db>").unwrap();
        let want: Vec<(&str, &Share)> = db
            .dependents
            .iter()
            .map(|d| (d.cell.as_str(), &d.share))
            .chain([("external", db.external.as_ref().unwrap())])
            .collect();
        for (a, (cell, sh)) in callers.iter().zip(want) {
            assert_eq!((a["data-service"].as_str(), a["data-cell"].as_str()), ("orders<db>", cell));
            assert_eq!(
                (num(a, "data-connections"), num(a, "data-bytes")),
                (sh.connections, sh.bytes)
            );
            assert_eq!(frac(a, "data-connections-share"), sh.connections_share);
            assert_eq!(frac(a, "data-bytes-share"), sh.bytes_share);
        }
    }
    assert!(page.contains("class=\"edge outlier\" data-cell=\"cell-1\""), "the outlier's edge");
    assert!(page.contains("in global (global) · no caller"), "ledger");
    // Containment: four scopes per cell, each as the model's.
    let scopes = tags_with(&page, "data-scope");
    assert_eq!(scopes.len(), 4 * r.cells.len());
    for (a, (c, s)) in scopes.iter().zip(r.cells.iter().flat_map(|c| {
        let k = &c.containment;
        [&k.inside, &k.global, &k.other_cells, &k.external].map(move |s| (c, s))
    })) {
        assert_eq!(
            (num(a, "data-connections"), num(a, "data-bytes")),
            (s.connections, s.bytes),
            "{}",
            c.cell
        );
        assert_eq!(frac(a, "data-connections-share"), s.connections_share, "{}", c.cell);
        assert_eq!(frac(a, "data-bytes-share"), s.bytes_share, "{}", c.cell);
    }
    let o = &tags_with(&page, "data-signal")[0];
    assert_eq!(
        (o["data-cell"].as_str(), o["data-kind"].as_str(), o["data-destination"].as_str()),
        ("cell-1", "service", "orders<db>")
    );
    assert_eq!(
        (o["data-signal"].as_str(), frac(o, "data-value"), frac(o, "data-peer-median")),
        ("connect_failures", Some(0.3), Some(0.01))
    );
    assert_eq!((num(o, "data-peers"), num(o, "data-connects")), (1, 29));
    let rule = &tags_with(&page, "data-expires")[0];
    let want = &r.temporary_rules[0];
    assert_eq!(
        (rule["data-from"].as_str(), rule["data-to"].as_str(), rule["data-reason"].as_str()),
        (want.from.as_str(), want.to.as_str(), want.reason.as_str())
    );
    assert_eq!(
        (
            num(rule, "data-expires-in-seconds"),
            num(rule, "data-connections"),
            num(rule, "data-bytes")
        ),
        (1_000_000, 10, 400)
    );
}

#[test]
fn an_empty_report_renders() {
    let r = Report {
        range: "5m".to_owned(),
        range_seconds: 300,
        cells: vec![],
        services: vec![],
        outliers: vec![],
        temporary_rules: vec![],
        notes: vec![],
    };
    let page = r.html("prometheus");
    assert!(page.starts_with("<!DOCTYPE html>\n") && page.ends_with("</main>\n</body>\n</html>\n"));
    assert!(page.contains("data-range-seconds=\"300\" data-cells=\"0\""));
    for empty in ["No cell.", "No service: name them under", "None.", "None: no allow rule"] {
        assert!(page.contains(empty), "{empty}");
    }
    assert!(!page.contains("data-opened") && !page.contains("<svg"));
}

#[test]
fn a_cell_without_traffic_is_light_and_shares_are_null() {
    let mut r = sample();
    r.cells.truncate(1);
    r.cells[0].cells.clear();
    r.cells[0].containment = Containment::default();
    let page = r.html("prometheus");
    let p = &tags_with(&page, "data-opened")[0];
    assert_eq!((p["class"].as_str(), num(p, "data-opened")), ("pair inside none", 0));
    let inside = &tags_with(&page, "data-scope")[0];
    assert_eq!(
        (frac(inside, "data-connections-share"), frac(inside, "data-bytes-share")),
        (None, None)
    );
}
