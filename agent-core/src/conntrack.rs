//! The ctnetlink messages that find where a NATed TCP connection really goes: a
//! `IPCTNL_MSG_CT_GET` request for a connection's original tuple (as its client's socket
//! holds it), and the reply tuple read back from the kernel's answer, whose source is the
//! backend the DNAT chose. Encoding and decoding only; the socket is the agent's.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;

/// A TCP connection as one end of conntrack sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// What the kernel answered to a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The entry: its reply tuple (the reply's source is where the connection went).
    Found { reply: Tuple },
    /// An error answer, as a positive errno (`ENOENT`: no such entry).
    Errno(i32),
}

/// Why an answer could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("ctnetlink answer truncated at byte {0}")]
    Truncated(usize),
    #[error("ctnetlink answer of unexpected type {0:#06x}")]
    UnexpectedType(u16),
    #[error("ctnetlink answer has no complete reply tuple")]
    NoReplyTuple,
}

impl Tuple {
    /// Where the connection really went, if the reply comes from elsewhere than the
    /// original destination (a DNAT happened): the reply's source.
    pub fn backend_of(original: &Self, reply: &Self) -> Option<SocketAddr> {
        (reply.src != original.dst).then_some(reply.src)
    }
}

/// The request for the entry whose original tuple is `t` (client to virtual address),
/// with sequence number `seq`. Both ends must be of one family.
pub fn get_request(t: &Tuple, seq: u32) -> Vec<u8> {
    let family = if t.src.is_ipv4() { AF_INET } else { AF_INET6 };
    let mut msg = Vec::with_capacity(96);
    // nlmsghdr: length (patched below), type, flags, seq, pid.
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET).to_ne_bytes());
    msg.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: family, version 0, resource id 0 (big-endian).
    msg.extend_from_slice(&[family, 0, 0, 0]);
    let orig = nested(CTA_TUPLE_ORIG, &tuple_attrs(t));
    msg.extend_from_slice(&orig);
    let len = u32::try_from(msg.len()).unwrap_or(u32::MAX);
    msg[..4].copy_from_slice(&len.to_ne_bytes());
    msg
}

fn tuple_attrs(t: &Tuple) -> Vec<u8> {
    let mut ip = Vec::new();
    match (t.src.ip(), t.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            ip.extend_from_slice(&attr(CTA_IP_V4_SRC, &s.octets()));
            ip.extend_from_slice(&attr(CTA_IP_V4_DST, &d.octets()));
        }
        (s, d) => {
            ip.extend_from_slice(&attr(CTA_IP_V6_SRC, &v6(s)));
            ip.extend_from_slice(&attr(CTA_IP_V6_DST, &v6(d)));
        }
    }
    let mut proto = attr(CTA_PROTO_NUM, &[IPPROTO_TCP]);
    proto.extend_from_slice(&attr(CTA_PROTO_SRC_PORT, &t.src.port().to_be_bytes()));
    proto.extend_from_slice(&attr(CTA_PROTO_DST_PORT, &t.dst.port().to_be_bytes()));
    let mut out = nested(CTA_TUPLE_IP, &ip);
    out.extend_from_slice(&nested(CTA_TUPLE_PROTO, &proto));
    out
}

fn v6(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

/// One netlink attribute, padded to 4 bytes.
fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(usize::from(len) + 3);
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    out
}

fn nested(kind: u16, payload: &[u8]) -> Vec<u8> {
    attr(kind | NLA_F_NESTED, payload)
}

