//! Unit tests of `names`.

use super::*;

#[test]
fn the_rule() {
    for good in ["a", "cell-1", "0", "global", &"a".repeat(NAME_MAX)] {
        assert!(is_cell_name(good), "{good}");
    }
    for bad in ["", "-a", "a-", "Cell", "a_b", "a.b", "a b", &"a".repeat(NAME_MAX + 1)] {
        assert!(!is_cell_name(bad), "{bad}");
    }
}
