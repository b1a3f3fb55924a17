//! Builds the eBPF programs (`agent-ebpf`, nightly, bpfel target) with aya-build, so a
//! plain `cargo build` of the agent yields a binary with its programs embedded.
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|p| p.join("agent-ebpf"))
        .ok_or_else(|| anyhow::anyhow!("agent crate has no parent directory"))?;
    let root = root.to_str().ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", root.display()))?;
    println!("cargo:rerun-if-changed={root}/../agent-common/src");
    aya_build::build_ebpf(
        [Package { name: "agent-ebpf", root_dir: root, ..Default::default() }],
        Toolchain::default(),
    )
}
