//! Violation events from the kernel: drained from the ring buffer every 100 ms (one
//! wakeup per batch, not per event), each logged as one structured line and kept, the
//! most recent first, for `GET /violations`.
#![forbid(unsafe_code)]

use std::{
    collections::VecDeque,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use agent_common::{DIR_EGRESS, ViolationEvent};
use aya::maps::{MapData, RingBuf};
use serde::Serialize;
use tracing::{info, warn};

use crate::{cgroups::Resolver, clock, policy::CellIds};

/// How many recent violations `/violations` keeps.
pub const RECENT: usize = 1024;
const DRAIN_EVERY: Duration = Duration::from_millis(100);
const AF_INET6: u16 = 10;

/// One end of a connection.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct End {
    pub cell: String,
    pub addr: IpAddr,
    pub port: u16,
}

/// A violation as `/violations` serves it. `src` is the client.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Violation {
    /// Seconds since the Unix epoch.
    pub time: f64,
    pub src: End,
    pub dst: End,
    pub direction: &'static str,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub cgroup_id: Option<u64>,
    pub cgroup: Option<String>,
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
    pub cookie: u64,
    /// Refused by enforce mode (the connect failed with EPERM); false when only flagged.
    pub denied: bool,
}

/// A ring-buffer record that is not a `ViolationEvent`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("violation record of {0} bytes, expected {n}", n = size_of::<ViolationEvent>())]
pub struct BadRecord(pub usize);

/// Decodes one record without `unsafe`: each field at its `#[repr(C)]` offset.
pub fn decode(b: &[u8]) -> Result<ViolationEvent, BadRecord> {
    use std::mem::offset_of;
    if b.len() != size_of::<ViolationEvent>() {
        return Err(BadRecord(b.len()));
    }
    let u64_at = |o: usize| u64::from_ne_bytes(b[o..o + 8].try_into().unwrap_or_default());
    let u32_at = |o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().unwrap_or_default());
    let u16_at = |o: usize| u16::from_ne_bytes(b[o..o + 2].try_into().unwrap_or_default());
    let a16 = |o: usize| -> [u8; 16] { b[o..o + 16].try_into().unwrap_or_default() };
    type E = ViolationEvent;
    Ok(ViolationEvent {
        ts_ns: u64_at(offset_of!(E, ts_ns)),
        cookie: u64_at(offset_of!(E, cookie)),
        cgroup_id: u64_at(offset_of!(E, cgroup_id)),
        pid: u32_at(offset_of!(E, pid)),
        src_cell: u32_at(offset_of!(E, src_cell)),
        dst_cell: u32_at(offset_of!(E, dst_cell)),
        family: u16_at(offset_of!(E, family)),
        src_port: u16_at(offset_of!(E, src_port)),
        dst_port: u16_at(offset_of!(E, dst_port)),
        direction: b[offset_of!(E, direction)],
        kind: b[offset_of!(E, kind)],
        _pad: 0,
        src_addr: a16(offset_of!(E, src_addr)),
        dst_addr: a16(offset_of!(E, dst_addr)),
        comm: a16(offset_of!(E, comm)),
    })
}

/// An address as the kernel stores it: IPv4 in the first 4 bytes, v4-mapped shown as IPv4.
pub fn addr(family: u16, raw: [u8; 16]) -> IpAddr {
    if family == AF_INET6 {
        let v6 = Ipv6Addr::from(raw);
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    } else {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    }
}

/// A NUL-padded kernel string.
pub fn comm(raw: &[u8]) -> Option<String> {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    (end > 0).then(|| String::from_utf8_lossy(&raw[..end]).into_owned())
}

/// The recent violations, shared with the HTTP endpoint.
pub struct Recent {
    events: Mutex<VecDeque<Violation>>,
    /// Records the agent could not decode (never expected; counted to be seen).
    pub bad_records: AtomicU64,
}

impl Default for Recent {
    fn default() -> Self {
        Self { events: Mutex::new(VecDeque::with_capacity(RECENT)), bad_records: AtomicU64::new(0) }
    }
}

impl Recent {
    fn push(&self, v: Violation) {
        let mut q = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() == RECENT {
            q.pop_back();
        }
        q.push_front(v);
    }

    /// The most recent `limit`, newest first.
    pub fn latest(&self, limit: usize) -> Vec<Violation> {
        let q = self.events.lock().unwrap_or_else(|p| p.into_inner());
        q.iter().take(limit).cloned().collect()
    }
}

