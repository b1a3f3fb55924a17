//! Where the socket fields the programs read live in this kernel: found in its BTF at
//! start (they move between kernel builds) and handed to the programs in `FIELDS`.
use agent_common::FieldOffsets;
use agent_core::btf::{self, Btf};
use tracing::debug;

use super::{
    error::{KernelError, map_err},
    maps::Maps,
    object,
};

/// The kernel's BTF, where the preflight checks found it.
const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// Finds every field in the running kernel's BTF and writes the offsets for the programs.
pub(super) fn write(maps: &mut Maps) -> Result<FieldOffsets, KernelError> {
    let data = std::fs::read(VMLINUX)
        .map_err(|e| KernelError::Btf(format!("cannot read {VMLINUX}: {e}")))?;
    let parsed = Btf::parse(&data).map_err(|e| KernelError::Btf(format!("{VMLINUX}: {e}")))?;
    let offsets = btf::socket_fields(&parsed).map_err(|e| KernelError::Btf(e.to_string()))?;
    debug!(?offsets, "socket fields found in the kernel's BTF");
    maps.fields.set(0, offsets, 0).map_err(map_err(object::FIELDS))?;
    Ok(offsets)
}
