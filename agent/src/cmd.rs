//! The commands, and what a user sees when one fails: one sentence on stderr and an
//! exit code (2 for a config that does not validate and when `drain-status` cannot tell,
//! 1 otherwise). `report` and `drain-status` read Prometheus through `prometheus_api`.
#![forbid(unsafe_code)]

mod check_config;
mod demo;
mod drain_status;
mod fetch;
mod prometheus_api;
mod report;
mod run;
mod top;
mod uninstall;

use std::process::ExitCode;

use clap::Parser;

use crate::{
    cli::{Cli, Command},
    logging,
};

/// Exit code for a config that does not validate (the `check-config` contract).
const EXIT_CONFIG: u8 = 2;
/// Exit code when `drain-status` cannot tell whether the cell is empty (its contract).
const EXIT_CANNOT_TELL: u8 = 2;

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo logs to a file of its own unless `--verbose`: it sets logging up itself.
    if !matches!(cli.command, Command::Demo(_)) {
        logging::init(cli.log_format);
    }
    match dispatch(cli.command, cli.log_format) {
        Ok(code) => code,
        Err(e) => {
            let code = match e.downcast_ref::<run::RunError>() {
                Some(run::RunError::Config(_) | run::RunError::Without(_)) => EXIT_CONFIG,
                _ if e.is::<agent_core::config::ConfigError>() => EXIT_CONFIG,
                _ if e.is::<drain_status::DrainError>() => EXIT_CANNOT_TELL,
                _ => 1,
            };
            if e.is::<agent_core::config::ConfigError>() {
                // `check-config`: every line is `FILE:LINE:COL: problem`, the first too.
                eprintln!("{}", sentence(&e));
            } else {
                eprintln!("cellwatch: {}", sentence(&e));
            }
            ExitCode::from(code)
        }
    }
}

/// The error and its causes as one line, leaving out a cause the message already gives.
fn sentence(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

/// The command's exit code when it ran to its end.
fn dispatch(command: Command, log_format: logging::LogFormat) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => run::run(&args)?,
        Command::Demo(args) => demo::demo(&args, log_format)?,
        Command::Top(args) => top::top(&args)?,
        Command::Report(args) => report::report(&args)?,
        Command::DrainStatus(args) => return Ok(drain_status::drain_status(&args)?),
        Command::CheckConfig { file } => check_config::check_config(&file)?,
        Command::Uninstall { bpffs } => uninstall::uninstall(&bpffs)?,
    }
    Ok(ExitCode::SUCCESS)
}
