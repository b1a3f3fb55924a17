//! Unit tests of `screen`.

use super::*;

#[test]
fn lines_are_cut_to_the_terminal_but_colours_are_kept_whole() {
    assert_eq!(fit("abcdef", 4), "abcd");
    assert_eq!(fit("abc", 4), "abc");
    assert_eq!(fit("\x1b[1;31mabcdef\x1b[0m", 3), "\x1b[1;31mabc\x1b[0m\x1b[0m");
    assert_eq!(fit("\x1b[1;31mab\x1b[0m", 3), "\x1b[1;31mab\x1b[0m");
}

#[test]
fn a_frame_has_the_table_then_the_violations() {
    let f = frame("cell pairs (final):", "  T\n", &["v1".into(), "v2".into()]);
    assert_eq!(
        f,
        "cell pairs (final):\n  T\n\nnewest violations, one line per cell pair:\n  v1\n  v2\n"
    );
    assert!(frame("h", "t\n", &[]).contains("(none yet)"));
}
