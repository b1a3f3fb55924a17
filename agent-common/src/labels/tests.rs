//! Unit tests of `labels`.

use super::*;

#[test]
fn labels_and_indices() {
    assert_eq!((Direction::EGRESS.label(), Direction::INGRESS.label()), ("egress", "ingress"));
    assert_eq!((Verdict::ALLOWED.label(), Verdict::VIOLATION.label()), ("allowed", "violation"));
    assert_eq!(Failure::NONE.index(), None);
    for (i, f) in
        [Failure::REFUSED, Failure::RESET, Failure::TIMEOUT, Failure::OTHER].into_iter().enumerate()
    {
        assert_eq!(f.index(), Some(i));
        let mut failed = [0; Failure::REASONS];
        failed[f] += 1;
        assert_eq!(failed[i], 1);
    }
    assert_eq!(Failure::LABELS, ["refused", "reset", "timeout", "other"]);
}

#[test]
fn rtt_is_the_clients_or_the_servers_of_an_external_client() {
    assert!(observes_rtt(Direction::EGRESS, 5));
    assert!(observes_rtt(Direction::EGRESS, CELL_EXTERNAL));
    assert!(observes_rtt(Direction::INGRESS, CELL_EXTERNAL));
    assert!(!observes_rtt(Direction::INGRESS, 5));
}
