//! Kernel records as plain values: violation events from the ring buffer, decoded field
//! by field without `unsafe`, and the address and name encodings the kernel uses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use agent_common::{AF_INET6, ViolationEvent};

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
    fn raw_addresses_round_trip() {
        for (family, ip) in [(2u16, "10.1.2.3"), (10, "fd00::1")] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(addr(family, raw_addr(ip)), ip);
        }
    }
}
