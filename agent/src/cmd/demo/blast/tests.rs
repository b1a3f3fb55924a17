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
    let callers: Vec<_> =
        list[0].dependents.iter().map(|d| (d.cell.as_str(), d.share.connections)).collect();
    assert_eq!(callers, [("cell-2", 30), ("cell-1", 10)]);
    let shown = render(&list);
    assert!(
        shown.contains(
            "blast radius of ledger (in global): cell-2 30 connections (75%), cell-1 10 connections (25%)"
        ),
        "{shown}"
    );
    assert!(shown.contains("blast radius of unused (in global): no cell called it"), "{shown}");
}

#[test]
fn external_clients_come_last_and_each_connection_once() {
    let text = "\
cellwatch_service_info{service=\"ledger\",cell=\"global\"} 1
cellwatch_service_connections_opened_total{src_cell=\"external\",service=\"ledger\",direction=\"ingress\",verdict=\"allowed\"} 30
cellwatch_service_connections_opened_total{src_cell=\"cell-1\",service=\"ledger\",direction=\"egress\",verdict=\"allowed\"} 6
cellwatch_service_connections_opened_total{src_cell=\"cell-1\",service=\"ledger\",direction=\"egress\",verdict=\"violation\"} 4
cellwatch_service_connections_opened_total{src_cell=\"cell-1\",service=\"ledger\",direction=\"ingress\",verdict=\"allowed\"} 10
";
    let shown = render(&radius(&promtext::parse(text)));
    assert_eq!(
        shown,
        "blast radius of ledger (in global): cell-1 10 connections (25%), external 30 \
         connections (75%): if it fails, so may they\n"
    );
}
