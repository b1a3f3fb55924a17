//! Putting each program on its hook, as `run` found the node: attached and pinned anew,
//! left as it runs (adopted), or swapped for this build's program on its pinned link.
//! Hooks: `connect4`/`connect6` and `sock_ops` on the cgroup v2 root, and, while
//! connections older than the agent are open, the `tcp:tcp_destroy_sock` tracepoint.
use std::{fs::File, path::Path};

use aya::{
    Ebpf,
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, ProgramError, SockOps,
        TracePoint,
        links::{FdLink, LinkError},
    },
};
use tracing::{debug, error};

use super::{
    error::KernelError,
    object::{Hook, NEXT_SUFFIX, PROGRAMS, SEEDED_CLOSE, TCP},
    pins::{self, PinnedState},
};
use crate::host::bpffs::PinDir;

/// What happened to each program.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Installed {
    pub(super) attached: usize,
    pub(super) adopted: usize,
    pub(super) replaced: usize,
}

pub(super) fn install(
    ebpf: &mut Ebpf,
    dir: &PinDir,
    state: PinnedState,
    cgroup_root: &Path,
) -> Result<Installed, KernelError> {
    let cgroup = File::open(cgroup_root)
        .map_err(|source| KernelError::Cgroup { path: cgroup_root.to_owned(), source })?;
    let mut done = Installed::default();
    // The seeded-close tracepoint goes with the others only while it is pinned (while
    // connections older than the agent are open).
    let seeded_close = dir.link(SEEDED_CLOSE.0).exists().then_some(SEEDED_CLOSE);
    for (name, hook) in PROGRAMS.into_iter().chain(seeded_close) {
        let path = dir.link(name);
        let pinned = path.exists();
        if pinned && state == PinnedState::Adopted {
            done.adopted += 1;
            continue;
        }
        load(ebpf, name, hook)?;
        match (pinned, hook) {
            (false, _) => {
                let link = attach(ebpf, name, hook, &cgroup, cgroup_root)?;
                pin(link, &path)?;
                done.attached += 1;
            }
            // A perf-event link cannot change its program: the new one is attached
            // beside it and its pin renamed over the old, which detaches that. The
            // tracepoint program is idempotent (a seeded connection is counted closed
            // by whichever removes it from SEEDED), so the overlap counts nothing twice.
            (true, Hook::Tracepoint(_)) => {
                let link = attach(ebpf, name, hook, &cgroup, cgroup_root)?;
                let next = dir.link(&format!("{name}{NEXT_SUFFIX}"));
                pin(link, &next)?;
                std::fs::rename(&next, &path)
                    .map_err(|source| KernelError::Pin { path: path.clone(), source })?;
                done.replaced += 1;
            }
            (true, _) => {
                let prog = ebpf.program(name).ok_or(KernelError::Missing(name))?;
                let fd = prog.fd().map_err(|source| KernelError::Program { name, source })?;
                pins::update_link(dir, name, fd)
                    .map_err(|source| KernelError::Pin { path: path.clone(), source })?;
                done.replaced += 1;
            }
        }
        debug!(program = name, pinned = %path.display(), "program on its hook");
    }
    Ok(done)
}

/// Puts the seeded-close tracepoint on its hook and pins it (the agent seeded
/// connections older than itself); nothing to do when it is pinned already.
pub(super) fn attach_seeded_close(
    ebpf: &mut Ebpf,
    dir: &PinDir,
    cgroup_root: &Path,
) -> Result<(), KernelError> {
    let (name, hook) = SEEDED_CLOSE;
    let path = dir.link(name);
    if path.exists() {
        return Ok(());
    }
    let cgroup = File::open(cgroup_root)
        .map_err(|source| KernelError::Cgroup { path: cgroup_root.to_owned(), source })?;
    load(ebpf, name, hook)?;
    pin(attach(ebpf, name, hook, &cgroup, cgroup_root)?, &path)
}

/// Takes the seeded-close tracepoint off its hook (no seeded connection is left): its
/// pin was all that held the link.
pub(super) fn detach_seeded_close(dir: &PinDir) -> Result<bool, KernelError> {
    let path = dir.link(SEEDED_CLOSE.0);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(KernelError::Pin { path, source }),
    }
}

pub(super) fn load(ebpf: &mut Ebpf, name: &'static str, hook: Hook) -> Result<(), KernelError> {
    let prog = ebpf.program_mut(name).ok_or(KernelError::Missing(name))?;
    let typed = |source| KernelError::Program { name, source };
    let loaded = match hook {
        Hook::Connect => <&mut CgroupSockAddr>::try_from(prog).map_err(typed)?.load(),
        Hook::SockOps => <&mut SockOps>::try_from(prog).map_err(typed)?.load(),
        Hook::Tracepoint(_) => <&mut TracePoint>::try_from(prog).map_err(typed)?.load(),
        Hook::Skb(_) => <&mut CgroupSkb>::try_from(prog).map_err(typed)?.load(),
    };
    loaded.map_err(|e| refused(name, e))
}

