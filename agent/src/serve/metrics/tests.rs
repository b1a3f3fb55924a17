//! Unit tests of `metrics`.

use super::*;

#[test]
fn the_agent_metrics_follow_the_kernel_ones() {
    let m = AgentMetrics::new(
        "1.2.3",
        "6.1.0",
        PinnedState::Fresh,
        &[(Feature::DestroySockCookie, true)],
        Options::default(),
    );
    let mut out = Vec::new();
    m.render(&Snapshot::default(), &CellIds::default(), Form::Text, &mut out).unwrap();
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

/// The protobuf form holds the same families, the agent's own included, as delimited
/// messages (each a length, then a family whose first field is its name).
#[test]
fn the_native_form_is_delimited_families_with_the_agents_own() {
    let m = AgentMetrics::new("1.2.3", "6.1.0", PinnedState::Fresh, &[], Options::default());
    let mut out = Vec::new();
    m.render(&Snapshot::default(), &CellIds::default(), Form::Native, &mut out).unwrap();
    let mut names = Vec::new();
    let mut rest = out.as_slice();
    while !rest.is_empty() {
        let (len, used) = varint(rest);
        let fam = &rest[used..used + len];
        assert_eq!(fam[0], 0x0a, "field 1, the name");
        let (n, u) = varint(&fam[1..]);
        names.push(String::from_utf8(fam[1 + u..1 + u + n].to_vec()).unwrap());
        rest = &rest[used + len..];
    }
    for want in ["cellwatch_events_lost_total", "cellwatch_build_info", "cellwatch_start_info"] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
}

fn varint(b: &[u8]) -> (usize, usize) {
    let (mut v, mut shift) = (0usize, 0);
    for (i, byte) in b.iter().enumerate() {
        v |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return (v, i + 1);
        }
        shift += 7;
    }
    panic!("a varint that does not end");
}
