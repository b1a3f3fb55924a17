//! The levels' names and what each keeps.
use super::Detail;

#[test]
fn every_level_parses_by_its_name_and_nothing_else_does() {
    for d in Detail::ALL {
        assert_eq!(Detail::parse(d.as_str()), Ok(d));
    }
    assert_eq!(Detail::default(), Detail::Full);
    let err = Detail::parse("most").unwrap_err();
    assert!(err.contains("full, pairs or cells"), "{err}");
}

#[test]
fn pairs_keeps_the_histograms_of_violating_pairs_only() {
    assert!(Detail::Full.pair_histograms(false));
    assert!(!Detail::Pairs.pair_histograms(false));
    assert!(Detail::Pairs.pair_histograms(true));
    assert!(!Detail::Cells.pair_histograms(true));
    assert!(Detail::Pairs.per_pair() && !Detail::Cells.per_pair());
}
