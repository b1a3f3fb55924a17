//! Unit tests of `query`.

use super::*;

const ALL: &[&str] = &["cell", "drained", "verdict", "limit"];

#[test]
fn good_queries() {
    assert_eq!(parse(None, ALL).unwrap().limit, DEFAULT_LIMIT);
    let q = parse(Some("cell=cell-1&verdict=violation&limit=5"), ALL).unwrap();
    assert_eq!(
        q,
        Query { cell: Some("cell-1".into()), drained: None, verdict: Some("violation"), limit: 5 }
    );
    let q = parse(Some("drained=cell-2"), ALL).unwrap();
    assert_eq!((q.cell, q.drained.as_deref()), (None, Some("cell-2")));
    assert_eq!(parse(Some("cell=c%2D1"), ALL).unwrap().cell.as_deref(), Some("c-1"));
}

#[test]
fn bad_queries_are_one_sentence() {
    for (q, want) in [
        ("limit=0", "`limit` must be a number from 1 to 10000, not `0`"),
        ("limit=99999999999999999999999", "`limit` must be a number"),
        ("verdict=maybe", "`verdict` must be allowed or violation"),
        ("cell=Bad", "`cell` must be a cell name, not `Bad`"),
        ("colour=red", "unknown parameter `colour`: use cell, drained, verdict, limit"),
        ("drained=Bad", "`drained` must be a cell name, not `Bad`"),
        ("cell=a&drained=b", "use `cell` or `drained`, not both"),
        ("cell=%zz", "malformed %-escape"),
        ("cell=%ff", "not UTF-8"),
        ("cell=a%0Ab", "`cell` must be a cell name, not `a\\nb`"),
    ] {
        let err = parse(Some(q), ALL).unwrap_err();
        assert!(err.contains(want), "{q}: {err}");
    }
    assert!(parse(Some(&"a".repeat(MAX_QUERY + 1)), ALL).unwrap_err().contains("longer than"));
    assert!(parse(Some("cell=a"), &["limit"]).unwrap_err().starts_with("unknown parameter `cell`"));
}
