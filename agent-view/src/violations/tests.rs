//! Unit tests of `violations`.

use super::*;

fn violation(t: f64, src: &str, dst: &str, dir: &str, pid: Option<u32>) -> Violation {
    Violation {
        time: t,
        src: End { cell: src.into(), addr: "127.0.0.1".parse().unwrap(), port: 40_000 },
        dst: End { cell: dst.into(), addr: "::1".parse().unwrap(), port: 80 },
        direction: dir.into(),
        pid,
        comm: pid.map(|_| "curl".to_owned()),
        denied: false,
    }
}

#[test]
fn newest_violation_per_pair_prefers_the_client_side() {
    let events = vec![
        violation(10.0, "c3", "c2", "ingress", None),
        violation(10.0, "c3", "c2", "egress", Some(7)),
        violation(9.0, "c1", "c3", "egress", Some(8)),
        violation(8.0, "c3", "c2", "egress", Some(9)),
        violation(7.0, "c1", "c3", "ingress", None),
    ];
    let l = latest_per_pair(&events, None, 5);
    assert_eq!(l.len(), 2);
    assert_eq!((l[0].src.cell.as_str(), l[0].pid), ("c3", Some(7)));
    assert_eq!((l[1].src.cell.as_str(), l[1].pid), ("c1", Some(8)));
    assert_eq!(latest_per_pair(&events, Some("c1"), 5).len(), 1);
    assert_eq!(latest_per_pair(&events, None, 1).len(), 1);
    let line = violation_line(l[0], 13.0);
    assert_eq!(line, "  3s ago  c3 -> c2  curl[7]  127.0.0.1:40000 -> [::1]:80");
    let denied = Violation { denied: true, ..violation(0.0, "a", "b", "egress", None) };
    assert!(violation_line(&denied, 7200.0).contains("2h ago  a -> b  -  "));
    assert!(violation_line(&denied, 0.0).ends_with("(refused: enforce mode)"));
    // A process that names itself with escape sequences erases nothing on screen.
    let rogue = Violation {
        comm: Some("\u{1b}[2J\u{1b}[Hok\r".to_owned()),
        ..violation(0.0, "a", "b", "egress", Some(7))
    };
    let shown = violation_line(&rogue, 0.0);
    assert!(!shown.chars().any(char::is_control), "{shown:?}");
    assert!(shown.contains("\\u{1b}[2J\\u{1b}[Hok\\r[7]"), "{shown}");
}

#[test]
fn violations_parse_from_the_endpoint_body() {
    let body = r#"[{"time":1.5,"src":{"cell":"a","addr":"127.0.0.1","port":1},
            "dst":{"cell":"b","addr":"127.0.0.2","port":2},"direction":"egress","pid":3,
            "comm":"x","cgroup_id":null,"cgroup":null,"container_id":null,"pod_uid":null,
            "cookie":9,"denied":false}]"#;
    let v = parse_violations(body).unwrap();
    assert_eq!((v[0].pid, v[0].dst.port, v[0].denied), (Some(3), 2, false));
    assert!(parse_violations("{}").is_err());
}