/// Attaches a loaded program and hands its link over, to be pinned.
pub(super) fn attach(
    ebpf: &mut Ebpf,
    name: &'static str,
    hook: Hook,
    cgroup: &File,
    cgroup_root: &Path,
) -> Result<FdLink, KernelError> {
    let prog = ebpf.program_mut(name).ok_or(KernelError::Missing(name))?;
    let typed = |source| KernelError::Program { name, source };
    let what = match hook {
        Hook::Connect | Hook::SockOps | Hook::Skb(_) => {
            format!("{name} to {}", cgroup_root.display())
        }
        Hook::Tracepoint(event) => format!("{name} to the tracepoint {TCP}:{event}"),
    };
    let failed = |source| KernelError::Attach { what: what.clone(), source };
    let unpinnable = |source: LinkError| KernelError::Unpinnable { what: what.clone(), source };
    // On kernels >= 5.7 aya attaches cgroup programs with a bpf_link, which coexists with
    // other tools' programs on the cgroup, and the kernel refuses any attach flag for it
    // (EINVAL), so the mode must be the flag-less `Single`.
    match hook {
        Hook::Connect => {
            let p = <&mut CgroupSockAddr>::try_from(prog).map_err(typed)?;
            let id = p.attach(cgroup, CgroupAttachMode::Single).map_err(failed)?;
            FdLink::try_from(p.take_link(id).map_err(failed)?).map_err(unpinnable)
        }
        Hook::SockOps => {
            let p = <&mut SockOps>::try_from(prog).map_err(typed)?;
            let id = p.attach(cgroup, CgroupAttachMode::Single).map_err(failed)?;
            FdLink::try_from(p.take_link(id).map_err(failed)?).map_err(unpinnable)
        }
        Hook::Tracepoint(event) => {
            let p = <&mut TracePoint>::try_from(prog).map_err(typed)?;
            let id = p.attach(TCP, event).map_err(failed)?;
            FdLink::try_from(p.take_link(id).map_err(failed)?).map_err(unpinnable)
        }
        Hook::Skb(egress) => {
            let p = <&mut CgroupSkb>::try_from(prog).map_err(typed)?;
            let at =
                if egress { CgroupSkbAttachType::Egress } else { CgroupSkbAttachType::Ingress };
            let id = p.attach(cgroup, at, CgroupAttachMode::Single).map_err(failed)?;
            FdLink::try_from(p.take_link(id).map_err(failed)?).map_err(unpinnable)
        }
    }
}

/// Pins a link: it stays attached until its pin is removed (`cellwatch uninstall`).
pub(super) fn pin(link: FdLink, path: &Path) -> Result<(), KernelError> {
    link.pin(path).map(drop).map_err(|e| KernelError::Pin {
        path: path.to_owned(),
        source: match e {
            aya::pin::PinError::SyscallError(s) => s.io_error,
            other => std::io::Error::other(other.to_string()),
        },
    })
}

/// A failed program load. A verifier rejection is logged in full (it is what a kernel
/// developer needs) and summed up by the verifier's own reason. EPERM with a log that
/// looked at no instruction is no verdict of the verifier: the kernel's policy or build
/// refuses the program kind, and the error says so.
pub(super) fn refused(name: &'static str, e: ProgramError) -> KernelError {
    match e {
        ProgramError::LoadError { io_error, verifier_log } => {
            let log = verifier_log.to_string();
            if io_error.raw_os_error() == Some(libc::EPERM) && looked_at_nothing(&log) {
                debug!(program = name, error = %io_error, verifier_log = %log, "program refused");
                return KernelError::Refused { name, source: io_error };
            }
            error!(program = name, error = %io_error, verifier_log = %log, "the verifier refused a program");
            KernelError::Verifier {
                name,
                reason: verifier_reason(&log).unwrap_or_else(|| io_error.to_string()),
                source: io_error,
            }
        }
        source => KernelError::Program { name, source },
    }
}

/// Whether a verifier log shows that no instruction was looked at (empty, or
/// "processed 0 insns").
fn looked_at_nothing(log: &str) -> bool {
    log.trim().is_empty() || log.contains("processed 0 insns")
}

/// The verifier's verdict: the last line that is neither an instruction nor a statistic.
pub(super) fn verifier_reason(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| !l.starts_with(';') && !l.starts_with(|c: char| c.is_ascii_digit()))
        .filter(|l| {
            !["verification time", "processed ", "stack depth", "func#", "R1"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .map(str::to_owned)
        .next()
}

#[cfg(test)]
mod tests;
