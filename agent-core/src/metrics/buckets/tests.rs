//! Unit tests of `buckets`.

use super::*;

#[test]
fn defaults_are_ten_kernel_bounds() {
    let b = Buckets::default();
    assert_eq!(b.len(), 10);
    let bounds: Vec<f64> = b.bounds().collect();
    assert_eq!(bounds[0], 64e-6);
    assert_eq!(bounds[9], 1_048_576e-6);
}

#[test]
fn durations_round_up_to_kernel_bounds() {
    let b = Buckets::parse("100us, 1ms,1s,64us").unwrap();
    assert_eq!(b.exponents, vec![6, 7, 10, 20]);
    assert_eq!(Buckets::parse("1us").unwrap().exponents, vec![0]);
    assert_eq!(Buckets::parse("2us").unwrap().exponents, vec![1]);
    assert_eq!(Buckets::parse("3us").unwrap().exponents, vec![2]);
    assert_eq!(Buckets::parse("all").unwrap().len(), 27);
    for bad in ["", "fast", "10", "0us", "2h", "100s", "1e3ms"] {
        assert!(Buckets::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn cumulative_counts_sum_the_kernel_buckets() {
    let mut k = [0u64; HIST_BUCKETS];
    k[0] = 1; // < 1 µs
    k[6] = 2; // 32..64 µs
    k[7] = 4; // 64..128 µs
    k[HIST_BUCKETS - 1] = 8; // beyond 67 s
    let b = Buckets::parse("64us,128us,1s").unwrap();
    assert_eq!(b.cumulative(&k).collect::<Vec<_>>(), vec![3, 7, 7]);
}
