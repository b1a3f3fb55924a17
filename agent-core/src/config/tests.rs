use super::*;

fn problems(yaml: &str) -> Vec<String> {
    match Config::parse("c.yaml", yaml) {
        Ok(c) => panic!("expected problems, got {c:?}"),
        Err(e) => e.to_string().lines().map(str::to_owned).collect(),
    }
}

const GOOD: &str = "\
cells:
  - name: global
    global: true
    cidrs: [\"10.0.0.0/16\"]
  - name: cell-1
    cidrs: [\"10.1.0.0/16\", \"fd00:1::/48\"]
  - name: cell-2
    cidrs: [\"10.2.0.0/16\"]
allow:
  - { from: cell-1, to: cell-2, ports: [5432] }
external: violation
mode: enforce
enforce_cells: [cell-1]
";

#[test]
fn the_contract_example_parses() {
    let c = Config::parse("c.yaml", GOOD).unwrap();
    assert_eq!(c.cells.len(), 3);
    assert!(c.cells[0].global);
    assert_eq!(c.prefix_count(), 4);
    assert_eq!(
        c.allow,
        vec![AllowRule {
            from: "cell-1".into(),
            to: "cell-2".into(),
            ports: vec![5432],
            until: None,
            reason: String::new(),
        }]
    );
    assert_eq!(c.external, External::Violation);
    assert_eq!(c.mode, Mode::Enforce);
    assert_eq!(c.enforce_cells, Some(vec!["cell-1".to_owned()]));
    // ignore_cidrs absent: the loopback default applies.
    assert_eq!(c.ignore_cidrs.len(), 2);
}

#[test]
fn embedded_default_is_valid_and_empty() {
    let c = Config::embedded_default();
    assert!(c.cells.is_empty());
    assert_eq!(c.mode, Mode::Audit);
    assert_eq!(c.external, External::Allow);
    assert_eq!(
        c.ignore_cidrs,
        vec!["127.0.0.0/8".parse::<IpNet>().unwrap(), "::1/128".parse().unwrap()]
    );
}

#[test]
fn empty_ignore_list_watches_loopback() {
    let c = Config::parse("c.yaml", "cells: []\nignore_cidrs: []\n").unwrap();
    assert!(c.ignore_cidrs.is_empty());
}

/// One bad input per problem class, each with the location it must point at.
#[test]
fn each_problem_class_is_reported_located() {
    let cases: &[(&str, &str, &str)] = &[
        ("duplicate", "cells:\n  - name: a\n  - name: a\n", "c.yaml:3:11: duplicate cell name `a`"),
        (
            "same prefix",
            "cells:\n  - name: a\n    cidrs: [10.0.0.0/8]\n  - name: b\n    cidrs: [10.0.0.0/8]\n",
            "c.yaml:5:13: prefix 10.0.0.0/8 is in two cells: `a` and `b`",
        ),
        (
            "unknown cell in allow",
            "cells:\n  - name: a\nallow:\n  - { from: a, to: zz }\n",
            "c.yaml:4:20: allow rule names unknown cell `zz`",
        ),
        (
            "invalid cidr",
            "cells:\n  - name: a\n    cidrs: [10.0.0.0/33]\n",
            "c.yaml:3:13: invalid CIDR `10.0.0.0/33`",
        ),
        (
            "host bits",
            "cells:\n  - name: a\n    cidrs: [10.1.2.3/16]\n",
            "c.yaml:3:13: prefix 10.1.2.3/16 has host bits set: did you mean 10.1.0.0/16?",
        ),
        (
            "port out of range",
            "cells:\n  - name: a\n  - name: b\nallow:\n  - { from: a, to: b, ports: [70000] }\n",
            "c.yaml:5:31: port 70000 is out of range (1-65535)",
        ),
        ("bad name", "cells:\n  - name: Cell_1\n", "c.yaml:2:11: invalid cell name `Cell_1`"),
        (
            "reserved name",
            "cells:\n  - name: external\n",
            "c.yaml:2:11: the cell name `external` is reserved",
        ),
        ("unknown mode", "cells: []\nmode: block\n", "c.yaml:2:7: unknown `mode` value `block`"),
        (
            "unknown external",
            "cells: []\nexternal: deny\n",
            "c.yaml:2:11: unknown `external` value `deny`",
        ),
        ("unknown key", "cells: []\nmodes: audit\n", "c.yaml:2:1: unknown field `modes`"),
        ("empty", "", "c.yaml:1:1: the config is empty"),
        ("not yaml", "cells: [\n", "c.yaml:"),
        ("missing cells", "mode: audit\n", "c.yaml:1:1: missing field `cells`"),
        (
            "unknown enforce cell",
            "cells:\n  - name: a\nenforce_cells: [b]\n",
            "c.yaml:3:17: `enforce_cells` names unknown cell `b`",
        ),
    ];
    for (what, yaml, want) in cases {
        let got = problems(yaml);
        assert!(
            got.iter().any(|l| l.starts_with(want)),
            "{what}: expected a line starting {want:?}, got {got:?}"
        );
    }
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let yaml = "cells:\n  - name: A\n    cidrs: [nope, 10.0.0.0/8]\n  - name: b\n    cidrs: [10.0.0.0/8]\nmode: x\n";
    let got = problems(yaml);
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(got[0].starts_with("c.yaml:2:11: invalid cell name `A`"));
    assert!(got[1].starts_with("c.yaml:3:13: invalid CIDR `nope`"));
    assert!(got[2].starts_with("c.yaml:5:13: prefix 10.0.0.0/8 is in two cells"));
    assert!(got[3].starts_with("c.yaml:6:7: unknown `mode` value `x`"));
}

#[test]
fn binary_garbage_is_a_located_error_not_a_panic() {
    let dir = std::env::temp_dir().join(format!("cw-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("garbage.yaml");
    let bytes: Vec<u8> =
        (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(&path, &bytes).unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:", path.display())), "{err}");
    let big = dir.join("big.yaml");
    let size = usize::try_from(MAX_CONFIG_BYTES + 1).unwrap();
    std::fs::write(&big, vec![b'#'; size]).unwrap();
    let err = Config::load(&big).unwrap_err().to_string();
    assert!(err.contains("more than the"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn control_characters_and_long_values_stay_on_one_line() {
    // Found by the fuzzer: a CIDR with carriage returns in it spanned many lines.
    let long = "x".repeat(500);
    let yaml =
        format!("cells:\n  - name: a\n    cidrs: [\"1\r\r\n27.0.0.0/8\"]\nmode: \"{long}\"\n");
    let got = problems(&yaml);
    assert_eq!(got.len(), 2, "{got:?}");
    // YAML folds the CRs into a line break; it is escaped, never printed raw.
    assert!(got[0].starts_with("c.yaml:3:13: invalid CIDR `1\\n27.0.0.0/8`"), "{got:?}");
    assert!(got[1].len() < 200, "long value not cut: {}", got[1]);
    assert!(got[1].contains("xxxx…"), "{}", got[1]);
}

const SERVICES: &str = "\
cells:
  - name: global
    global: true
    cidrs: [\"10.0.0.0/16\", \"fd00::/48\"]
  - name: cell-1
    cidrs: [\"10.1.0.0/16\", \"10.1.9.0/24\"]
  - name: cell-2
    cidrs: [\"10.2.0.0/16\", \"10.0.7.0/24\"]
ignore_cidrs: [\"10.0.200.0/24\"]
";

#[test]
fn services_parse_with_their_cell() {
    let c = Config::parse(
        "c.yaml",
        &format!(
            "{SERVICES}services:\n  - {{ name: orders-db, cidrs: [\"10.0.5.0/24\", \"fd00::5/128\"], ports: [5432, 5432, 6432] }}\n  - {{ name: queue, cidrs: [\"10.0.5.0/24\"], ports: [5672] }}\n  - {{ name: store, cidrs: [\"10.0.6.0/24\"] }}\n"
        ),
    )
    .unwrap();
    assert_eq!(c.services.len(), 3);
    assert_eq!(c.services[0].cell, "global");
    assert_eq!(c.services[0].ports, vec![5432, 6432]);
    assert!(c.services[2].ports.is_empty());
}

#[test]
fn a_service_may_serve_udp_beside_a_tcp_one_on_the_same_address_and_port() {
    let c = Config::parse(
        "c.yaml",
        &format!(
            "{SERVICES}services:\n  - {{ name: dns, cidrs: [\"10.0.0.53/32\"], ports: [53], protocol: udp }}\n  - {{ name: dns-tcp, cidrs: [\"10.0.0.53/32\"], ports: [53] }}\n  - {{ name: web, cidrs: [\"10.0.1.0/24\"], protocol: tcp }}\n"
        ),
    )
    .unwrap();
    let protocols: Vec<_> = c.services.iter().map(|s| s.protocol).collect();
    assert_eq!(protocols, [Protocol::Udp, Protocol::Tcp, Protocol::Tcp]);
    let mut ids = crate::ids::CellIds::default();
    let compiled = crate::policy::compile(&c, &mut ids).unwrap();
    let dns = ids.service_id("dns").unwrap();
    let ip = |s: &str| s.parse::<IpNet>().unwrap();
    assert_eq!(compiled.ported_udp, vec![(ip("10.0.0.53/32"), 53, dns)]);
    assert!(compiled.ported.iter().all(|(_, _, id)| *id != dns), "not in the TCP tries");
    let addr = "10.0.0.53".parse().unwrap();
    assert_eq!(crate::policy::service_of(&c, addr, 53, Protocol::Udp), Some("dns"));
    assert_eq!(crate::policy::service(&c, addr, 53), Some("dns-tcp"));
}

#[test]
fn bad_services_are_each_reported_where_they_are() {
    let svc = |s: &str| format!("{SERVICES}services:\n{s}");
    let cases: &[(&str, &str)] = &[
        (
            "  - { name: Orders, cidrs: [\"10.0.5.0/24\"] }\n",
            "c.yaml:11:13: invalid service name `Orders`",
        ),
        (
            "  - { name: db, cidrs: [\"10.0.5.0/24\"], ports: [5432] }\n  - { name: db, cidrs: [\"10.0.6.0/24\"] }\n",
            "c.yaml:12:13: duplicate service name `db`",
        ),
        (
            "  - { name: db, cidrs: [\"10.0.5.0/24\"], ports: [0] }\n",
            "c.yaml:11:49: port 0 is out of range",
        ),
        (
            "  - { name: db, cidrs: [\"10.0.5.0/24\"], ports: [] }\n",
            "c.yaml:11:13: service has an empty `ports` list",
        ),
        ("  - { name: db }\n", "c.yaml:11:13: service `db` has no `cidrs`"),
        (
            "  - { name: dns, cidrs: [\"10.0.5.0/24\"], protocol: udp }\n",
            "c.yaml:11:52: service `dns` has `protocol: udp` but no `ports`",
        ),
        (
            "  - { name: dns, cidrs: [\"10.0.5.0/24\"], ports: [53], protocol: sctp }\n",
            "c.yaml:11:65: unknown protocol `sctp`: use tcp or udp",
        ),
        (
            "  - { name: a, cidrs: [\"10.0.5.0/24\"], ports: [53], protocol: udp }\n  - { name: b, cidrs: [\"10.0.5.7/32\"], ports: [53], protocol: udp }\n",
            "overlaps 10.0.5.0/24 of service `a`",
        ),
        (
            "  - { name: db, cidrs: [\"10.9.0.0/24\"] }\n",
            "c.yaml:11:25: prefix 10.9.0.0/24 of service `db` is in no cell",
        ),
        ("  - { name: db, cidrs: [\"10.0.200.0/25\"] }\n", "is in an ignored range"),
        (
            "  - { name: db, cidrs: [\"10.0.0.0/20\"] }\n",
            "spans cell `global` and cell `cell-2` (10.0.7.0/24)",
        ),
        (
            "  - { name: db, cidrs: [\"10.0.192.0/18\"] }\n",
            "spans cell `global` and an ignored range (10.0.200.0/24)",
        ),
        (
            "  - { name: db, cidrs: [\"10.0.5.0/24\", \"10.2.5.0/24\"] }\n",
            "c.yaml:11:40: service `db` lies in two cells, `global` and `cell-2`",
        ),
        (
            "  - { name: db, cidrs: [\"10.0.5.0/24\", \"10.0.5.0/24\"] }\n",
            "prefix 10.0.5.0/24 is listed twice in service `db`",
        ),
        (
            "  - { name: db, cidrs: [\"10.0.5.0/24\"], ports: [5432] }\n  - { name: db2, cidrs: [\"10.0.5.7/32\"], ports: [5432, 80] }\n",
            "c.yaml:12:26: prefix 10.0.5.7/32 of service `db2` overlaps 10.0.5.0/24 of service `db`",
        ),
        (
            "  - { name: db, cidrs: [\"10.0.5.0/24\"], ports: [5432] }\n  - { name: all, cidrs: [\"10.0.5.128/25\"] }\n",
            "c.yaml:12:26: prefix 10.0.5.128/25 of service `all` overlaps 10.0.5.0/24 of service `db`",
        ),
        ("  - { name: db, cidrs: [\"10.0.5.0/24\"], port: [1] }\n", "unknown field `port`"),
    ];
    for (yaml, want) in cases {
        let got = problems(&svc(yaml));
        assert!(got.iter().any(|l| l.contains(want)), "{yaml}: want {want:?}, got {got:?}");
    }
}

#[test]
fn service_cidrs_are_parsed_and_each_problem_located() {
    let ok = Config::parse(
        "c.yaml",
        "cells:\n  - name: a\n    cidrs: [10.1.0.0/16]\nservice_cidrs: [10.96.0.0/12, \"fd00:96::/108\"]\n",
    )
    .unwrap();
    assert_eq!(
        ok.service_cidrs,
        vec!["10.96.0.0/12".parse::<IpNet>().unwrap(), "fd00:96::/108".parse().unwrap()]
    );
    let got = problems(
        "cells:\n  - name: a\n    cidrs: [10.1.0.0/16]\n  - name: unresolved\n    cidrs: [10.2.0.0/16]\n\
         service_cidrs: [10.96.0.0/12, 10.1.0.0/16, bad, 10.96.0.0/12, 127.0.0.0/8]\n",
    );
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(got[0].starts_with("c.yaml:4:11: the cell name `unresolved` is reserved"), "{got:?}");
    assert!(
        got[1]
            .starts_with("c.yaml:6:31: prefix 10.1.0.0/16 is both a Service range and in cell `a`"),
        "{got:?}"
    );
    assert!(got[2].starts_with("c.yaml:6:44: invalid CIDR `bad`"), "{got:?}");
    assert!(got[3].starts_with("c.yaml:6:49: prefix 10.96.0.0/12 is listed twice"), "{got:?}");
    assert!(
        got[4].starts_with("c.yaml:6:63: prefix 127.0.0.0/8 is both a Service range and ignored"),
        "{got:?}"
    );
    // The kernel's tries hold each range as the service-address entry.
    let compiled = crate::policy::compile(&ok, &mut crate::ids::CellIds::default()).unwrap();
    assert!(
        compiled
            .prefixes
            .contains(&("10.96.0.0/12".parse().unwrap(), agent_common::CELL_SERVICE_ADDR))
    );
}

const DRAINS: &str = "\
cells:
  - name: cell-1
    cidrs: [\"10.1.0.0/16\"]
  - name: cell-2
    cidrs: [\"10.2.0.0/16\"]
    drained: \"2026-12-01T10:00:00Z\"
    drain: refuse
  - name: cell-3
    cidrs: [\"10.3.0.0/16\"]
    drained: true
  - name: cell-4
    cidrs: [\"10.4.0.0/16\"]
    drained: false
allow:
  - { from: cell-1, to: cell-2, ports: [5432], until: \"2026-12-15T00:00:00+01:00\", reason: \"orders migration\" }
  - { from: cell-1, to: cell-3 }
";

#[test]
fn drains_and_temporary_rules_parse() {
    use std::time::{Duration, SystemTime};
    let c = Config::parse("c.yaml", DRAINS).unwrap();
    let at = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
    assert_eq!(c.cells[0].drain, None);
    assert_eq!(c.cells[1].drain, Some(Drain { since: Some(at(1_796_119_200)), refuse: true }));
    assert_eq!(c.cells[2].drain, Some(Drain { since: None, refuse: false }));
    assert_eq!(c.cells[3].drain, None, "drained: false is not drained");
    let rule = &c.allow[0];
    // 2026-12-15T00:00:00+01:00 is 2026-12-14T23:00:00Z.
    assert_eq!(
        rule.until.as_ref().map(|d| (d.at, d.line, d.column)),
        Some((at(1_797_289_200), 15, 55))
    );
    assert_eq!(rule.reason, "orders migration");
    assert_eq!((c.allow[1].until.as_ref(), c.allow[1].reason.as_str()), (None, ""));
    assert_eq!(rfc3339(rule.until.as_ref().unwrap().at), "2026-12-14T23:00:00Z");
}

#[test]
fn an_expired_rule_is_a_located_warning() {
    use std::time::{Duration, SystemTime};
    let c = Config::parse("c.yaml", DRAINS).unwrap();
    let before = SystemTime::UNIX_EPOCH + Duration::from_secs(1_797_289_199);
    assert!(c.warnings(before).is_empty());
    let w = c.warnings(before + Duration::from_secs(1));
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!((w[0].line, w[0].column), (15, 55));
    assert!(w[0].message.contains("cell-1 -> cell-2 expired at 2026-12-14T23:00:00Z"), "{w:?}");
}

#[test]
fn bad_drains_and_deadlines_are_located() {
    let got = problems(
        "cells:\n  - name: a\n    drained: yesterday\n    drain: maybe\nallow:\n  - { from: a, to: a, until: \"2026-13-01T00:00:00Z\", reason: \"x\" }\n",
    );
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got[0].starts_with("c.yaml:3:14: `drained`: `yesterday` is not an RFC 3339 time"),
        "{got:?}"
    );
    assert!(got[1].starts_with("c.yaml:4:12: unknown `drain` value `maybe`"), "{got:?}");
    assert!(
        got[2].starts_with("c.yaml:6:30: allow rule `until`: `2026-13-01T00:00:00Z` is not"),
        "{got:?}"
    );
}
