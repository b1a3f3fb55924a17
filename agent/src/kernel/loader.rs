//! Loading the embedded eBPF object and attaching its programs: `sock_ops` on the cgroup
//! v2 root, `tcp:tcp_receive_reset` as a tracepoint.
use std::{fs::File, os::fd::AsRawFd, path::PathBuf};

use agent_common::{
    CELLS_V4_CAPACITY, CELLS_V6_CAPACITY, CellInfo, PAIR_STATS_CAPACITY, POLICY_CAPACITY, PairKey,
    PairStats, PolicyKey, SETTING_RST_COOKIE_OFFSET,
};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, PerCpuHashMap},
    programs::{CgroupAttachMode, ProgramError, SockOps, TracePoint},
};
use tokio::io::unix::AsyncFd;
use tracing::{debug, info, warn};

use super::{Kernel, cellmap};
use crate::{policy::Compiled, preflight::TRACEFS_PATH};

/// The eBPF object, built from `agent-ebpf` by this crate's build script.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cellwatch"));

const SOCKOPS: &str = "cellwatch_sockops";
const RST: &str = "cellwatch_rst";
const RST_CATEGORY: &str = "tcp";
const RST_EVENT: &str = "tcp_receive_reset";

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub cgroup_root: PathBuf,
    /// Capacity of the live-connection table.
    pub conn_capacity: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("the kernel refused cellwatch's eBPF object: {0}")]
    Load(#[source] aya::EbpfError),
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
    pub(super) counters: PerCpuArray<MapData, u64>,
    pub(super) cells_v4: LpmTrie<MapData, [u8; 4], u32>,
    pub(super) cells_v6: LpmTrie<MapData, [u8; 16], u32>,
    pub(super) cell_info: Array<MapData, CellInfo>,
    pub(super) policy: HashMap<MapData, PolicyKey, u8>,
    pub(super) settings: Array<MapData, u32>,
    /// What the cell maps hold now, so an update writes only the difference.
    pub(super) current: Compiled,
    pub(super) capacity: Capacity,
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
        .load(EBPF_OBJECT)
        .map_err(KernelError::Load)?;
    let log_task = spawn_log_forwarder(&mut ebpf);

    let mut maps = take_maps(&mut ebpf, opts)?;
    // Settings and the cell map go in before anything is attached, so the very first
    // connection is judged against the full config.
    if let Some(off) = rst_cookie_offset() {
        maps.settings.set(SETTING_RST_COOKIE_OFFSET, off, 0).map_err(map_err("SETTINGS"))?;
    } else {
        warn!(
            "tcp:tcp_receive_reset has no sock_cookie field here: refused connects are counted as `other`"
        );
    }
    cellmap::apply(&mut maps, initial)?;

    attach_sockops(&mut ebpf, opts)?;
    attach_rst(&mut ebpf)?;
    info!(cgroup = %opts.cgroup_root.display(), "eBPF programs attached");

    Ok(Kernel {
        _programs: ebpf,
        maps: std::sync::Arc::new(std::sync::Mutex::new(maps)),
        _log_task: log_task,
    })
}

fn take_maps(ebpf: &mut Ebpf, opts: &LoadOptions) -> Result<Maps, KernelError> {
    fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, KernelError>
    where
        T: TryFrom<aya::maps::Map, Error = MapError>,
    {
        let map = ebpf.take_map(name).ok_or(KernelError::Missing(name))?;
        T::try_from(map).map_err(map_err(name))
    }
    let pair_stats: PerCpuHashMap<MapData, PairKey, PairStats> = take(ebpf, "PAIR_STATS")?;
    let cells_v4: LpmTrie<MapData, [u8; 4], u32> = take(ebpf, "CELLS_V4")?;
    let cells_v6: LpmTrie<MapData, [u8; 16], u32> = take(ebpf, "CELLS_V6")?;
    let policy: HashMap<MapData, PolicyKey, u8> = take(ebpf, "POLICY")?;
    let capacity = Capacity {
        conns: opts.conn_capacity,
        pair_stats: PAIR_STATS_CAPACITY,
        cells_v4: CELLS_V4_CAPACITY,
        cells_v6: CELLS_V6_CAPACITY,
        policy: POLICY_CAPACITY,
    };
    Ok(Maps {
        pair_stats,
        counters: take(ebpf, "COUNTERS")?,
        cells_v4,
        cells_v6,
        cell_info: take(ebpf, "CELL_INFO")?,
        policy,
        settings: take(ebpf, "SETTINGS")?,
        current: Compiled::default(),
        capacity,
    })
}

fn attach_sockops(ebpf: &mut Ebpf, opts: &LoadOptions) -> Result<(), KernelError> {
    let prog: &mut SockOps = ebpf
        .program_mut(SOCKOPS)
        .ok_or(KernelError::Missing(SOCKOPS))?
        .try_into()
        .map_err(|source| KernelError::Program { name: SOCKOPS, source })?;
    prog.load().map_err(|source| KernelError::Program { name: SOCKOPS, source })?;
    let cgroup = File::open(&opts.cgroup_root)
        .map_err(|source| KernelError::Cgroup { path: opts.cgroup_root.clone(), source })?;
    // On kernels >= 5.7 aya attaches with a bpf_link, which always coexists with other
    // tools' programs on the cgroup, and the kernel refuses any attach flag for it
    // (EINVAL), so the mode must be the flag-less `Single`.
    prog.attach(&cgroup, CgroupAttachMode::Single).map_err(|source| KernelError::Attach {
        what: format!("sock_ops to {}", opts.cgroup_root.display()),
        source,
    })?;
    Ok(())
}

fn attach_rst(ebpf: &mut Ebpf) -> Result<(), KernelError> {
    let prog: &mut TracePoint = ebpf
        .program_mut(RST)
        .ok_or(KernelError::Missing(RST))?
        .try_into()
        .map_err(|source| KernelError::Program { name: RST, source })?;
    prog.load().map_err(|source| KernelError::Program { name: RST, source })?;
    prog.attach(RST_CATEGORY, RST_EVENT).map_err(|source| KernelError::Attach {
        what: format!("the tracepoint {RST_CATEGORY}:{RST_EVENT}"),
        source,
    })?;
    Ok(())
}

/// Offset of `sock_cookie` in the tcp_receive_reset record, from tracefs.
fn rst_cookie_offset() -> Option<u32> {
    let path = format!("{TRACEFS_PATH}/events/{RST_CATEGORY}/{RST_EVENT}/format");
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
}
