//! Unit tests of `conntrack`.

use super::*;

fn tuple(src: &str, dst: &str) -> Tuple {
    Tuple { src: src.parse().unwrap(), dst: dst.parse().unwrap() }
}

/// The kernel's answer to a GET: an IPCTNL_MSG_CT_NEW with both tuples.
fn answer(orig: &Tuple, reply: &Tuple) -> Vec<u8> {
    let mut attrs = nested(CTA_TUPLE_ORIG, &tuple_attrs(orig));
    attrs.extend_from_slice(&attr(12, &7u32.to_be_bytes())); // CTA_STATUS, skipped
    attrs.extend_from_slice(&nested(CTA_TUPLE_REPLY, &tuple_attrs(reply)));
    let mut msg = Vec::new();
    let len = u32::try_from(16 + 4 + attrs.len()).unwrap();
    msg.extend_from_slice(&len.to_ne_bytes());
    msg.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW).to_ne_bytes());
    msg.extend_from_slice(&[0; 10]);
    msg.extend_from_slice(&[AF_INET, 0, 0, 0]);
    msg.extend_from_slice(&attrs);
    msg
}

#[test]
fn a_request_carries_the_original_tuple_and_parses_back() {
    for (src, dst) in
        [("10.1.0.5:40000", "10.96.0.10:80"), ("[fd00:1::5]:40000", "[fd00:96::a]:443")]
    {
        let t = tuple(src, dst);
        let req = get_request(&t, 9);
        assert_eq!(
            usize::try_from(u32::from_ne_bytes(req[..4].try_into().unwrap())).unwrap(),
            req.len()
        );
        assert_eq!(u16::from_ne_bytes([req[4], req[5]]), 0x0101);
        let orig = find(&req[20..], CTA_TUPLE_ORIG).unwrap();
        assert_eq!(parse_tuple(orig), Some(t));
    }
}

#[test]
fn an_answer_names_the_backend() {
    let orig = tuple("10.1.0.5:40000", "10.96.0.10:80");
    let reply = tuple("10.2.0.7:8080", "10.1.0.5:40000");
    let a = parse_answer(&answer(&orig, &reply)).unwrap();
    assert_eq!(a, Answer::Found { reply });
    assert_eq!(Tuple::backend_of(&orig, &reply), Some("10.2.0.7:8080".parse().unwrap()));
    // No DNAT: the reply comes from the address the client called.
    let plain = tuple("10.96.0.10:80", "10.1.0.5:40000");
    assert_eq!(Tuple::backend_of(&orig, &plain), None);
}

#[test]
fn new_entry_events_give_both_tuples_and_skip_the_rest() {
    let a = (tuple("10.1.0.5:40000", "10.96.0.10:80"), tuple("10.2.0.7:8080", "10.1.0.5:40000"));
    let b = (tuple("[fd00:1::5]:1", "[fd00:96::a]:80"), tuple("[fd00:2::7]:8080", "[fd00:1::5]:1"));
    let mut buf = answer(&a.0, &a.1);
    buf.extend_from_slice(&answer(&b.0, &b.1));
    assert_eq!(parse_new_entries(&buf), vec![a, b]);
    for n in 0..buf.len() {
        assert!(parse_new_entries(&buf[..n]).len() <= 2);
    }
    assert!(parse_new_entries(&[0xff; 64]).is_empty());
}

#[test]
fn ipvs_connections_name_their_real_server() {
    let text = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n\
                    TCP 0AFC790A 9695 0AFC810A 0050 0AFC820A 1F90 ESTABLISHED     899\n\
                    TCP FD00:0252:0001:0000:0000:0000:0000:0005 0001 FD00:0096:0000:0000:0000:0000:0000:000A 0050 FD00:0252:0002:0000:0000:0000:0000:0007 1F90 SYN_RECV 60\n";
    let t = tuple("10.252.121.10:38549", "10.252.129.10:80");
    assert_eq!(ipvs_backend(text, &t), Some("10.252.130.10:8080".parse().unwrap()));
    let t6 = tuple("[fd00:252:1::5]:1", "[fd00:96::a]:80");
    assert_eq!(ipvs_backend(text, &t6), Some("[fd00:252:2::7]:8080".parse().unwrap()));
    assert_eq!(ipvs_backend(text, &tuple("10.252.121.10:1", "10.252.129.10:80")), None);
    assert_eq!(ipvs_backend("garbage\nTCP x y", &t), None);
}

#[test]
fn an_error_answer_is_its_errno() {
    let mut msg = Vec::new();
    msg.extend_from_slice(&36u32.to_ne_bytes());
    msg.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
    msg.extend_from_slice(&[0; 10]);
    msg.extend_from_slice(&(-2i32).to_ne_bytes());
    msg.extend_from_slice(&[0; 16]);
    assert_eq!(parse_answer(&msg), Ok(Answer::Errno(2)));
}

#[test]
fn every_truncation_of_an_answer_is_an_error_not_a_panic() {
    let orig = tuple("[fd00:1::5]:40000", "[fd00:96::a]:443");
    let reply = tuple("[fd00:2::7]:8443", "[fd00:1::5]:40000");
    let full = answer(&orig, &reply);
    for n in 0..full.len() {
        assert!(parse_answer(&full[..n]).is_err(), "{n} bytes");
    }
}