/// Reads the first message of `buf`, the kernel's answer to [`get_request`].
pub fn parse_answer(buf: &[u8]) -> Result<Answer, DecodeError> {
    let u16_at = |o: usize| {
        buf.get(o..o + 2).map(|b| u16::from_ne_bytes([b[0], b[1]])).ok_or(DecodeError::Truncated(o))
    };
    let u32_at = |o: usize| {
        buf.get(o..o + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or(DecodeError::Truncated(o))
    };
    let len = usize::try_from(u32_at(0)?).unwrap_or(usize::MAX);
    let kind = u16_at(4)?;
    let body = buf.get(16..len).ok_or(DecodeError::Truncated(len.min(buf.len())))?;
    if kind == NLMSG_ERROR {
        let errno = body.get(..4).ok_or(DecodeError::Truncated(16))?;
        let errno = i32::from_ne_bytes([errno[0], errno[1], errno[2], errno[3]]);
        return Ok(Answer::Errno(errno.saturating_neg()));
    }
    if kind != (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW {
        return Err(DecodeError::UnexpectedType(kind));
    }
    // After the 4-byte nfgenmsg, the entry's attributes.
    let attrs = body.get(4..).ok_or(DecodeError::Truncated(20))?;
    let reply = find(attrs, CTA_TUPLE_REPLY).ok_or(DecodeError::NoReplyTuple)?;
    let reply = parse_tuple(reply).ok_or(DecodeError::NoReplyTuple)?;
    Ok(Answer::Found { reply })
}

/// The entries (original tuple, reply tuple) of the `IPCTNL_MSG_CT_NEW` messages in
/// `buf`, as a socket in the new-connection group receives them; other messages, and
/// entries of other protocols, are skipped.
pub fn parse_new_entries(buf: &[u8]) -> Vec<(Tuple, Tuple)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 20 <= buf.len() {
        let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
        if len < 20 || at + len > buf.len() {
            break;
        }
        if kind == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW {
            let attrs = &buf[at + 20..at + len];
            let orig = find(attrs, CTA_TUPLE_ORIG).and_then(parse_tuple);
            let reply = find(attrs, CTA_TUPLE_REPLY).and_then(parse_tuple);
            if let (Some(o), Some(r)) = (orig, reply) {
                out.push((o, r));
            }
        }
        at += len.div_ceil(4) * 4;
    }
    out
}

/// Where IPVS sent the connection `t` (client to virtual server), from the text of
/// `/proc/net/ip_vs_conn`: kube-proxy's IPVS mode keeps its connections there, not where
/// a conntrack lookup finds them. Rows are `TCP <client> <port> <virtual> <port> <real>
/// <port> ...`, IPv4 addresses and ports in hex, IPv6 addresses written out.
pub fn ipvs_backend(text: &str, t: &Tuple) -> Option<SocketAddr> {
    let addr = |s: &str| -> Option<IpAddr> {
        if s.len() == 8 && !s.contains(':') {
            u32::from_str_radix(s, 16).ok().map(|v| IpAddr::from(std::net::Ipv4Addr::from(v)))
        } else {
            s.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::from)
        }
    };
    let end = |a: &str, p: &str| Some(SocketAddr::new(addr(a)?, u16::from_str_radix(p, 16).ok()?));
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 7 || f[0] != "TCP" {
            return None;
        }
        let (client, virt) = (end(f[1], f[2])?, end(f[3], f[4])?);
        (client == t.src && virt == t.dst).then(|| end(f[5], f[6])).flatten()
    })
}

/// The payload of the first attribute of type `kind` in `attrs`.
fn find(attrs: &[u8], kind: u16) -> Option<&[u8]> {
    let mut at = 0;
    while at + 4 <= attrs.len() {
        let len = usize::from(u16::from_ne_bytes([attrs[at], attrs[at + 1]]));
        let k = u16::from_ne_bytes([attrs[at + 2], attrs[at + 3]]) & NLA_TYPE_MASK;
        if len < 4 || at + len > attrs.len() {
            return None;
        }
        if k == kind {
            return Some(&attrs[at + 4..at + len]);
        }
        at += len.div_ceil(4) * 4;
    }
    None
}

fn parse_tuple(t: &[u8]) -> Option<Tuple> {
    let ip = find(t, CTA_TUPLE_IP)?;
    let proto = find(t, CTA_TUPLE_PROTO)?;
    let (src, dst) = match (find(ip, CTA_IP_V4_SRC), find(ip, CTA_IP_V4_DST)) {
        (Some(s), Some(d)) => {
            (IpAddr::from(<[u8; 4]>::try_from(s).ok()?), IpAddr::from(<[u8; 4]>::try_from(d).ok()?))
        }
        _ => (
            IpAddr::from(<[u8; 16]>::try_from(find(ip, CTA_IP_V6_SRC)?).ok()?),
            IpAddr::from(<[u8; 16]>::try_from(find(ip, CTA_IP_V6_DST)?).ok()?),
        ),
    };
    let port = |k| find(proto, k).and_then(|p| <[u8; 2]>::try_from(p).ok()).map(u16::from_be_bytes);
    Some(Tuple {
        src: SocketAddr::new(src, port(CTA_PROTO_SRC_PORT)?),
        dst: SocketAddr::new(dst, port(CTA_PROTO_DST_PORT)?),
    })
}

#[cfg(test)]
mod tests {
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
        let a =
            (tuple("10.1.0.5:40000", "10.96.0.10:80"), tuple("10.2.0.7:8080", "10.1.0.5:40000"));
        let b =
            (tuple("[fd00:1::5]:1", "[fd00:96::a]:80"), tuple("[fd00:2::7]:8080", "[fd00:1::5]:1"));
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
}
