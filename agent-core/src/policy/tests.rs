use std::net::IpAddr;

use super::*;
use crate::{config::Config, ids::EXTERNAL_LABEL};

const CFG: &str = "\
cells:
  - name: global
    global: true
    cidrs: [\"10.0.0.0/16\"]
  - name: cell-1
    cidrs: [\"10.1.0.0/16\", \"fd00:1::/48\"]
  - name: cell-2
    cidrs: [\"10.2.0.0/16\"]
  - name: cell-3
    cidrs: [\"10.3.0.0/16\", \"10.1.99.0/24\"]
allow:
  - { from: cell-1, to: cell-2, ports: [5432] }
  - { from: cell-3, to: cell-1 }
ignore_cidrs: [\"127.0.0.0/8\", \"10.1.200.0/24\"]
";

fn cfg(external: &str) -> Config {
    Config::parse("t.yaml", &format!("{CFG}external: {external}\n")).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn verdict_table() {
    const A: Verdict = Verdict::ALLOWED;
    const V: Verdict = Verdict::VIOLATION;
    let c = cfg("allow");
    let rows: &[(&str, &str, &str, u16, Option<Verdict>)] = &[
        ("same cell", "10.1.0.1", "10.1.5.5", 80, Some(A)),
        ("cross cell", "10.1.0.1", "10.2.0.1", 80, Some(V)),
        ("to global", "10.1.0.1", "10.0.0.1", 443, Some(A)),
        ("from global", "10.0.0.1", "10.2.0.1", 443, Some(A)),
        ("allow rule, its port", "10.1.0.1", "10.2.0.1", 5432, Some(A)),
        ("allow rule, other port", "10.1.0.1", "10.2.0.1", 5433, Some(V)),
        ("allow rule is one-way", "10.2.0.1", "10.1.0.1", 5432, Some(V)),
        ("allow rule, every port", "10.3.0.1", "10.1.0.1", 9999, Some(A)),
        ("longest prefix wins", "10.1.99.7", "10.3.0.1", 80, Some(A)),
        ("longest prefix wins, other way", "10.1.99.7", "10.1.0.1", 80, Some(A)),
        ("IPv6 same cell", "fd00:1::1", "10.1.0.9", 80, Some(A)),
        ("IPv6 cross cell", "fd00:1::1", "10.2.0.9", 80, Some(V)),
        ("v4-mapped resolves as IPv4", "::ffff:10.1.0.1", "::ffff:10.2.0.1", 80, Some(V)),
        ("ignored range", "127.0.0.1", "127.0.0.2", 80, None),
        ("ignored inside a cell", "10.1.200.1", "10.2.0.1", 80, None),
        ("external allowed", "10.1.0.1", "192.0.2.1", 80, Some(A)),
        ("both external", "192.0.2.1", "198.51.100.1", 80, Some(A)),
    ];
    for (what, a, b, port, want) in rows {
        assert_eq!(verdict(&c, ip(a), ip(b), *port), *want, "{what}");
    }
    let v = cfg("violation");
    assert_eq!(verdict(&v, ip("10.1.0.1"), ip("192.0.2.1"), 80), Some(V));
    assert_eq!(verdict(&v, ip("192.0.2.1"), ip("10.1.0.1"), 80), Some(V));
    assert_eq!(verdict(&v, ip("10.0.0.1"), ip("192.0.2.1"), 80), Some(V), "external beats global");
    assert_eq!(verdict(&v, ip("192.0.2.1"), ip("198.51.100.1"), 80), Some(A), "no cell crossed");
    let i = cfg("ignore");
    assert_eq!(verdict(&i, ip("10.1.0.1"), ip("192.0.2.1"), 80), None);
    assert_eq!(
        verdict(&i, ip("192.0.2.1"), ip("198.51.100.1"), 80),
        None,
        "both external, ignored"
    );
    assert_eq!(verdict(&i, ip("10.1.0.1"), ip("10.1.0.2"), 80), Some(A), "cells still tracked");
}

#[test]
fn ids_are_stable_across_recompiles() {
    let mut ids = CellIds::default();
    let a = compile(&cfg("allow"), &mut ids).unwrap();
    let id1 = ids.id("cell-1").unwrap();
    let fewer = Config::parse("t.yaml", "cells:\n  - name: cell-2\n  - name: cell-1\n").unwrap();
    compile(&fewer, &mut ids).unwrap();
    assert_eq!(ids.id("cell-1").unwrap(), id1);
    assert_eq!(ids.name(id1), "cell-1");
    assert_eq!(ids.name(agent_common::CELL_EXTERNAL), EXTERNAL_LABEL);
    assert!(
        a.prefixes
            .iter()
            .any(|(n, id)| n.to_string() == "10.1.200.0/24" && *id == agent_common::CELL_IGNORED)
    );
    // Two port rules and one all-ports rule.
    assert_eq!(a.allow.len(), 2);
    assert!(a.allow.iter().any(|(k, _)| k.port == 0));
}

#[test]
fn restored_ids_keep_their_numbers_and_new_names_go_above() {
    let mut ids = CellIds::default();
    let first = compile(&cfg("allow"), &mut ids).unwrap();
    assert_eq!(first.names.len(), 4, "{:?}", first.names);
    let mut back = CellIds::restore(first.names.clone());
    for (id, name) in &first.names {
        assert_eq!(back.lookup(name), Some(*id));
        assert_eq!(back.name(*id), name);
    }
    let highest = first.names.iter().map(|(id, _)| *id).max().unwrap();
    assert_eq!(back.id("cell-new").unwrap(), highest + 1);
    assert_eq!(back.all().len(), 5);
}

#[test]
fn enforce_flags_follow_mode_and_enforce_cells() {
    let text = |mode: &str, extra: &str| {
        format!(
            "cells:\n  - {{ name: g, global: true }}\n  - {{ name: a }}\n  - {{ name: b }}\nmode: {mode}\n{extra}"
        )
    };
    let flags = |yaml: &str| {
        let cfg = Config::parse("t.yaml", yaml).unwrap();
        let mut ids = CellIds::default();
        let c = compile(&cfg, &mut ids).unwrap();
        let mut f = |name: &str| {
            let id = ids.id(name).unwrap();
            c.info.iter().find(|(i, _)| *i == id).unwrap().1.flags & CELL_FLAG_ENFORCE != 0
        };
        (c.enforce, f("a"), f("b"), enforce_summary(&cfg))
    };
    let (on, a, b, said) = flags(&text("audit", ""));
    assert_eq!((on, a, b), (0, false, false));
    assert!(said.starts_with("off"), "{said}");
    let (on, a, b, said) = flags(&text("enforce", ""));
    assert_eq!((on, a, b), (1, true, true));
    assert!(said.ends_with("from a, b are refused"), "{said}");
    let (on, a, b, said) = flags(&text("enforce", "enforce_cells: [b]\n"));
    assert_eq!((on, a, b), (1, false, true));
    assert!(said.ends_with("from b are refused"), "{said}");
    let (_, a, b, said) = flags(&text("enforce", "enforce_cells: []\n"));
    assert_eq!((a, b, said.as_str()), (false, false, "on, for no cell"));
}

#[test]
fn services_compile_into_the_tries_and_match_the_reference() {
    let c = Config::parse(
        "t.yaml",
        &format!(
            "{CFG}services:\n  - {{ name: db, cidrs: [\"10.0.5.0/24\"], ports: [5432] }}\n  - {{ name: store, cidrs: [\"10.0.6.0/24\", \"10.0.0.0/16\"] }}\n"
        ),
    );
    // A service without ports may not share addresses with any other.
    assert!(c.is_err());
    let c = Config::parse(
        "t.yaml",
        &format!(
            "{CFG}services:\n  - {{ name: db, cidrs: [\"10.0.5.0/24\"], ports: [5432] }}\n  - {{ name: store, cidrs: [\"10.0.6.0/24\"] }}\n"
        ),
    )
    .unwrap();
    let mut ids = CellIds::default();
    let k = compile(&c, &mut ids).unwrap();
    let (g, db, store) = (
        ids.lookup("global").unwrap(),
        ids.service_lookup("db").unwrap(),
        ids.service_lookup("store").unwrap(),
    );
    let net = |s: &str| s.parse::<IpNet>().unwrap();
    assert!(k.prefixes.contains(&(net("10.0.6.0/24"), agent_common::cell_entry(g, store))));
    assert_eq!(k.ported, vec![(net("10.0.5.0/24"), 5432, db)]);
    assert_eq!(k.services.len(), 2);
    assert_eq!(service(&c, ip("10.0.5.9"), 5432), Some("db"));
    assert_eq!(service(&c, ip("10.0.5.9"), 80), None);
    assert_eq!(service(&c, ip("10.0.6.1"), 80), Some("store"));
    assert_eq!(service(&c, ip("::ffff:10.0.6.1"), 1), Some("store"));
    assert_eq!(service(&c, ip("10.0.7.1"), 5432), None);
    assert_eq!(service(&c, ip("192.0.2.1"), 5432), None);
}

/// A service with ports is cidrs x ports entries: past the tries' capacity the compiled
/// config says which map and how many, before anything is written.
#[test]
fn a_config_past_a_maps_capacity_names_the_map_and_the_figures() {
    let cidrs: Vec<String> =
        (0..300).map(|i| format!("\"10.0.{}.{}/32\"", i / 250, i % 250)).collect();
    let ports: Vec<String> = (1..=300).map(|p| p.to_string()).collect();
    let yaml = format!(
        "cells:\n  - {{ name: global, global: true, cidrs: [\"10.0.0.0/16\"] }}\n\
         services:\n  - {{ name: big, cidrs: [{}], ports: [{}] }}\n",
        cidrs.join(", "),
        ports.join(", ")
    );
    let cfg = Config::parse("t.yaml", &yaml).unwrap();
    let c = compile(&cfg, &mut CellIds::default()).unwrap();
    let e = c.fits().unwrap_err();
    assert_eq!((e.map, e.needed, e.capacity), ("SERVICES_V4_A/_B", 90_000, 65_536));
    let shown = e.located("t.yaml").to_string();
    assert!(
        shown.starts_with(
            "t.yaml:1:1: the config needs 90000 entries in the kernel map SERVICES_V4_A/_B"
        ),
        "{shown}"
    );
    assert!(compile(&cfg_of_default(), &mut CellIds::default()).unwrap().fits().is_ok());
}

fn cfg_of_default() -> Config {
    cfg("allow")
}

/// A cell's more specific prefix inside a service without ports wins the kernel's
/// longest-prefix match, so it names the service too, as the reference does (found by
/// the kernel-vs-reference property test on 6.12).
#[test]
fn a_cells_nested_prefix_inside_a_service_names_the_service() {
    let yaml = "cells:\n  - name: g\n    global: true\n    cidrs: [\"10.6.0.0/22\", \"10.6.0.0/23\"]\n\
                services:\n  - { name: s2, cidrs: [\"10.6.0.0/22\"] }\n";
    let cfg = Config::parse("t.yaml", yaml).unwrap();
    let mut ids = CellIds::default();
    let c = compile(&cfg, &mut ids).unwrap();
    let svc = ids.service_id("s2").unwrap();
    for p in ["10.6.0.0/22", "10.6.0.0/23"] {
        let net: IpNet = p.parse().unwrap();
        let entry = c.prefixes.iter().find(|(n, _)| *n == net).unwrap().1;
        assert_eq!(agent_common::entry_service(entry), svc, "{p}");
    }
    assert_eq!(service(&cfg, ip("10.6.1.9"), 80), Some("s2"));
}

const DRAINED: &str = "\
cells:
  - name: cell-1
    cidrs: [\"10.1.0.0/16\"]
  - name: cell-2
    cidrs: [\"10.2.0.0/16\"]
    drained: true
    drain: refuse
allow:
  - { from: cell-1, to: cell-2, ports: [5432], until: \"2026-12-15T00:00:00Z\", reason: migration }
  - { from: cell-1, to: cell-2, ports: [80], until: \"2026-12-15T00:00:00Z\" }
  - { from: cell-1, to: cell-2, ports: [80] }
";

#[test]
fn drains_and_deadlines_compile() {
    use std::time::Duration;
    let at = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
    let deadline = at(1_797_292_800);
    for (mode, refuse) in [("audit", false), ("enforce", true)] {
        let c = Config::parse("t.yaml", &format!("{DRAINED}mode: {mode}\n")).unwrap();
        let mut ids = CellIds::default();
        let out = compile(&c, &mut ids).unwrap();
        let two = ids.lookup("cell-2").unwrap();
        let flags = out.info.iter().find(|(id, _)| *id == two).unwrap().1.flags;
        assert_ne!(flags & CELL_FLAG_DRAINED, 0, "{mode}");
        assert_eq!(
            flags & CELL_FLAG_DRAIN_REFUSE != 0,
            refuse,
            "drain: refuse only enforces in enforce mode"
        );
        assert_eq!(out.drains, vec![(two, None)]);
        // Port 80 has a rule with no deadline too: it wins.
        let until: Vec<_> = out.allow.iter().map(|(k, u)| (k.port, *u)).collect();
        assert_eq!(until, vec![(80, None), (5432, Some(deadline))], "{mode}");
        assert_eq!(out.temporary.len(), 1, "the port-80 one is covered for good");
        assert_eq!(out.temporary[0].reason, "migration");
    }
    let c = Config::parse("t.yaml", DRAINED).unwrap();
    let v = |port, now| verdict_at(&c, ip("10.1.0.1"), ip("10.2.0.1"), port, now);
    let second = Duration::from_secs(1);
    assert_eq!(v(5432, deadline - second), Some(Verdict::ALLOWED));
    assert_eq!(v(5432, deadline), Some(Verdict::VIOLATION), "a violation from the deadline on");
    assert_eq!(v(80, deadline + second), Some(Verdict::ALLOWED));
}

#[test]
fn a_temporary_rule_a_permanent_one_covers_has_no_deadline_to_show() {
    let c = Config::parse(
        "t.yaml",
        "cells:\n  - { name: a, cidrs: [\"10.1.0.0/16\"] }\n  - { name: b, cidrs: [\"10.2.0.0/16\"] }\n\
         allow:\n  - { from: a, to: b, ports: [80, 443], until: \"2026-12-15T00:00:00Z\" }\n  \
         - { from: a, to: b, ports: [443], until: \"2026-12-16T00:00:00Z\" }\n  \
         - { from: a, to: b, ports: [5432], until: \"2026-12-15T00:00:00Z\", reason: db }\n  \
         - { from: a, to: b, ports: [80, 443] }\n",
    )
    .unwrap();
    let out = compile(&c, &mut CellIds::default()).unwrap();
    let shown: Vec<_> = out.temporary.iter().map(|t| t.reason.as_str()).collect();
    assert_eq!(shown, ["db"], "80 and 443 are allowed for good: those rules expire unseen");
}

#[test]
fn one_expiry_gauge_per_label_set() {
    use std::time::Duration;
    let t = |reason: &str, s| Temporary {
        from: "a".into(),
        to: "b".into(),
        reason: reason.into(),
        until: SystemTime::UNIX_EPOCH + Duration::from_secs(s),
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
    let rules = [t("", 50), t("", 300), t("", 200), t("x", 10), t("x", 20)];
    let got: Vec<_> = expiry_gauges(&rules, now).into_iter().map(|r| (r.reason, r.until)).collect();
    let at = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
    assert_eq!(got, [(String::new(), at(200)), ("x".to_owned(), at(20))]);
}
