//! `cargo xtask`: the project's own tasks, so a fresh machine needs one command each.
//!
//! - `setup`: install what building and testing cellwatch needs (idempotent: what is there stays);
//! - `test`: every check CI runs (format, lints, unit tests, privileged integration
//!   tests, the kernel matrix, licences and sources);
//! - `ci`: `setup` then `test`;
//! - `run`: `setup`, build, and run the agent (arguments after `--` go to `cellwatch run`).
//! - `demo`: the same for `cellwatch demo`.
//! - `vm-test`: the privileged tests on other kernels, under qemu (see [`vm`]).

mod bench;
mod benchfile;
mod bulk;
mod churn;
mod micro;
mod scale;
mod setup;
mod tasks;
mod vm;
mod vm_init;

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
    /// Install the eBPF toolchain and test tools (idempotent).
    Setup,
    /// Run every check: fmt, clippy (host and eBPF), unit and privileged tests, cargo deny.
    Test,
    /// Setup, then test: what `.ci/run` calls.
    Ci,
    /// Run a benchmark and record it in BENCHMARKS.md.
    Bench {
        #[command(subcommand)]
        which: Bench,
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
    /// Setup, build in release mode, and run the agent.
    Run {
        /// Arguments for `cellwatch run`, e.g. `-- --config cells.yaml`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the connection-counting, cell-verdict, telemetry and restart tests on other
    /// kernels, each booted under qemu (default: Debian's cloud kernels 6.1 and 6.12).
    VmTest {
        /// Kernel series (`6.1`: the newest Debian cloud package of it) or vmlinuz paths.
        kernels: Vec<String>,
    },
    /// Setup, build in release mode, and run `cellwatch demo` (sample traffic, leaks included).
    Demo {
        /// Arguments for `cellwatch demo`, e.g. `-- --duration 60`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Config load at 1,000 cells and 100,000 prefixes: parse, validate, write to the kernel.
    ConfigLoad,
    /// One connection moving several GiB: no agent, audit, enforce, and tcplife.
    Bulk {
        /// One short run of each variant, nothing recorded (what CI runs).
        #[arg(long)]
        smoke: bool,
    },
    /// Criterion microbenchmarks of the hot paths, recorded.
    Micro,
    /// 10, 100 and 1,000 cells, and 50,000 connections held: render time, memory.
    Scale {
        /// A small run, nothing recorded (what CI runs).
        #[arg(long)]
        smoke: bool,
    },
    /// Connection churn between two cells: no agent, audit, enforce, and tcplife.
    Churn {
        /// One short run of each variant, nothing recorded (what CI runs).
        #[arg(long)]
        smoke: bool,
    },
}

fn main() -> Result<()> {
    // In a kernel-matrix VM this binary is /init.
    if std::process::id() == 1 {
        vm_init::main();
    }
    match Cli::parse().task {
        Task::VmTest { kernels } => vm::vm_test(&kernels),
        Task::Setup => setup::all(),
        Task::Test => tasks::test(),
        Task::Ci => {
            setup::all()?;
            tasks::test()
        }
        Task::Bench { which: Bench::ConfigLoad } => bench::config_load(),
        Task::Bench { which: Bench::Churn { smoke } } => churn::churn(smoke),
        Task::Bench { which: Bench::Bulk { smoke } } => bulk::bulk(smoke),
        Task::Bench { which: Bench::Scale { smoke } } => scale::scale(smoke),
        Task::Bench { which: Bench::Micro } => micro::micro(),
        Task::Hold { count, helper, targets } => scale::hold(count, helper, &targets),
        Task::Run { args } => {
            setup::all()?;
            tasks::run("run", &args)
        }
        Task::Demo { args } => {
            setup::all()?;
            tasks::run("demo", &args)
        }
    }
}
