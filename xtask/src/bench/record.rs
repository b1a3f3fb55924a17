//! Writing BENCHMARKS.md: each benchmark owns one section between markers, replaced in
//! place when it is re-run, so results from different commands live side by side.
use anyhow::Result;

use crate::util::root;

/// Puts `section` between the markers of benchmark `name`, with the machine it ran on.
pub(super) fn update(name: &str, section: &str) -> Result<()> {
    let path = root().join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        "# Benchmarks\n\nEvery figure is measured side by side in one run on this project's CI machine \
         kind (2 cores, noisy neighbours): read the ratios, not the absolute times. Each section \
         names the command that reproduces it.\n"
            .to_owned()
    });
    let (begin, end) = (format!("<!-- bench:{name} -->"), format!("<!-- /bench:{name} -->"));
    let block = format!("{begin}\n{}\n\n_Machine: {}._\n{end}", section.trim_end(), machine());
    let new = match (text.find(&begin), text.find(&end)) {
        (Some(a), Some(b)) if a < b => format!("{}{block}{}", &text[..a], &text[b + end.len()..]),
        _ => format!("{}\n\n{block}\n", text.trim_end()),
    };
    std::fs::write(path, new)?;
    Ok(())
}

fn machine() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{cpus} CPUs, kernel {}", kernel.trim())
}