/// Turns a kernel event into what users see.
pub fn view(e: &ViolationEvent, ids: &CellIds, cgroups: &Resolver) -> Violation {
    let w = cgroups.workload(e.cgroup_id);
    Violation {
        time: clock::unix_seconds(e.ts_ns),
        src: End {
            cell: ids.name(e.src_cell).to_owned(),
            addr: addr(e.family, e.src_addr),
            port: e.src_port,
        },
        dst: End {
            cell: ids.name(e.dst_cell).to_owned(),
            addr: addr(e.family, e.dst_addr),
            port: e.dst_port,
        },
        direction: if e.direction == DIR_EGRESS { "egress" } else { "ingress" },
        pid: (e.pid != 0).then_some(e.pid),
        comm: comm(&e.comm),
        cgroup_id: (e.cgroup_id != 0).then_some(e.cgroup_id),
        cgroup: w.cgroup,
        container_id: w.container_id,
        pod_uid: w.pod_uid,
        cookie: e.cookie,
        denied: e.kind == agent_common::EVENT_DENIED,
    }
}

/// Drains the ring buffer on a thread of its own until `stop` is set.
pub fn spawn_drain(
    mut ring: RingBuf<MapData>,
    ids: Arc<RwLock<CellIds>>,
    cgroups: Arc<Resolver>,
    recent: Arc<Recent>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            while let Some(item) = ring.next() {
                match decode(&item) {
                    Ok(e) => {
                        let v = {
                            let ids = ids.read().unwrap_or_else(|p| p.into_inner());
                            view(&e, &ids, &cgroups)
                        };
                        info!(
                            target: "cellwatch::violation",
                            src_cell = %v.src.cell,
                            dst_cell = %v.dst.cell,
                            src = %std::net::SocketAddr::new(v.src.addr, v.src.port),
                            dst = %std::net::SocketAddr::new(v.dst.addr, v.dst.port),
                            direction = v.direction,
                            pid = v.pid,
                            comm = v.comm.as_deref(),
                            container_id = v.container_id.as_deref(),
                            pod_uid = v.pod_uid.as_deref(),
                            denied = v.denied,
                            "{}",
                            if v.denied {
                                "cross-cell connect refused (enforce mode)"
                            } else {
                                "cross-cell connection against policy"
                            }
                        );
                        recent.push(v);
                    }
                    Err(e) => {
                        recent.bad_records.fetch_add(1, Ordering::Relaxed);
                        warn!(error = %e, "undecodable violation record");
                    }
                }
            }
            std::thread::sleep(DRAIN_EVERY);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_decode_field_by_field() {
        use std::mem::offset_of;
        type E = ViolationEvent;
        let mut b = vec![0u8; size_of::<E>()];
        b[offset_of!(E, ts_ns)..][..8].copy_from_slice(&7u64.to_ne_bytes());
        b[offset_of!(E, pid)..][..4].copy_from_slice(&4242u32.to_ne_bytes());
        b[offset_of!(E, src_cell)..][..4].copy_from_slice(&2u32.to_ne_bytes());
        b[offset_of!(E, family)..][..2].copy_from_slice(&10u16.to_ne_bytes());
        b[offset_of!(E, dst_port)..][..2].copy_from_slice(&5432u16.to_ne_bytes());
        b[offset_of!(E, direction)] = 1;
        b[offset_of!(E, src_addr)..][..16]
            .copy_from_slice(&"::ffff:10.1.0.1".parse::<Ipv6Addr>().unwrap().octets());
        b[offset_of!(E, comm)..][..4].copy_from_slice(b"curl");
        let e = decode(&b).unwrap();
        assert_eq!((e.ts_ns, e.pid, e.src_cell, e.dst_port, e.direction), (7, 4242, 2, 5432, 1));
        assert_eq!(addr(e.family, e.src_addr), "10.1.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(comm(&e.comm).as_deref(), Some("curl"));
        assert_eq!(decode(&b[..95]), Err(BadRecord(95)));
        assert_eq!(decode(&[]), Err(BadRecord(0)));
    }

    #[test]
    fn recent_keeps_the_newest() {
        let r = Recent::default();
        let v = |port| Violation {
            time: 0.0,
            src: End { cell: "a".into(), addr: IpAddr::V4(Ipv4Addr::LOCALHOST), port },
            dst: End { cell: "b".into(), addr: IpAddr::V4(Ipv4Addr::LOCALHOST), port: 1 },
            direction: "egress",
            pid: None,
            comm: None,
            cgroup_id: None,
            cgroup: None,
            container_id: None,
            pod_uid: None,
            cookie: 0,
            denied: false,
        };
        for p in 0..(RECENT as u16 + 10) {
            r.push(v(p));
        }
        let latest = r.latest(3);
        assert_eq!(latest.iter().map(|v| v.src.port).collect::<Vec<_>>(), vec![1033, 1032, 1031]);
        assert_eq!(r.latest(usize::MAX).len(), RECENT);
    }
}
