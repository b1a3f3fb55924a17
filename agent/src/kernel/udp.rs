//! UDP flows from the agent's side: the two cgroup skb programs on their hooks (the
//! optional feature `udp`: a kernel that refuses them, or `--without udp`, leaves UDP
//! and DNS uncounted and TCP as it was), and the flows idle for `--udp-idle` taken out
//! of the flow table (the programs already treat them as ended; this frees their room).
use std::{fs::File, io, path::Path, time::Duration};

use agent_common::FlowKey;
use tracing::debug;

use super::{
    attach,
    error::{KernelError, map_err},
    features::{Feature, Found, Without},
    maps::Maps,
    object::{self, UDP_PROGRAMS},
    pins::{self, PinnedState},
};
use crate::host::{bpffs::PinDir, sys};

/// Puts the UDP programs on their hooks (or keeps the pinned ones), unless `--without udp`
/// says otherwise; then takes down any link a run before pinned. A program the kernel
/// refuses is no error: the finding says so.
pub(super) fn install(
    ebpf: &mut aya::Ebpf,
    dir: &PinDir,
    state: PinnedState,
    cgroup_root: &Path,
    without: &Without,
) -> Result<Found, KernelError> {
    if without.has(Feature::Udp) {
        detach(dir)?;
        return Ok(Found::Forced);
    }
    let cgroup = File::open(cgroup_root)
        .map_err(|source| KernelError::Cgroup { path: cgroup_root.to_owned(), source })?;
    for (name, hook) in UDP_PROGRAMS {
        let path = dir.link(name);
        let pinned = path.exists();
        if pinned && state == PinnedState::Adopted {
            continue;
        }
        let on_hook = attach::load(ebpf, name, hook).and_then(|()| {
            if pinned {
                let prog = ebpf.program(name).ok_or(KernelError::Missing(name))?;
                let fd = prog.fd().map_err(|source| KernelError::Program { name, source })?;
                pins::update_link(dir, name, fd)
                    .map_err(|source| KernelError::Pin { path: path.clone(), source })
            } else {
                let link = attach::attach(ebpf, name, hook, &cgroup, cgroup_root)?;
                attach::pin(link, &path)
            }
        });
        if let Err(e) = on_hook {
            // Both or neither: one direction alone would count half of every flow.
            detach(dir)?;
            return Ok(Found::Refused(e.to_string()));
        }
        debug!(program = name, pinned = %path.display(), "program on its hook");
    }
    Ok(Found::Works)
}

/// Takes the UDP programs off their hooks: their pins were all that held the links.
fn detach(dir: &PinDir) -> Result<(), KernelError> {
    for (name, _) in UDP_PROGRAMS {
        let path = dir.link(name);
        match std::fs::remove_file(&path) {
            Ok(()) => debug!(program = name, "UDP program taken off its hook"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(KernelError::Pin { path, source }),
        }
    }
    Ok(())
}

/// Removes the flows silent for longer than `idle` from the flow table, and returns how
/// many flows it holds after. The keys are gathered first: deleting while walking would
/// restart the kernel's walk.
pub(super) fn expire(m: &mut Maps, idle: Duration) -> Result<u64, KernelError> {
    let now = sys::monotonic_ns();
    let idle_ns = u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX);
    let mut stale: Vec<FlowKey> = Vec::new();
    let mut held = 0u64;
    for item in m.udp_flows.iter() {
        let (key, flow) = match item {
            Ok(kv) => kv,
            // Removed by the kernel's own reuse between the walk's two steps.
            Err(aya::maps::MapError::KeyNotFound) => continue,
            Err(e) => return Err(map_err(object::UDP_FLOWS)(e)),
        };
        held += 1;
        if now.saturating_sub(flow.last_ns) > idle_ns {
            stale.push(key);
        }
    }
    for key in &stale {
        match m.udp_flows.remove(key) {
            Ok(()) => held = held.saturating_sub(1),
            Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(object::UDP_FLOWS)(e)),
        }
    }
    m.udp_held = held;
    Ok(held)
}
