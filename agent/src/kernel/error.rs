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
    Verifier { name: &'static str, reason: String },
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
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

/// Names the map an error came from; `name` is the map's name in the object.
pub(super) fn map_err(name: &'static str) -> impl FnOnce(MapError) -> KernelError {
    move |source| KernelError::Map { name, source }
}
