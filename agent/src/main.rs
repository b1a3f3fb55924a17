//! The `cellwatch` binary: parse the command line, run the command, and turn any error
//! into one sentence on stderr and an exit code (2 for config problems, 1 otherwise).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use agent::{
    cli::{Cli, Command},
    config::Config,
    demo, logging,
    run::{self, RunError},
    uninstall,
};
use clap::Parser;

/// Exit code for a config that does not validate (the `check-config` contract).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = match e.downcast_ref::<RunError>() {
                Some(RunError::Config(_)) => EXIT_CONFIG,
                _ if e.is::<agent::config::ConfigError>() => EXIT_CONFIG,
                _ => 1,
            };
            eprintln!("cellwatch: {}", sentence(&e));
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

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => run::run(&args)?,
        Command::Demo(args) => demo::demo(&args)?,
        Command::CheckConfig { file } => {
            let cfg = Config::load(&file)?;
            println!("{}: ok: {}", file.display(), summary(&cfg));
        }
        Command::Uninstall { bpffs } => match uninstall::uninstall(&bpffs)? {
            uninstall::Removed { objects: 0, .. } => {
                println!("nothing to uninstall under {}", bpffs.display())
            }
            uninstall::Removed { objects, still_loaded } => {
                println!("removed {objects} pinned objects under {}", bpffs.display());
                if still_loaded > 0 {
                    println!(
                        "{still_loaded} programs are detached but still held open by a running \
                         process (a `cellwatch run` on this directory?); they go when it exits"
                    );
                }
            }
        },
    }
    Ok(())
}

fn summary(cfg: &Config) -> String {
    let globals: Vec<_> = cfg.cells.iter().filter(|c| c.global).map(|c| c.name.as_str()).collect();
    let v6 = cfg
        .cells
        .iter()
        .flat_map(|c| &c.cidrs)
        .filter(|n| matches!(n, ipnet::IpNet::V6(_)))
        .count();
    let enforced = match &cfg.enforce_cells {
        None => "all cells".to_owned(),
        Some(c) if c.is_empty() => "no cells".to_owned(),
        Some(c) => c.join(", "),
    };
    format!(
        "{} cells (global: {}), {} prefixes ({} IPv4, {} IPv6), {} allow rules, mode {} (enforce \
         applies to {}), external peers: {}, {} ignored ranges",
        cfg.cells.len(),
        if globals.is_empty() { "none".to_owned() } else { globals.join(", ") },
        cfg.prefix_count(),
        cfg.prefix_count() - v6,
        v6,
        cfg.allow.len(),
        cfg.mode,
        enforced,
        cfg.external,
        cfg.ignore_cidrs.len(),
    )
}
