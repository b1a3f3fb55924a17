//! Kernel records as plain values: violation events from the ring buffer, decoded field
//! by field without `unsafe`, and the address and name encodings the kernel uses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use agent_common::{
    AF_INET6, Brief, Claimed, Conn, Progress, SWEEP_RECORD_BYTES, SweepTail, ViolationEvent,
};

/// A ring-buffer record that is not a `ViolationEvent`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("violation record of {0} bytes, expected {n}", n = size_of::<ViolationEvent>())]
pub struct BadRecord(pub usize);

/// Decodes one record: each field at its `#[repr(C)]` offset.
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

/// A record of the wrong size.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("sweep output of {0} bytes is not a whole number of {SWEEP_RECORD_BYTES}-byte records")]
pub struct BadSweep(pub usize);

/// Reads native-endian integers at `#[repr(C)]` offsets of one record.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn u64(&self, at: usize) -> u64 {
        u64::from_ne_bytes(self.0[at..at + 8].try_into().unwrap_or_default())
    }
    fn u32(&self, at: usize) -> u32 {
        u32::from_ne_bytes(self.0[at..at + 4].try_into().unwrap_or_default())
    }
    fn u16(&self, at: usize) -> u16 {
        u16::from_ne_bytes(self.0[at..at + 2].try_into().unwrap_or_default())
    }
    fn a16(&self, at: usize) -> [u8; 16] {
        self.0[at..at + 16].try_into().unwrap_or_default()
    }
    fn progress(&self, at: usize) -> Progress {
        use std::mem::offset_of;
        type P = Progress;
        Progress {
            acked: self.u64(at + offset_of!(P, acked)),
            sent_once: self.u64(at + offset_of!(P, sent_once)),
            received: self.u64(at + offset_of!(P, received)),
            retrans: self.u64(at + offset_of!(P, retrans)),
        }
    }
    fn claimed(&self, at: usize) -> Claimed {
        use std::mem::offset_of;
        type C = Claimed;
        Claimed {
            sent: self.u64(at + offset_of!(C, sent)),
            received: self.u64(at + offset_of!(C, received)),
            retrans: self.u64(at + offset_of!(C, retrans)),
        }
    }
}

/// Decodes the live sweep's output: one `Conn` followed by one `SweepTail` per
/// connection, each field at its `#[repr(C)]` offset.
pub fn decode_sweep(b: &[u8]) -> Result<Vec<(Conn, SweepTail)>, BadSweep> {
    use std::mem::offset_of;
    if !b.len().is_multiple_of(SWEEP_RECORD_BYTES) {
        return Err(BadSweep(b.len()));
    }
    type C = Conn;
    type T = SweepTail;
    let tail_at = size_of::<Conn>();
    Ok(b.chunks_exact(SWEEP_RECORD_BYTES)
        .map(|r| {
            let f = Fields(r);
            let conn = Conn {
                start_ns: f.u64(offset_of!(C, start_ns)),
                established_ns: f.u64(offset_of!(C, established_ns)),
                cookie: f.u64(offset_of!(C, cookie)),
                cgroup_id: f.u64(offset_of!(C, cgroup_id)),
                pid: f.u32(offset_of!(C, pid)),
                src_cell: f.u32(offset_of!(C, src_cell)),
                dst_cell: f.u32(offset_of!(C, dst_cell)),
                closed: f.u32(offset_of!(C, closed)),
                direction: r[offset_of!(C, direction)],
                verdict: r[offset_of!(C, verdict)],
                flags: r[offset_of!(C, flags)],
                generation: r[offset_of!(C, generation)],
                family: f.u16(offset_of!(C, family)),
                local_port: f.u16(offset_of!(C, local_port)),
                remote_port: f.u16(offset_of!(C, remote_port)),
                service: f.u16(offset_of!(C, service)),
                _pad2: 0,
                counted: 0,
                local_addr: f.a16(offset_of!(C, local_addr)),
                remote_addr: f.a16(offset_of!(C, remote_addr)),
                comm: f.a16(offset_of!(C, comm)),
                base: f.progress(offset_of!(C, base)),
                claimed: f.claimed(offset_of!(C, claimed)),
            };
            let tail = SweepTail {
                claimed: f.claimed(tail_at + offset_of!(T, claimed)),
                srtt_us: f.u32(tail_at + offset_of!(T, srtt_us)),
                _pad: 0,
            };
            (conn, tail)
        })
        .collect())
}

/// Decodes a listing's first sweep: one [`Brief`] per connection.
pub fn decode_briefs(b: &[u8]) -> Result<Vec<Brief>, BadSweep> {
    use std::mem::offset_of;
    let size = size_of::<Brief>();
    if !b.len().is_multiple_of(size) {
        return Err(BadSweep(b.len()));
    }
    Ok(b.chunks_exact(size)
        .map(|r| {
            let f = Fields(r);
            Brief {
                cookie: f.u64(offset_of!(Brief, cookie)),
                start_ns: f.u64(offset_of!(Brief, start_ns)),
            }
        })
        .collect())
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

/// An address as the kernel stores it (the inverse of [`addr`] for the socket's family).
pub fn raw_addr(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            b
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// A NUL-padded kernel string.
pub fn comm(raw: &[u8]) -> Option<String> {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    (end > 0).then(|| String::from_utf8_lossy(&raw[..end]).into_owned())
}

#[cfg(test)]
mod tests;
