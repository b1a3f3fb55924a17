//! Unit tests of `side`.

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
