//! Unit tests of `micro`.

#[test]
fn reads_criterion_estimates() {
    let text = "Benchmarking x\nfamilies: 200 pair keys (10 cells)\n                        time:   [1.0 ms 1.5 ms 2.0 ms]\n\
                    compile: 1,000 cells    time:   [300.1 µs 310.2 µs 320.3 µs]\n";
    let rows = super::parse(text);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].0, "families: 200 pair keys (10 cells)");
    assert_eq!((rows[0].1.as_str(), rows[0].2.as_str()), ("1.5 ms", "1.0 ms"));
    assert_eq!((rows[1].0.as_str(), rows[1].3.as_str()), ("compile: 1,000 cells", "320.3 µs"));
}
