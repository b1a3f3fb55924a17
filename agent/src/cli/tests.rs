//! Unit tests of `cli`.

use super::*;

#[test]
fn live_intervals() {
    assert_eq!(live_interval("5s"), Ok(Duration::from_secs(5)));
    assert_eq!(live_interval("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(live_interval("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(live_interval("7"), Ok(Duration::from_secs(7)));
    assert!(live_interval("50ms").unwrap_err().contains("outside"));
    assert_eq!(live_interval("1h"), Ok(Duration::from_secs(3600)));
    assert!(live_interval("2h").unwrap_err().contains("outside"));
    assert!(live_interval("2d").unwrap_err().contains("unknown unit"));
    assert!(live_interval("fast").unwrap_err().contains("not a duration"));
}
