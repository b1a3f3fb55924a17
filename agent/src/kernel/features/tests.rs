//! Unit tests of `features`.

use super::{Feature, Without};

#[test]
fn tracefs_field_offsets_parse() {
    let fmt = "name: tcp_receive_reset\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
                   \tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
                   \tfield:__u8 daddr_v6[16];\toffset:46;\tsize:16;\tsigned:0;\n\
                   \tfield:__u64 sock_cookie;\toffset:64;\tsize:8;\tsigned:0;\n";
    assert_eq!(super::field_offset(fmt, "sock_cookie"), Some(64));
    assert_eq!(super::field_offset(fmt, "skaddr"), Some(8));
    assert_eq!(super::field_offset(fmt, "cookie"), None);
}

/// Every variant, by a match that stops compiling when one is added without a row.
fn all() -> Vec<Feature> {
    let every = |f: Feature| match f {
        Feature::SkStorageIter
        | Feature::TcpIter
        | Feature::MapElemIter
        | Feature::ProgTestRun
        | Feature::DestroySockCookie
        | Feature::ConntrackLookup
        | Feature::Udp => f,
    };
    [
        Feature::SkStorageIter,
        Feature::TcpIter,
        Feature::MapElemIter,
        Feature::ProgTestRun,
        Feature::DestroySockCookie,
        Feature::ConntrackLookup,
        Feature::Udp,
    ]
    .map(every)
    .to_vec()
}

#[test]
fn every_feature_has_its_own_row_and_label() {
    let mut labels: Vec<_> = super::ROWS.iter().map(|r| r.label).collect();
    for f in all() {
        assert_eq!(super::ROWS.iter().filter(|r| r.feature == f).count(), 1, "{f:?}");
        assert_eq!(Feature::parse(f.as_str()).ok(), Some(f));
    }
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), all().len());
    assert_eq!(Feature::DestroySockCookie.as_str(), "destroy_sock_cookie");
    assert_eq!(Feature::ConntrackLookup.as_str(), "conntrack_lookup");
}

#[test]
fn without_takes_a_list_and_names_the_valid_ones_when_wrong() {
    let w = Without::parse("sk_storage_iter, map_elem_iter,sk_storage_iter").unwrap();
    assert!(w.has(Feature::SkStorageIter) && w.has(Feature::MapElemIter));
    assert!(!w.has(Feature::TcpIter));
    let e = Without::parse("sk_storage_iter,fentry").unwrap_err().to_string();
    assert!(e.starts_with("unknown feature `fentry` for --without; the features are "), "{e}");
    for f in all() {
        assert!(e.contains(f.as_str()), "{e}");
    }
    assert!(!e.contains('\n'));
}
