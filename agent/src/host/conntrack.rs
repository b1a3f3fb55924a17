//! Lookups in this network namespace's conntrack table over ctnetlink: where a
//! connection to a Kubernetes Service's virtual address really went (the backend its
//! DNAT chose, PREROUTING for pod clients and OUTPUT for host-network ones alike).
#![forbid(unsafe_code)]

use std::{io, net::SocketAddr};

use agent_core::conntrack::{
    Answer, DecodeError, Tuple, get_request, parse_answer, parse_new_entries,
};
use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_NETFILTER};

const ENOENT: i32 = 2;
/// `NFNLGRP_CONNTRACK_NEW`: a message for each new conntrack entry.
const NFNLGRP_CONNTRACK_NEW: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConntrackError {
    #[error("ctnetlink: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("ctnetlink: the kernel refused the lookup (errno {0})")]
    Refused(i32),
}

/// Where a lookup found a connection going.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Destination {
    /// DNAT sent it to this backend.
    Backend(SocketAddr),
    /// The entry is there but not NATed: the virtual address answered itself (no
    /// backend: a REJECT, or a Service with no endpoints).
    NotNated,
    /// No entry for it (gone, or never passed this namespace's conntrack).
    NoEntry,
}

/// A ctnetlink socket of this network namespace.
pub(crate) struct Conntrack {
    socket: Socket,
    seq: u32,
    rx: Vec<u8>,
}

impl Conntrack {
    pub(crate) fn open() -> Result<Self, ConntrackError> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&NlAddr::new(0, 0))?;
        Ok(Self { socket, seq: 0, rx: Vec::with_capacity(4096) })
    }

    /// Where the connection whose client holds `original` (client to virtual address)
    /// went.
    pub(crate) fn destination(&mut self, original: &Tuple) -> Result<Destination, ConntrackError> {
        self.seq = self.seq.wrapping_add(1);
        self.socket.send(&get_request(original, self.seq), 0)?;
        self.rx.clear();
        let size = self.socket.recv(&mut self.rx, 0)?;
        match parse_answer(&self.rx[..size])? {
            Answer::Found { reply } => Ok(Tuple::backend_of(original, &reply)
                .map_or(Destination::NotNated, Destination::Backend)),
            Answer::Errno(ENOENT) => Ok(Destination::NoEntry),
            Answer::Errno(e) => Err(ConntrackError::Refused(e)),
        }
    }
}

/// The conntrack entries this network namespace makes, as they are made: a connection
/// the backend refused has no entry by the time it is looked up (conntrack removes an
/// entry whose only answer was a RST), but its entry was announced.
pub(crate) struct NewEntries {
    socket: Socket,
    rx: Vec<u8>,
}

impl NewEntries {
    pub(crate) fn subscribe() -> Result<Self, ConntrackError> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.add_membership(NFNLGRP_CONNTRACK_NEW)?;
        socket.set_non_blocking(true)?;
        Ok(Self { socket, rx: Vec::with_capacity(256 * 1024) })
    }

    /// Every entry announced since the last call: (original tuple, reply tuple).
    pub(crate) fn drain(&mut self) -> Vec<(Tuple, Tuple)> {
        let mut out = Vec::new();
        loop {
            self.rx.clear();
            match self.socket.recv(&mut self.rx, 0) {
                Ok(0) => break,
                Ok(n) => out.extend(parse_new_entries(&self.rx[..n])),
                // Drained; or more came than the socket holds (ENOBUFS): what was lost
                // is looked up instead.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
                Err(_) => break,
            }
        }
        out
    }
}
