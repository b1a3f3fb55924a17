//! The kernel programs' aya-log records, forwarded into `log` (which the tracing
//! subscriber bridges) as they arrive in their ring buffer.
#![expect(unsafe_code, reason = "registering the logger's fd with tokio is unsafe")]

use std::os::fd::AsRawFd;

use aya::Ebpf;
use tokio::io::unix::AsyncFd;
use tracing::{debug, warn};

/// Spawns the forwarder; `None` (logged) when the object has no log map or its buffer
/// cannot be polled. Must run inside a tokio runtime.
pub(super) fn spawn_forwarder(ebpf: &mut Ebpf) -> Option<tokio::task::JoinHandle<()>> {
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(l) => l,
        Err(e) => {
            debug!(error = %e, "no aya-log map in the eBPF object");
            return None;
        }
    };
    let fd = logger.as_raw_fd();
    // SAFETY: the logger owns its ring buffer's fd and keeps it open for as long as the
    // AsyncFd (which owns the logger) exists; nothing else closes or replaces it.
    let registered =
        unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
    let mut afd = match registered {
        Ok(a) => a,
        Err(e) => {
            warn!(error = %e, fd, "cannot poll the eBPF log buffer; kernel log records are dropped");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        loop {
            let Ok(mut guard) = afd.readable_mut().await else { return };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }))
}
