//! `cargo xtask bench micro`: the criterion microbenchmarks of the agent's pure hot paths
//! (`agent-core/benches/hot_paths.rs`), their estimates recorded in BENCHMARKS.md.
use std::process::Command;

use anyhow::{Result, bail};

use super::record;
use crate::util::{ok, root, step};

pub(crate) fn micro() -> Result<()> {
    std::env::set_current_dir(root())?;
    step("criterion: cargo bench -p agent-core --bench hot_paths");
    let out = Command::new("cargo")
        .args(["bench", "--locked", "-p", "agent-core", "--bench", "hot_paths", "--"])
        .args(["--warm-up-time", "1", "--measurement-time", "3", "--noplot"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("cargo bench failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let rows = parse(&text);
    if rows.is_empty() {
        bail!("no criterion estimates in the output:\n{text}");
    }
    let mut table = String::from("| benchmark | time, estimate [95% interval] |\n|---|---|\n");
    for (name, mid, lo, hi) in &rows {
        ok(&format!("{name}: {mid}"));
        table.push_str(&format!("| {name} | {mid} [{lo}, {hi}] |\n"));
    }
    let section = format!(
        "### Microbenchmarks of the hot paths\n\n\
         `cargo xtask bench micro` (criterion, `agent-core/benches/hot_paths.rs`; 1 s warm-up, 3 s \
         measurement each):\n\n{table}\n\
         A pair key is one (src cell, dst cell, direction, verdict); `families` turns the \
         kernel snapshot into samples and histograms, and `render text` is that plus the \
         Prometheus text encoding: what a scrape costs the agent.\n"
    );
    record::update("micro", &section)?;
    ok("BENCHMARKS.md updated");
    Ok(())
}

/// (name, estimate, low, high) from criterion's `time: [low est high]` lines; the name is
/// on the same line or the one before.
fn parse(text: &str) -> Vec<(String, String, String, String)> {
    let mut rows = Vec::new();
    let mut last_name = String::new();
    for line in text.lines() {
        let Some((before, after)) = line.split_once("time:") else {
            if !line.trim().is_empty() && !line.starts_with(' ') {
                last_name = line.trim().to_owned();
            }
            continue;
        };
        let name =
            if before.trim().is_empty() { last_name.clone() } else { before.trim().to_owned() };
        let inner = after.trim().trim_start_matches('[').trim_end_matches(']');
        let t: Vec<&str> = inner.split_whitespace().collect();
        if t.len() == 6 {
            let v = |i: usize| format!("{} {}", t[i], t[i + 1]);
            rows.push((name, v(2), v(0), v(4)));
        }
    }
    rows
}

#[cfg(test)]
mod tests;
