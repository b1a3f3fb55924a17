//! Unit tests of `families`.

use super::*;

#[test]
fn names_are_unique_and_buckets_are_their_histograms() {
    let mut names = ALL.to_vec();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), ALL.len());
    let buckets = [
        CONNECT_LATENCY_SECONDS_BUCKET,
        RTT_SECONDS_BUCKET,
        SERVICE_CONNECT_LATENCY_SECONDS_BUCKET,
    ];
    for (h, b) in HISTOGRAMS.iter().zip(buckets) {
        assert!(ALL.contains(h));
        assert_eq!(format!("{h}_bucket"), b);
    }
    assert!(declares(RTT_SECONDS_BUCKET) && declares("cellwatch_rtt_seconds_count"));
    assert!(!declares("cellwatch_connections_opened_total_bucket"));
    assert_eq!(
        undeclared("sum(rate(cellwatch_rtt_seconds_sum[5m])) / cellwatch_nope + cellwatch:x"),
        ["cellwatch_nope"]
    );
}

/// Every `cellwatch_*` name the shipped dashboards, rules and the rules' tests use is
/// a family the agent declares.
#[test]
fn the_shipped_dashboards_and_rules_use_declared_families() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files: Vec<_> = std::fs::read_dir(repo.join("dashboards"))
        .expect("dashboards/")
        .map(|e| e.expect("a dashboard").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert!(files.len() >= 4, "{files:?}");
    for f in [
        "deploy/prometheus/cellwatch-rules.yaml",
        "deploy/prometheus/cellwatch-rules.test.yaml",
        "deploy/kustomize/prometheusrule.yaml",
    ] {
        files.push(repo.join(f));
    }
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{f:?}: {e}"));
        assert!(text.contains("cellwatch_"), "{f:?} names no family");
        assert_eq!(undeclared(&text), Vec::<&str>::new(), "{f:?}");
    }
}
