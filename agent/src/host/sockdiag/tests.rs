//! Unit tests of `sockdiag`.

use super::TcpInfo;

#[test]
fn tcp_info_fields_at_their_uapi_offsets() {
    let mut raw = vec![0u8; 232];
    raw[68..72].copy_from_slice(&321u32.to_ne_bytes());
    raw[120..128].copy_from_slice(&4096u64.to_ne_bytes());
    raw[128..136].copy_from_slice(&7u64.to_ne_bytes());
    assert_eq!(
        TcpInfo::parse(&raw),
        TcpInfo { rtt_us: Some(321), bytes_acked: Some(4096), bytes_received: Some(7) }
    );
    assert_eq!(TcpInfo::parse(&raw[..100]), TcpInfo { rtt_us: Some(321), ..TcpInfo::default() });
    assert_eq!(TcpInfo::parse(&[]), TcpInfo::default());
}
