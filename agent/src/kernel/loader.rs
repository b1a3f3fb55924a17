//! Loading the embedded eBPF object and attaching its programs: `sock_ops` on the cgroup
//! v2 root, `tcp:tcp_receive_reset` as a tracepoint.
use std::{fs::File, os::fd::AsRawFd, path::PathBuf, time::Instant};

use agent_common::{
    CELLS_V4_CAPACITY, CELLS_V6_CAPACITY, ConnState, Owner, PAIR_STATS_CAPACITY, POLICY_CAPACITY,
    PairKey, PairStats, SETTING_DESTROY_COOKIE_OFFSET, SETTING_EVENT_RATE,
    SETTING_RST_COOKIE_OFFSET,
};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, PerCpuHashMap},
    programs::{CgroupAttachMode, CgroupSockAddr, ProgramError, SockOps, TracePoint},
};
use tokio::io::unix::AsyncFd;
use tracing::{debug, error, info, warn};

use super::{
    Kernel,
    cellmap::{self, CellSet, Generation},
};
use crate::{policy::Compiled, preflight::TRACEFS_PATH};

/// The eBPF object, built from `agent-ebpf` by this crate's build script.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cellwatch"));

const SOCKOPS: &str = "cellwatch_sockops";
const CONNECT4: &str = "cellwatch_connect4";
const CONNECT6: &str = "cellwatch_connect6";
const RST: &str = "cellwatch_rst";
const DESTROY: &str = "cellwatch_destroy";
const TCP: &str = "tcp";
const RST_EVENT: &str = "tcp_receive_reset";
const DESTROY_EVENT: &str = "tcp_destroy_sock";

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub cgroup_root: PathBuf,
    /// Capacity of the live-connection table.
    pub conn_capacity: u32,
    /// Size of the violation-event ring buffer, bytes (a power of two, page multiple).
    pub events_bytes: u32,
    /// Violation events per cell pair and direction per second.
    pub event_rate: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("the kernel refused cellwatch's eBPF object: {0}")]
    Load(#[source] aya::EbpfError),
    #[error(
        "the kernel's verifier refused the eBPF program {name} ({reason}); the full verifier \
         log is in the agent's log"
    )]
    Verifier { name: &'static str, reason: String },
    #[error("the kernel refused the eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("could not attach {what}: {source}")]
    Attach {
        what: String,
        #[source]
        source: ProgramError,
    },
    #[error("could not open the cgroup v2 root {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the eBPF object has no {0}: the agent and its embedded programs do not match")]
    Missing(&'static str),
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

pub(super) fn map_err(name: &'static str) -> impl FnOnce(MapError) -> KernelError {
    move |source| KernelError::Map { name, source }
}

/// Typed handles on the maps userspace reads and writes.
pub(super) struct Maps {
    pub(super) pair_stats: PerCpuHashMap<MapData, PairKey, PairStats>,
    pub(super) conns: HashMap<MapData, u64, ConnState>,
    pub(super) owners: HashMap<MapData, u64, Owner>,
    pub(super) seed_opened: HashMap<MapData, PairKey, [u64; 2]>,
    pub(super) counters: PerCpuArray<MapData, u64>,
    pub(super) settings: Array<MapData, u32>,
    /// The two cell-map sets, A and B.
    pub(super) sets: [CellSet; 2],
    pub(super) generation: Generation,
    pub(super) capacity: Capacity,
}

impl Maps {
    /// The config the programs read now.
    pub(super) fn active(&self) -> &Compiled {
        &self.sets[self.generation.active].holds
    }
}

/// Map sizes as loaded.
#[derive(Debug, Clone, Copy)]
pub(super) struct Capacity {
    pub(super) conns: u32,
    pub(super) pair_stats: u32,
    pub(super) cells_v4: u32,
    pub(super) cells_v6: u32,
    pub(super) policy: u32,
}

pub(super) fn load(opts: &LoadOptions, initial: &Compiled) -> Result<Kernel, KernelError> {
    let mut ebpf = EbpfLoader::new()
        .map_max_entries("CONNS", opts.conn_capacity)
        .map_max_entries("OWNERS", opts.conn_capacity)
        .map_max_entries("EVENTS", opts.events_bytes)
        .load(EBPF_OBJECT)
        .map_err(KernelError::Load)?;
    let log_task = spawn_log_forwarder(&mut ebpf);

    let mut maps = take_maps(&mut ebpf, opts)?;
    let events = take(&mut ebpf, "EVENTS")?;
    // Settings and the cell map go in before anything is attached, so the very first
    // connection is judged against the full config.
    let settings = &mut maps.settings;
    settings.set(SETTING_EVENT_RATE, opts.event_rate, 0).map_err(map_err("SETTINGS"))?;
    match cookie_offset(RST_EVENT) {
        Some(off) => {
            settings.set(SETTING_RST_COOKIE_OFFSET, off, 0).map_err(map_err("SETTINGS"))?
        }
        None => warn!(
            "tcp:{RST_EVENT} has no sock_cookie field here: refused connects are counted as `other`"
        ),
    }
    match cookie_offset(DESTROY_EVENT) {
        Some(off) => {
            settings.set(SETTING_DESTROY_COOKIE_OFFSET, off, 0).map_err(map_err("SETTINGS"))?
        }
        None => warn!(
            "tcp:{DESTROY_EVENT} has no sock_cookie field here: connections older than the agent are not seen closing"
        ),
    }
    let started = Instant::now();
    cellmap::apply(&mut maps, initial)?;
    info!(
        prefixes = initial.prefixes.len(),
        allow_rules = initial.allow.len(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
        "cell map written"
    );

    // The connect hooks go first, so sock_ops finds the owner of every connect it sees.
    let cgroup = File::open(&opts.cgroup_root)
        .map_err(|source| KernelError::Cgroup { path: opts.cgroup_root.clone(), source })?;
    for name in [CONNECT4, CONNECT6] {
        attach_connect(&mut ebpf, name, &cgroup, opts)?;
    }
    attach_sockops(&mut ebpf, &cgroup, opts)?;
    attach_tracepoint(&mut ebpf, RST, RST_EVENT)?;
    attach_tracepoint(&mut ebpf, DESTROY, DESTROY_EVENT)?;
    info!(cgroup = %opts.cgroup_root.display(), "eBPF programs attached");

    Ok(Kernel {
        _programs: ebpf,
        maps: std::sync::Arc::new(std::sync::Mutex::new(maps)),
        events: Some(events),
        _log_task: log_task,
    })
}

pub(super) fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, KernelError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(KernelError::Missing(name))?;
    T::try_from(map).map_err(map_err(name))
}

/// One cell-map set from its maps' names: IPv4 trie, IPv6 trie, cell flags, allow rules.
fn cell_set(
    ebpf: &mut Ebpf,
    [v4, v6, info, policy]: [&'static str; 4],
) -> Result<CellSet, KernelError> {
    Ok(CellSet {
        v4: take(ebpf, v4)?,
        v6: take(ebpf, v6)?,
        info: take(ebpf, info)?,
        policy: take(ebpf, policy)?,
        holds: Compiled::default(),
    })
}

fn take_maps(ebpf: &mut Ebpf, opts: &LoadOptions) -> Result<Maps, KernelError> {
    let sets = [
        cell_set(ebpf, ["CELLS_V4_A", "CELLS_V6_A", "CELL_INFO_A", "POLICY_A"])?,
        cell_set(ebpf, ["CELLS_V4_B", "CELLS_V6_B", "CELL_INFO_B", "POLICY_B"])?,
    ];
    Ok(Maps {
        pair_stats: take(ebpf, "PAIR_STATS")?,
        conns: take(ebpf, "CONNS")?,
        owners: take(ebpf, "OWNERS")?,
        seed_opened: take(ebpf, "SEED_OPENED")?,
        counters: take(ebpf, "COUNTERS")?,
        settings: take(ebpf, "SETTINGS")?,
        sets,
        // Generation 0 (set A, empty) is what a freshly loaded object reads: every
        // peer external and allowed. The first apply fills set B and flips to it.
        generation: Generation { active: 0, since: Instant::now() },
        capacity: Capacity {
            conns: opts.conn_capacity,
            pair_stats: PAIR_STATS_CAPACITY,
            cells_v4: CELLS_V4_CAPACITY,
            cells_v6: CELLS_V6_CAPACITY,
            policy: POLICY_CAPACITY,
        },
    })
}

fn attach_sockops(ebpf: &mut Ebpf, cgroup: &File, opts: &LoadOptions) -> Result<(), KernelError> {
    let prog: &mut SockOps = ebpf
        .program_mut(SOCKOPS)
        .ok_or(KernelError::Missing(SOCKOPS))?
        .try_into()
        .map_err(|source| KernelError::Program { name: SOCKOPS, source })?;
    prog.load().map_err(|e| refused(SOCKOPS, e))?;
    // On kernels >= 5.7 aya attaches with a bpf_link, which always coexists with other
    // tools' programs on the cgroup, and the kernel refuses any attach flag for it
    // (EINVAL), so the mode must be the flag-less `Single`.
    prog.attach(cgroup, CgroupAttachMode::Single).map_err(|source| KernelError::Attach {
        what: format!("sock_ops to {}", opts.cgroup_root.display()),
        source,
    })?;
    Ok(())
}

fn attach_tracepoint(ebpf: &mut Ebpf, name: &'static str, event: &str) -> Result<(), KernelError> {
    let prog: &mut TracePoint = ebpf
        .program_mut(name)
        .ok_or(KernelError::Missing(name))?
        .try_into()
        .map_err(|source| KernelError::Program { name, source })?;
    prog.load().map_err(|e| refused(name, e))?;
    prog.attach(TCP, event).map_err(|source| KernelError::Attach {
        what: format!("the tracepoint {TCP}:{event}"),
        source,
    })?;
    Ok(())
}

/// A cgroup `connect4`/`connect6` program on the cgroup v2 root.
fn attach_connect(
    ebpf: &mut Ebpf,
    name: &'static str,
    cgroup: &File,
    opts: &LoadOptions,
) -> Result<(), KernelError> {
    let prog: &mut CgroupSockAddr = ebpf
        .program_mut(name)
        .ok_or(KernelError::Missing(name))?
        .try_into()
        .map_err(|source| KernelError::Program { name, source })?;
    prog.load().map_err(|e| refused(name, e))?;
    prog.attach(cgroup, CgroupAttachMode::Single).map_err(|source| KernelError::Attach {
        what: format!("{name} to {}", opts.cgroup_root.display()),
        source,
    })?;
    Ok(())
}

/// A failed program load. A verifier rejection is logged in full (it is what a kernel
/// developer needs) and summed up by the verifier's own reason.
fn refused(name: &'static str, e: ProgramError) -> KernelError {
    match e {
        ProgramError::LoadError { io_error, verifier_log } => {
            let log = verifier_log.to_string();
            error!(program = name, error = %io_error, verifier_log = %log, "the verifier refused a program");
            KernelError::Verifier {
                name,
                reason: verifier_reason(&log).unwrap_or_else(|| io_error.to_string()),
            }
        }
        source => KernelError::Program { name, source },
    }
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

/// Offset of `sock_cookie` in a tcp tracepoint's record, from tracefs.
fn cookie_offset(event: &str) -> Option<u32> {
    let path = format!("{TRACEFS_PATH}/events/{TCP}/{event}/format");
    let text = std::fs::read_to_string(path).ok()?;
    field_offset(&text, "sock_cookie")
}

/// Parses `field:__u64 sock_cookie; offset:64; size:8;` lines of a tracefs format file.
pub(super) fn field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|l| {
        let decl = l.trim().strip_prefix("field:")?.split(';').next()?;
        let name = decl.rsplit(|c: char| c.is_whitespace() || c == '*').next()?;
        if name != field {
            return None;
        }
        let off = l.split("offset:").nth(1)?.split(';').next()?;
        off.trim().parse().ok()
    })
}

/// aya-log records arrive through a ring buffer; forward them into `log`, which the
/// tracing subscriber bridges.
fn spawn_log_forwarder(ebpf: &mut Ebpf) -> Option<tokio::task::JoinHandle<()>> {
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(l) => l,
        Err(e) => {
            debug!(error = %e, "no aya-log map in the eBPF object");
            return None;
        }
    };
    let fd = logger.as_raw_fd();
    // SAFETY: the logger owns its ring buffer's fd and keeps it open for as long as the
    // AsyncFd (which owns the logger) exists; nothing else closes or replaces it.
    let registered =
        unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
    let mut afd = match registered {
        Ok(a) => a,
        Err(e) => {
            warn!(error = %e, fd, "cannot poll the eBPF log buffer; kernel log records are dropped");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        loop {
            let Ok(mut guard) = afd.readable_mut().await else { return };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tracefs_field_offsets_parse() {
        let fmt = "name: tcp_receive_reset\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
                   \tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
                   \tfield:__u8 daddr_v6[16];\toffset:46;\tsize:16;\tsigned:0;\n\
                   \tfield:__u64 sock_cookie;\toffset:64;\tsize:8;\tsigned:0;\n";
        assert_eq!(super::field_offset(fmt, "sock_cookie"), Some(64));
        assert_eq!(super::field_offset(fmt, "skaddr"), Some(8));
        assert_eq!(super::field_offset(fmt, "cookie"), None);
    }

    #[test]
    fn the_verifier_reason_is_its_last_verdict_line() {
        let log = "0: R1=ctx() R10=fp0\n; if v6 { x } @ ctx.rs:48\n389: (61) r8 = *(u32 *)(r2 +0)\n\
                   dereference of modified ctx ptr R2 off=28 disallowed\nverification time 564 usec\n\
                   stack depth 328+0+0\nprocessed 230 insns (limit 1000000)\n";
        assert_eq!(
            super::verifier_reason(log).as_deref(),
            Some("dereference of modified ctx ptr R2 off=28 disallowed")
        );
    }
}
