//! Unit tests of `table`.

use super::*;
use agent_core::promtext::parse;

#[test]
fn egress_rows_with_violations_marked() {
    let text = r#"
cellwatch_connections_opened_total{src_cell="cell-1",dst_cell="cell-2",direction="egress",verdict="allowed"} 4
cellwatch_connections_opened_total{src_cell="cell-3",dst_cell="cell-2",direction="egress",verdict="violation"} 2
cellwatch_connections_opened_total{src_cell="cell-3",dst_cell="cell-2",direction="ingress",verdict="violation"} 2
cellwatch_boundary_violations_total{src_cell="cell-3",dst_cell="cell-2",direction="egress"} 2
cellwatch_boundary_violations_total{src_cell="cell-3",dst_cell="cell-2",direction="ingress"} 2
cellwatch_connections_failed_total{src_cell="cell-1",dst_cell="cell-3",reason="refused"} 3
cellwatch_bytes_sent_total{src_cell="cell-3",dst_cell="cell-2",direction="egress"} 10
cellwatch_connections_active{src_cell="cell-1",dst_cell="cell-2",direction="egress"} 1
"#;
    let t = build(&parse(text));
    assert_eq!(t.len(), 3);
    let leak = &t[&("cell-3".to_owned(), "cell-2".to_owned())];
    assert_eq!((leak.violations, leak.opened, leak.sent), (2.0, 2.0, 10.0));
    assert_eq!(t[&("cell-1".to_owned(), "cell-3".to_owned())].refused, 3.0);
    let plain = render(&t, false);
    let marked: Vec<_> = plain.lines().filter(|l| l.contains("cross-cell leak")).collect();
    assert_eq!(marked.len(), 1, "{plain}");
    assert!(marked[0].contains("cell-3") && !plain.contains('\x1b'));
    assert!(render(&t, true).contains("\x1b[1;31m"));
}

#[test]
fn an_external_clients_bytes_seen_from_its_server_are_swapped() {
    let text = r#"
cellwatch_bytes_sent_total{src_cell="external",dst_cell="cell-2",direction="ingress"} 700
cellwatch_bytes_received_total{src_cell="external",dst_cell="cell-2",direction="ingress"} 30
cellwatch_bytes_sent_total{src_cell="cell-1",dst_cell="cell-2",direction="egress"} 40
cellwatch_bytes_received_total{src_cell="cell-1",dst_cell="cell-2",direction="egress"} 500
cellwatch_bytes_sent_total{src_cell="cell-1",dst_cell="cell-2",direction="ingress"} 500
"#;
    let t = build(&parse(text));
    let external = &t[&("external".to_owned(), "cell-2".to_owned())];
    assert_eq!((external.sent, external.received), (30.0, 700.0));
    let cell = &t[&("cell-1".to_owned(), "cell-2".to_owned())];
    assert_eq!((cell.sent, cell.received), (40.0, 500.0));
}
