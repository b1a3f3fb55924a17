//! Unit tests of `layout`.

use super::*;

#[test]
fn payload_sent_is_what_was_sent_once_acknowledged_or_not() {
    // The handshake: the SYN acknowledged, nothing sent.
    let base = Progress { acked: 1, sent_once: 0, received: 1, retrans: 0 };
    // One byte sent, the peer's RST came before its ACK.
    let reset = Progress { acked: 1, sent_once: 1, received: 2, retrans: 0 };
    assert_eq!(reset.payload_sent(&base), 1);
    // 100 bytes sent and acknowledged with the FIN (101 of sequence space).
    let fin = Progress { acked: 102, sent_once: 100, received: 1, retrans: 3 };
    assert_eq!(fin.payload_sent(&base), 100);
    assert_eq!(base.payload_sent(&fin), 0, "never below the base");
    assert_eq!(fin.payload_received(&base, true), 0, "the peer's FIN is not payload");
}
