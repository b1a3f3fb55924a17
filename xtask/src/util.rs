//! What every task uses: progress lines, the repository root, running commands, building
//! the agent. A leaf: it imports nothing from the rest of xtask.
use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};

/// A step's heading: `==> what`.
pub(crate) fn step(what: &str) {
    println!("==> {what}");
}

/// A line under a step's heading.
pub(crate) fn ok(what: &str) {
    println!("    {what}");
}

/// The repository (workspace) root.
pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether this process runs as root (effective uid 0).
pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|v| v.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Runs a command with the terminal's stdout and stderr; fails unless it succeeds.
pub(crate) fn run(cmd: &[&str]) -> Result<()> {
    run_env(cmd, &[])
}

/// [`run`] with extra environment variables.
pub(crate) fn run_env(cmd: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let status = Command::new(cmd[0])
        .args(&cmd[1..])
        .envs(env.iter().copied())
        .status()
        .with_context(|| format!("cannot start `{}`", cmd.join(" ")))?;
    if !status.success() {
        bail!("`{}` failed ({status})", cmd.join(" "));
    }
    Ok(())
}

/// A command's stdout with `env` set, when it runs and succeeds.
pub(crate) fn output_env(cmd: &[&str], env: &[(&str, &str)]) -> Option<String> {
    let out = Command::new(cmd[0]).args(&cmd[1..]).envs(env.iter().copied()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A command's stdout, when it runs and succeeds.
pub(crate) fn output(cmd: &[&str]) -> Option<String> {
    output_env(cmd, &[])
}

/// Builds the agent (`cargo build -p agent`, in release mode when asked) and returns the
/// path of its binary.
pub(crate) fn build_agent(release: bool) -> Result<PathBuf> {
    let mut cmd = vec!["cargo", "build", "--locked", "-p", "agent"];
    if release {
        cmd.push("--release");
    }
    run(&cmd)?;
    Ok(root().join(if release { "target/release" } else { "target/debug" }).join("cellwatch"))
}
