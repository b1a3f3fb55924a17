//! `cellwatch`: an eBPF-assisted cell telemetry agent. The layers, top down:
//!
//! - [`cli`] and [`cmd`]: the command line and each command (`run`, `demo`, `top`,
//!   `report`, `check-config`, `uninstall`), errors turned into one sentence and an exit
//!   code.
//! - [`serve`]: the HTTP endpoints (`/metrics`, `/connections`, `/violations`, health)
//!   and the kernel's violation events drained for them.
//! - [`kernel`]: the embedded eBPF programs on their hooks, their pinned maps read and
//!   written. A connection's life itself is handled in the kernel, in
//!   `agent-ebpf/src/sockops.rs`, with its cells and verdict from `agent-ebpf/src/cells.rs`.
//! - [`host`]: the node itself: start-up checks, mounts, raw system calls, cgroups,
//!   processes and `sock_diag`.
//! - [`sync`] and [`logging`], beside them all: lock poisoning in one place; tracing to
//!   stderr, with aya-log bridged in.
//!
//! The config, the policy, metric rendering and every other pure piece live in the
//! `agent-core` crate, the clients of the metrics in `agent-view`, and the kernel/user
//! layout of every map in `agent-common`.
#![deny(unsafe_code)]

mod cli;
mod cmd;
mod host;
mod kernel;
mod logging;
mod serve;
mod sync;

fn main() -> std::process::ExitCode {
    cmd::main()
}
