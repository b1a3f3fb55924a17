//! Unit tests of `format`.

use super::*;

#[test]
fn figures() {
    assert_eq!(fmt_rate(Some(2.25)), "2.2");
    assert_eq!(fmt_rate(Some(12_345.0)), "12.3k");
    assert_eq!(fmt_rate(None), "-");
    assert_eq!(fmt_bytes(Some(512.0)), "512 B");
    assert_eq!(fmt_bytes(Some(1536.0)), "1.5 KiB");
    assert_eq!(fmt_bytes(Some(3.0 * 1024.0 * 1024.0)), "3.0 MiB");
    assert_eq!(fmt_duration(64e-6), "64µs");
    assert_eq!(fmt_duration(1.25e-3), "1.25ms");
    assert_eq!(fmt_duration(0.25), "250ms");
    assert_eq!(fmt_duration(1.5), "1.50s");
    assert_eq!((pct(Some(0.625)), pct(None)), ("62.5%".to_owned(), "-".to_owned()));
    assert_eq!(printable("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
}

#[test]
fn tables_align_their_columns() {
    let rows = vec![vec!["a".to_owned(), "1".to_owned()], vec!["bcd".to_owned(), "22".to_owned()]];
    let t = Table::new("  ", &["NAME", "N"], &[false, true]);
    assert_eq!(t.render(&rows), "  NAME   N\n  a      1\n  bcd   22\n");
    let wide = Table { gap: " ", min: &[5, 4], ..t };
    assert_eq!(wide.lines(&rows), ["  NAME     N", "  a        1", "  bcd     22"]);
}

#[test]
fn times_and_spans() {
    assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(1_796_119_200.0), "2026-12-01T10:00:00Z");
    assert_eq!(rfc3339(1_796_119_200.9), "2026-12-01T10:00:00Z", "to the second, down");
    assert_eq!(rfc3339(951_782_400.0), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(-1.0), "1969-12-31T23:59:59Z");
    assert_eq!(rfc3339(f64::NAN), "-");
    assert_eq!(rfc3339(1e300), "9999-12-31T23:59:59Z");
    assert_eq!(fmt_span(0), "0s");
    assert_eq!(fmt_span(12), "12s");
    assert_eq!(fmt_span(250), "4m 10s");
    assert_eq!(fmt_span(3600), "1h");
    assert_eq!(fmt_span(7500), "2h 5m");
    assert_eq!(fmt_span(3 * 86_400 + 4 * 3600 + 59), "3d 4h");
}
