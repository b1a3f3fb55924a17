//! The node the agent runs on, below the kernel programs: start-up checks
//! ([`preflight`]), mounts ([`mounts`]) and the pin directory's layout ([`bpffs`]), the
//! few raw system calls ([`sys`]), and what names a socket's owner: cgroups
//! ([`cgroups`]), processes ([`procs`]) and `sock_diag` ([`sockdiag`]). [`clock`] turns
//! kernel timestamps into ages and wall times. [`netns`] finds the node's network
//! namespaces and enters them, for walks that see one at a time; [`conntrack`] asks
//! one of them where a connection to a Service address went.

pub(crate) mod bpffs;
pub(crate) mod cgroups;
pub(crate) mod clock;
pub(crate) mod conntrack;
pub(crate) mod mounts;
pub(crate) mod netns;
pub(crate) mod preflight;
pub(crate) mod procs;
pub(crate) mod sockdiag;
pub(crate) mod sys;
