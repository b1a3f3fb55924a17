//! The ctnetlink messages that find where a NATed TCP connection really goes: a
//! `IPCTNL_MSG_CT_GET` request for a connection's original tuple (as its client's socket
//! holds it), and the reply tuple read back from the kernel's answer, whose source is the
//! backend the DNAT chose; and, for kube-proxy's IPVS mode, the same backend read from
//! the text of `/proc/net/ip_vs_conn`. Encoding and parsing only; the socket and the file
//! are the agent's.
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

/// The request for the entry whose original tuple is `t` (client to service address),
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
mod tests;
