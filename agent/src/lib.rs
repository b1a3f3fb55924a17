//! cellwatch: an eBPF-assisted cell telemetry agent.
//!
//! Where a connection's life is handled:
//! - in the kernel: `agent-ebpf/src/sockops.rs` (connect, established, close), with
//!   cells and verdicts from `agent-ebpf/src/cells.rs`;
//! - in userspace: [`kernel`] loads those programs and reads their maps, [`metrics`]
//!   renders them, [`http`] serves them, and [`run`] ties it together.
//!
//! The rest: [`config`] (the cell map file), [`policy`] (config -> kernel maps, and the
//! reference verdict), [`preflight`] (node checks), [`cli`] (commands).

pub mod cli;
pub mod config;
pub mod http;
pub mod kernel;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod preflight;
pub mod reload;
pub mod run;
mod sys;
pub mod uninstall;
