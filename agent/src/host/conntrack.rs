//! Lookups in this network namespace's conntrack table over ctnetlink: where a
//! connection to a Kubernetes Service address really went (the backend its
//! DNAT chose, PREROUTING for pod clients and OUTPUT for host-network ones alike).
#![forbid(unsafe_code)]

use std::{io, net::SocketAddr, os::fd::AsRawFd};

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
    /// The entry is there but not NATed: the service address answered itself (no
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
        // A lookup the kernel does not answer fails after a while instead of holding
        // the answerer forever.
        super::sys::set_recv_timeout(socket.as_raw_fd(), LOOKUP_TIMEOUT)?;
        Ok(Self { socket, seq: 0, rx: Vec::with_capacity(4096) })
    }

    /// Where the connection whose client holds `original` (client to service address)
    /// went. An answer to an earlier lookup (one that timed out) is passed over: only
    /// the answer with this lookup's sequence number counts.
    pub(crate) fn destination(&mut self, original: &Tuple) -> Result<Destination, ConntrackError> {
        self.seq = self.seq.wrapping_add(1);
        self.socket.send(&get_request(original, self.seq), 0)?;
        let mut size = 0;
        for _ in 0..STALE_ANSWERS {
            self.rx.clear();
            size = self.socket.recv(&mut self.rx, 0)?;
            if answer_seq(&self.rx[..size]) == Some(self.seq) {
                break;
            }
            size = 0;
        }
        if size == 0 {
            return Err(ConntrackError::Io(io::Error::other("no answer to this lookup")));
        }
        match parse_answer(&self.rx[..size])? {
            Answer::Found { reply } => Ok(Tuple::backend_of(original, &reply)
                .map_or(Destination::NotNated, Destination::Backend)),
            Answer::Errno(ENOENT) => Ok(Destination::NoEntry),
            Answer::Errno(e) => Err(ConntrackError::Refused(e)),
        }
    }
}

/// How long a lookup waits for its answer.
const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
/// Answers to earlier lookups passed over before this one's is given up on.
const STALE_ANSWERS: usize = 8;
/// Entries taken from the announcements at one drain; the rest wait for the next.
const DRAIN_MAX: usize = 65_536;

/// The sequence number of a netlink answer (bytes 8..12 of its header).
fn answer_seq(msg: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(msg.get(8..12)?.try_into().ok()?))
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

    /// The entries announced since the last call, at most `DRAIN_MAX`: (original
    /// tuple, reply tuple).
    pub(crate) fn drain(&mut self) -> Vec<(Tuple, Tuple)> {
        let mut out = Vec::new();
        while out.len() < DRAIN_MAX {
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
