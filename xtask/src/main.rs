//! `cargo xtask`: the project's own tasks, so a fresh machine needs one command each.
//! This file is the command line and its dispatch; each task lives in its own module:
//!
//! - `setup` ([`setup`]): install what building, running and testing cellwatch needs,
//!   saying what each thing is for (idempotent: what is there stays);
//! - `test` ([`checks`]): every check CI runs (format, lints, licences and sources, unit
//!   tests, privileged integration tests, the kernel matrix, benchmark smoke runs, fuzzing);
//! - `ci`: `setup` then `test`;
//! - `run`, `demo` ([`run`]): set up only what building and running the agent needs,
//!   build, and run it (arguments after `--` go to `cellwatch run` or `cellwatch demo`);
//! - `bench` ([`bench`]): benchmarks recorded in BENCHMARKS.md;
//! - `vm-test` ([`vm`]): the privileged tests on other kernels, under qemu.
//!
//! The modules import top-down: main -> {setup, checks, run, bench, vm} -> [`util`], with
//! checks also calling bench (smoke runs) and vm (the matrix). util imports nothing.
//! [`index`] holds the tests that keep the README's map and the docs' lists true.

mod bench;
mod checks;
#[cfg(test)]
mod index;
mod run;
mod setup;
mod util;
mod vm;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "cellwatch project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building, running and testing need, saying why (idempotent).
    Setup,
    /// Run every check: fmt, clippy (host and eBPF), unit and privileged tests, cargo deny.
    Test,
    /// Setup, then test: what `.ci/run` calls.
    Ci,
    /// Run a benchmark and record it in BENCHMARKS.md.
    Bench {
        #[command(subcommand)]
        which: bench::Bench,
    },
    /// (Used by `bench scale`.) Hold connections open until stdin closes.
    #[command(hide = true)]
    Hold {
        #[arg(long)]
        count: usize,
        #[arg(long)]
        helper: u8,
        #[arg(long)]
        targets: String,
    },
    /// Set up what building and running need, build in release mode, and run the agent.
    Run {
        /// Arguments for `cellwatch run`, e.g. `-- --config cells.yaml`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the counting, cell, telemetry, restart, live, Service and ladder tests on other
    /// kernels, each booted under qemu (default: Debian's cloud kernels 6.1 and 6.12),
    /// and the live, telemetry, Service and restart tests again with the fallbacks forced.
    VmTest {
        /// Kernel series (`6.1`: the newest Debian cloud package of it) or vmlinuz paths.
        kernels: Vec<String>,
    },
    /// Set up what building and running need, build, and run `cellwatch demo` (sample
    /// traffic, leaks included).
    Demo {
        /// Arguments for `cellwatch demo`, e.g. `-- --duration 60`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// A failed step ends the task with one line (its error and causes, joined), never a
/// backtrace, whatever `RUST_BACKTRACE` says: the step's own output above it has the
/// detail.
fn main() -> std::process::ExitCode {
    // In a kernel-matrix VM this binary is /init.
    if std::process::id() == 1 {
        vm::init::main();
    }
    match task(Cli::parse().task) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn task(task: Task) -> Result<()> {
    match task {
        Task::Setup => setup::all(),
        Task::Test => checks::test(),
        Task::Ci => {
            setup::all()?;
            checks::test()
        }
        Task::Bench { which } => bench::run(which),
        Task::Hold { count, helper, targets } => bench::hold(count, helper, &targets),
        Task::Run { args } => {
            setup::for_agent()?;
            run::agent("run", &args)
        }
        Task::Demo { args } => {
            setup::for_agent()?;
            run::agent("demo", &args)
        }
        Task::VmTest { kernels } => vm::vm_test(&kernels),
    }
}
