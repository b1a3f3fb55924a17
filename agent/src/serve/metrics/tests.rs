//! Unit tests of `metrics`.

use super::*;

#[test]
fn the_agent_metrics_follow_the_kernel_ones() {
    let m = AgentMetrics::new(
        "1.2.3",
        "6.1.0",
        PinnedState::Fresh,
        &[(Feature::DestroySockCookie, true)],
        Buckets::default(),
    );
    let mut out = Vec::new();
    m.render(&Snapshot::default(), &CellIds::default(), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    for want in [
        r#"cellwatch_build_info{kernel="6.1.0",version="1.2.3"} 1"#,
        r#"cellwatch_config_reloads_total{result="error"} 0"#,
        r#"cellwatch_start_info{pinned_state="fresh"} 1"#,
        r#"cellwatch_kernel_feature{feature="destroy_sock_cookie"} 1"#,
        r#"cellwatch_events_lost_total{source="conn_table_full"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == want), "missing line {want}\n---\n{text}");
    }
    assert!(!text.contains("cellwatch_connections_opened_total"), "{text}");
}
