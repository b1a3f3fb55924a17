//! Unit tests of `side`.

use agent_common::{CELL_EXTERNAL, Direction, observes_rtt};

use super::*;

#[test]
fn the_client_side_and_external_clients_seen_by_their_server() {
    assert!(counts("egress", "cell-1") && counts("", "cell-1"));
    assert!(counts("ingress", "external") && !counts("ingress", "cell-1"));
    assert!(!counts("sideways", "external"));
    assert_eq!(
        matchers(),
        ["direction=\"egress\"", "direction=\"ingress\", src_cell=\"external\""]
    );
}

#[test]
fn the_labels_rule_is_the_kernels() {
    // Every direction the kernel can write, by its label, for a client in a cell and one
    // in none.
    for d in (0..=u8::MAX).map(Direction) {
        for (cell, name) in [(CELL_EXTERNAL, EXTERNAL), (7, "cell-7")] {
            assert_eq!(counts(d.label(), name), observes_rtt(d, cell), "{d:?} {name}");
        }
    }
    assert_eq!((EGRESS, INGRESS), (Direction::EGRESS.label(), Direction::INGRESS.label()));
}

#[test]
fn the_clients_bytes_are_the_servers_the_other_way() {
    assert_eq!(client_bytes(Way::Sent, EGRESS), Way::Sent);
    assert_eq!(client_bytes(Way::Received, EGRESS), Way::Received);
    assert_eq!(client_bytes(Way::Sent, INGRESS), Way::Received);
    assert_eq!(client_bytes(Way::Received, INGRESS), Way::Sent);
}
