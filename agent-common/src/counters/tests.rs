//! Unit tests of `counters`.

use super::*;

#[test]
fn buckets_are_log2_upper_bounds() {
    assert_eq!(hist_bucket(0), 0);
    assert_eq!(hist_bucket(1), 1); // 1 < 2^1
    assert_eq!(hist_bucket(2), 2);
    assert_eq!(hist_bucket(3), 2);
    assert_eq!(hist_bucket(4), 3);
    assert_eq!(hist_bucket(1023), 10);
    assert_eq!(hist_bucket(1024), 11);
    assert_eq!(hist_bucket(u64::MAX), HIST_BUCKETS - 1);
    for v in [1u64, 7, 100, 5000, 1 << 20] {
        let i = hist_bucket(v);
        assert!(v < (1u64 << i), "{v} must be below le=2^{i}");
        assert!(i == 0 || v >= (1u64 << (i - 1)), "{v} belongs in a lower bucket");
    }
}
