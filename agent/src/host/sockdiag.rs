//! A `sock_diag` (netlink inet_diag) dump of this network namespace's TCP sockets, with
//! their cookie (the key the kernel programs use), state, inode and `tcp_info`: live RTT
//! and bytes for `/connections`, and the connections the agent finds at start-up.
#![forbid(unsafe_code)]

use std::{io, net::SocketAddr};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags, nlas::Nla},
};
use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_SOCK_DIAG};

/// TCP states as the kernel numbers them.
pub(crate) const TCP_LISTEN: u8 = 10;

/// One TCP socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TcpSocket {
    pub(crate) cookie: u64,
    pub(crate) state: u8,
    pub(crate) local: SocketAddr,
    pub(crate) remote: SocketAddr,
    pub(crate) inode: u32,
    /// From `tcp_info` (absent for listeners and when the kernel sent none).
    pub(crate) srtt_us: Option<u32>,
    pub(crate) bytes_acked: Option<u64>,
    pub(crate) bytes_received: Option<u64>,
}

/// The `struct tcp_info` fields cellwatch reads, at their UAPI offsets (stable since
/// Linux 4.1); a shorter record from an older kernel leaves the missing ones out.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct TcpInfo {
    pub(crate) rtt_us: Option<u32>,
    pub(crate) bytes_acked: Option<u64>,
    pub(crate) bytes_received: Option<u64>,
}

impl TcpInfo {
    const RTT: usize = 68;
    const BYTES_ACKED: usize = 120;
    const BYTES_RECEIVED: usize = 128;

    pub(crate) fn parse(raw: &[u8]) -> Self {
        let u32_at =
            |o: usize| raw.get(o..o + 4).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes);
        let u64_at =
            |o: usize| raw.get(o..o + 8).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes);
        Self {
            rtt_us: u32_at(Self::RTT),
            bytes_acked: u64_at(Self::BYTES_ACKED),
            bytes_received: u64_at(Self::BYTES_RECEIVED),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SockDiagError {
    #[error("sock_diag netlink: {0}")]
    Io(#[from] io::Error),
    #[error("sock_diag netlink: malformed answer: {0}")]
    Decode(String),
}

/// Every TCP socket (IPv4 and IPv6) in `states`.
pub(crate) fn dump(states: StateFlags) -> Result<Vec<TcpSocket>, SockDiagError> {
    let mut out = Vec::new();
    for family in [AF_INET, AF_INET6] {
        dump_family(family, states.clone(), &mut out)?;
    }
    Ok(out)
}

fn dump_family(
    family: u8,
    states: StateFlags,
    out: &mut Vec<TcpSocket>,
) -> Result<(), SockDiagError> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&NlAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let socket_id = if family == AF_INET { SocketId::new_v4() } else { SocketId::new_v6() };
    let request = InetRequest {
        family,
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::INFO,
        states,
        socket_id,
    };
    send(&socket, header, request)?;

    let mut rx = Vec::with_capacity(64 * 1024);
    loop {
        rx.clear();
        let size = socket.recv(&mut rx, 0)?;
        let mut offset = 0;
        while offset < size {
            let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&rx[offset..size])
                .map_err(|e| SockDiagError::Decode(e.to_string()))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                    out.push(socket_of(&r));
                }
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => return Err(SockDiagError::Decode(format!("{e:?}"))),
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

/// Sends one sock_diag request.
fn send(socket: &Socket, header: NetlinkHeader, request: InetRequest) -> io::Result<()> {
    let mut packet = NetlinkMessage::new(header, SockDiagMessage::InetRequest(request).into());
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf[..]);
    socket.send(&buf[..], 0).map(drop)
}

/// A socket as sock_diag describes it.
fn socket_of(r: &InetResponse) -> TcpSocket {
    let h = &r.header;
    let mut s = TcpSocket {
        cookie: u64::from_ne_bytes(h.socket_id.cookie),
        state: h.state,
        local: SocketAddr::new(h.socket_id.source_address, h.socket_id.source_port),
        remote: SocketAddr::new(h.socket_id.destination_address, h.socket_id.destination_port),
        inode: h.inode,
        srtt_us: None,
        bytes_acked: None,
        bytes_received: None,
    };
    for nla in r.nlas.iter() {
        if let Nla::TcpInfo(raw) = nla {
            let info = TcpInfo::parse(raw);
            s.srtt_us = info.rtt_us;
            s.bytes_acked = info.bytes_acked;
            s.bytes_received = info.bytes_received;
        }
    }
    s
}

/// The sockets of these connections, (local, remote, cookie) each, found one by one
/// (an exact request each, no dump of every socket); those gone or in another network
/// namespace are left out.
pub(crate) fn find(
    conns: &[(SocketAddr, SocketAddr, u64)],
) -> Result<Vec<TcpSocket>, SockDiagError> {
    let mut out = Vec::new();
    if conns.is_empty() {
        return Ok(out);
    }
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&NlAddr::new(0, 0))?;
    let mut rx = Vec::with_capacity(16 * 1024);
    for (local, remote, cookie) in conns {
        let family = if local.is_ipv4() { AF_INET } else { AF_INET6 };
        let mut socket_id = if family == AF_INET { SocketId::new_v4() } else { SocketId::new_v6() };
        socket_id.source_port = local.port();
        socket_id.destination_port = remote.port();
        socket_id.source_address = local.ip();
        socket_id.destination_address = remote.ip();
        socket_id.cookie = cookie.to_ne_bytes();
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        let request = InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id,
        };
        send(&socket, header, request)?;
        rx.clear();
        let size = socket.recv(&mut rx, 0)?;
        let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&rx[..size])
            .map_err(|e| SockDiagError::Decode(e.to_string()))?;
        // Not found (closed since) is an error answer: skipped.
        if let NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) = msg.payload {
            out.push(socket_of(&r));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
