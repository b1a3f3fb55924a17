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

/// A wall time as a kernel timestamp, for the programs to compare with their clock: a
/// time already past is 0 (every clock reading is after it). A step of the wall clock
/// after the conversion moves the wall time it stands for by that step.
pub(crate) fn kernel_ns(at: SystemTime) -> u64 {
    let now = super::sys::monotonic_ns();
    match at.duration_since(SystemTime::now()) {
        Ok(ahead) => {
            let ahead = u64::try_from(ahead.as_nanos()).unwrap_or(u64::MAX);
            // u64::MAX means "no deadline" to the programs: stop one short of it.
            now.saturating_add(ahead).min(u64::MAX - 1)
        }
        Err(past) => {
            now.saturating_sub(u64::try_from(past.duration().as_nanos()).unwrap_or(u64::MAX))
        }
    }
}

/// The wall time a kernel timestamp stands for.
pub(crate) fn wall_time(ts_ns: u64) -> SystemTime {
    let now = super::sys::monotonic_ns();
    let wall = SystemTime::now();
    if ts_ns >= now {
        wall + Duration::from_nanos(ts_ns - now)
    } else {
        wall.checked_sub(Duration::from_nanos(now - ts_ns)).unwrap_or(UNIX_EPOCH)
    }
}
