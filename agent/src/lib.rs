//! cellwatch: an eBPF-assisted cell telemetry agent.
//!
//! Where a connection's life is handled:
//! - in the kernel: `agent-ebpf/src/sockops.rs` (connect, established, close), with
//!   cells and verdicts from `agent-ebpf/src/cells.rs`;
//! - in userspace: [`kernel`] loads those programs and reads their maps, [`metrics`]
//!   renders them, [`http`] serves them, and [`run`] ties it together.
//!
//! The rest: [`config`] (the cell map file), [`policy`] (config -> kernel maps, and the
//! reference verdict), [`reload`] (SIGHUP and file changes), [`preflight`] (node
//! checks), [`violations`] (kernel events), [`connections`] and [`seed`] (the live
//! table, with [`sockdiag`], [`procs`] and [`cgroups`] for detail), [`demo`] (sample
//! traffic and a live table, reading `/metrics` back with [`promtext`]), [`cli`]
//! (commands).

pub mod cgroups;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connections;
pub mod demo;
pub mod http;
pub mod kernel;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod preflight;
pub mod procs;
pub mod promtext;
pub mod query;
pub mod reload;
pub mod run;
pub mod seed;
pub mod sockdiag;
mod sys;
pub mod uninstall;
pub mod violations;
