//! Kernel timestamps (`bpf_ktime_get_ns`, CLOCK_MONOTONIC) as ages and wall times.
#![forbid(unsafe_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the kernel timestamp `ts_ns`.
pub(crate) fn age_seconds(ts_ns: u64) -> f64 {
    super::sys::monotonic_ns().saturating_sub(ts_ns) as f64 / 1e9
}

/// The kernel timestamp as seconds since the Unix epoch.
pub(crate) fn unix_seconds(ts_ns: u64) -> f64 {
    let ago = Duration::from_nanos(super::sys::monotonic_ns().saturating_sub(ts_ns));
    SystemTime::now()
        .checked_sub(ago)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}
