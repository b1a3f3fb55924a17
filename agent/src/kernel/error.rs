//! What can go wrong between the agent and the kernel, each as one sentence.
use std::path::PathBuf;

use aya::{
    maps::MapError,
    programs::{ProgramError, links::LinkError},
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum KernelError {
    #[error("the kernel refused cellwatch's eBPF object: {0}")]
    Load(#[source] aya::EbpfError),
    #[error(
        "the kernel's verifier refused the eBPF program {name} ({reason}); the full verifier \
         log is in the agent's log"
    )]
    Verifier {
        name: &'static str,
        reason: String,
        #[source]
        source: std::io::Error,
    },
    /// Refused before the verifier looked at an instruction (EPERM and an empty log).
    #[error(
        "the kernel refused to load the eBPF program {name} ({source}: {meaning})",
        meaning = refusal_meaning(source)
    )]
    Refused {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel refused the eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("could not attach {what}: {source}")]
    Attach {
        what: String,
        #[source]
        source: ProgramError,
    },
    #[error("could not open the cgroup v2 root {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the eBPF object has no {0}: the agent and its embedded programs do not match")]
    Missing(&'static str),
    #[error("cannot pin at {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot pin the link of {what} (this kernel attached it without a bpf_link): {source}")]
    Unpinnable {
        what: String,
        #[source]
        source: LinkError,
    },
    #[error("cannot remove the unreadable pinned state: {0}")]
    Discard(#[source] super::unpin::UninstallError),
    #[error(
        "{0}; cellwatch reads these socket fields to count bytes and failures, and supports \
         Linux 6.1 or newer"
    )]
    Btf(String),
    #[error("the connection sweep failed: {0}")]
    Sweep(#[source] std::io::Error),
    #[error("cannot link the connection sweep to the connection storage: {0}")]
    IterLink(#[source] std::io::Error),
    #[error(
        "this kernel runs neither of the live sweep's iterators, so open connections cannot \
         be listed (see cellwatch_kernel_feature and the agent's log)"
    )]
    NoWalk,
    #[error("cannot settle a connection to a Service address: {0}")]
    Settle(#[source] std::io::Error),
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

impl KernelError {
    /// The system error behind a refused program or a failed run, if that is what it is.
    pub(crate) fn errno(&self) -> Option<&std::io::Error> {
        match self {
            Self::Verifier { source, .. } | Self::Refused { source, .. } => Some(source),
            Self::IterLink(e) | Self::Sweep(e) | Self::Settle(e) => Some(e),
            Self::Program { source: ProgramError::SyscallError(e), .. } => Some(&e.io_error),
            _ => None,
        }
    }
}

/// Names the map an error came from; `name` is the map's name in the object.
pub(super) fn map_err(name: &'static str) -> impl FnOnce(MapError) -> KernelError {
    move |source| KernelError::Map { name, source }
}

/// What a refused load or run means, by its errno: EPERM before any instruction was
/// looked at is a policy (LSM, sysctl) or kernel-build refusal, not a verifier verdict.
pub(crate) fn refusal_meaning(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) => {
            "a policy or kernel-build refusal (an LSM, a sysctl, a config option), not a \
             verdict of the verifier"
        }
        Some(libc::EACCES) => "the verifier refused it",
        Some(libc::EINVAL) => "this kernel does not know this kind of program or its target",
        Some(libc::ENOTSUP | 524) => "this kernel does not support it",
        Some(libc::ENOENT) => "this kernel lacks the target it needs",
        _ => "this kernel cannot run it",
    }
}
