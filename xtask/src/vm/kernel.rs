//! The kernels of the matrix: a vmlinuz path as given, or the newest Debian cloud kernel
//! of a series (`6.1`, `6.12`), downloaded with `apt-get download` and unpacked once
//! under `target/vm/kernels/`.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::util::{run, step};

/// The vmlinuz of `spec`: a path as given, or the newest Debian cloud kernel of a series.
pub(super) fn kernel(spec: &str, work: &Path) -> Result<PathBuf> {
    let as_path = Path::new(spec);
    if as_path.is_file() {
        return Ok(as_path.to_owned());
    }
    let package = newest_package(spec)?;
    let dir = work.join("kernels").join(&package);
    if let Some(v) = vmlinuz_in(&dir) {
        return Ok(v);
    }
    step(&format!("download {package}"));
    std::fs::create_dir_all(&dir)?;
    let status =
        Command::new("apt-get").args(["download", "-qq", &package]).current_dir(&dir).status()?;
    if !status.success() {
        bail!("apt-get download {package} failed");
    }
    let deb = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("the download left no .deb")?;
    run(&["dpkg-deb", "-x", deb.to_str().unwrap_or_default(), dir.to_str().unwrap_or_default()])?;
    std::fs::remove_file(&deb)?;
    vmlinuz_in(&dir).with_context(|| format!("{package} holds no boot/vmlinuz-*"))
}

fn vmlinuz_in(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir.join("boot"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("vmlinuz-")))
}

/// `linux-image-<series>.*-cloud-amd64` with the highest version in the archive.
fn newest_package(series: &str) -> Result<String> {
    let out = Command::new("apt-cache").args(["pkgnames", "linux-image-"]).output()?;
    let prefix = format!("linux-image-{series}.");
    let version = |name: &str| -> Vec<u64> {
        name.trim_start_matches("linux-image-")
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect()
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|n| n.starts_with(&prefix) && n.ends_with("-cloud-amd64"))
        .max_by_key(|n| version(n))
        .map(str::to_owned)
        .with_context(|| {
            format!("no Debian package linux-image-{series}.*-cloud-amd64 (is the series right?)")
        })
}
