//! `cargo xtask run` and `cargo xtask demo`: build the agent in release mode and run one
//! of its commands, with the arguments given after `--`.
use anyhow::Result;

use crate::util::{build_agent, root, run, step};

/// Builds the agent in release mode and runs `cellwatch COMMAND ARGS...`.
pub(crate) fn agent(command: &str, args: &[String]) -> Result<()> {
    std::env::set_current_dir(root())?;
    step("build the agent (release)");
    let bin = build_agent(true)?;
    let mut argv = vec![command.to_owned()];
    argv.extend(args.iter().cloned());
    step(&format!("cellwatch {}", argv.join(" ")));
    let mut cmd: Vec<&str> = vec![bin.to_str().unwrap_or("cellwatch")];
    cmd.extend(argv.iter().map(String::as_str));
    run(&cmd)
}
