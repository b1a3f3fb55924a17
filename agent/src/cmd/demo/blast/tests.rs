//! Unit tests of `blast`.

use agent_core::promtext;

use super::*;

#[test]
fn callers_of_each_service_with_their_share() {
    let text = "\
cellwatch_service_info{service=\"ledger\",cell=\"global\"} 1
cellwatch_service_info{service=\"unused\",cell=\"global\"} 1
cellwatch_service_connections_opened_total{src_cell=\"cell-2\",service=\"ledger\",direction=\"egress\",verdict=\"allowed\"} 30
cellwatch_service_connections_opened_total{src_cell=\"cell-2\",service=\"ledger\",direction=\"ingress\",verdict=\"allowed\"} 30
cellwatch_service_connections_opened_total{src_cell=\"cell-1\",service=\"ledger\",direction=\"egress\",verdict=\"allowed\"} 10
";
    let list = radius(&promtext::parse(text));
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].callers, vec![("cell-2".to_owned(), 30), ("cell-1".to_owned(), 10)]);
    let shown = render(&list);
    assert!(
            shown.contains(
                "blast radius of ledger (in global): cell-2 30 connections (75%), cell-1 10 connections (25%)"
            ),
            "{shown}"
        );
    assert!(shown.contains("blast radius of unused (in global): no cell called it"), "{shown}");
}
