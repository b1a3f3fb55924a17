//! Unit tests of `events`.

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
fn sweep_records_decode_field_by_field() {
    use std::mem::offset_of;
    let mut b = vec![0u8; 2 * SWEEP_RECORD_BYTES];
    let second = SWEEP_RECORD_BYTES;
    b[second + offset_of!(Conn, cookie)..][..8].copy_from_slice(&77u64.to_ne_bytes());
    b[second + offset_of!(Conn, remote_port)..][..2].copy_from_slice(&5432u16.to_ne_bytes());
    b[second + offset_of!(Conn, verdict)] = 1;
    let base_received = offset_of!(Conn, base) + offset_of!(Progress, received);
    b[second + base_received..][..8].copy_from_slice(&9u64.to_ne_bytes());
    let tail = second + size_of::<Conn>();
    b[tail + offset_of!(SweepTail, srtt_us)..][..4].copy_from_slice(&250u32.to_ne_bytes());
    let sent = offset_of!(SweepTail, claimed) + offset_of!(Claimed, sent);
    b[tail + sent..][..8].copy_from_slice(&(5u64 << 32).to_ne_bytes());
    let recs = decode_sweep(&b).unwrap();
    assert_eq!(recs.len(), 2);
    let (c, t) = recs[1];
    assert_eq!((c.cookie, c.remote_port, c.verdict, c.base.received), (77, 5432, 1, 9));
    assert_eq!((t.srtt_us, t.claimed.sent), (250, 5 << 32));
    assert_eq!(decode_sweep(&b[..10]), Err(BadSweep(10)));
    assert_eq!(decode_sweep(&[]).map(|v| v.len()), Ok(0));
}

#[test]
fn briefs_decode_field_by_field() {
    use std::mem::offset_of;
    let size = size_of::<Brief>();
    let mut b = vec![0u8; 2 * size];
    b[size + offset_of!(Brief, cookie)..][..8].copy_from_slice(&91u64.to_ne_bytes());
    b[size + offset_of!(Brief, start_ns)..][..8].copy_from_slice(&(3u64 << 40).to_ne_bytes());
    let briefs = decode_briefs(&b).unwrap();
    assert_eq!(briefs.len(), 2);
    assert_eq!((briefs[1].cookie, briefs[1].start_ns), (91, 3 << 40));
    assert_eq!(decode_briefs(&b[..17]), Err(BadSweep(17)));
}

#[test]
fn raw_addresses_round_trip() {
    for (family, ip) in [(2u16, "10.1.2.3"), (10, "fd00::1")] {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(addr(family, raw_addr(ip)), ip);
    }
}
