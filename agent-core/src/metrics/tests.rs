use agent_common::{Direction, Failure, PairKey, PairStats, Verdict};

use crate::{
    ids::CellIds,
    metrics::{Buckets, Catalog, MapFill, Options, Snapshot},
};

fn key(src: u32, dst: u32, dir: Direction, verdict: u8) -> PairKey {
    PairKey::new(src, dst, dir, Verdict(verdict))
}

fn render(snap: &Snapshot, ids: &CellIds) -> String {
    let mut out = String::new();
    super::render(snap, ids, &Options { buckets: Buckets::all(), ..Options::default() }, &mut out);
    out
}

#[test]
fn snapshot_renders_the_contract_metrics() {
    let mut ids = CellIds::default();
    let (a, b) = (ids.id("cell-a").unwrap(), ids.id("cell-b").unwrap());
    let mut s = PairStats::ZERO;
    s.opened = 5;
    s.closed = 3;
    s.violations = 6;
    s.failed[Failure::REFUSED] = 1;
    s.bytes_sent = 1000;
    s.latency_hist[3] = 5; // below 8 µs
    s.latency_sum_ns = 20_000;
    s.rtt_hist[5] = 1;
    let mut ing = PairStats::ZERO;
    ing.opened = 5;
    let snap = Snapshot {
        pairs: vec![
            (key(a, b, Direction::EGRESS, Verdict::VIOLATION.0), s),
            (key(a, b, Direction::INGRESS, Verdict::VIOLATION.0), ing),
        ],
        counters: [0; agent_common::COUNTERS_LEN as usize],
        fill: vec![MapFill { map: "conns", entries: 2, capacity: 10 }],
        undecodable_events: 3,
        log_suppressed: 4,
        ops: Vec::new(),
        catalog: Catalog::default(),
        holdouts: Vec::new(),
        ..Snapshot::default()
    };
    let text = render(&snap, &ids);
    for want in [
        r#"cellwatch_connections_opened_total{src_cell="cell-a",dst_cell="cell-b",direction="egress",verdict="violation"} 5"#,
        r#"cellwatch_connections_closed_total{src_cell="cell-a",dst_cell="cell-b",direction="egress",verdict="violation"} 3"#,
        r#"cellwatch_connections_active{src_cell="cell-a",dst_cell="cell-b",direction="egress"} 2"#,
        r#"cellwatch_connections_active{src_cell="cell-a",dst_cell="cell-b",direction="ingress"} 5"#,
        r#"cellwatch_connections_failed_total{src_cell="cell-a",dst_cell="cell-b",reason="refused"} 1"#,
        r#"cellwatch_connections_failed_total{src_cell="cell-a",dst_cell="cell-b",reason="timeout"} 0"#,
        r#"cellwatch_boundary_violations_total{src_cell="cell-a",dst_cell="cell-b",direction="egress"} 6"#,
        r#"cellwatch_bytes_sent_total{src_cell="cell-a",dst_cell="cell-b",direction="egress"} 1000"#,
        r#"cellwatch_connect_latency_seconds_bucket{src_cell="cell-a",dst_cell="cell-b",le="0.000004"} 0"#,
        r#"cellwatch_connect_latency_seconds_bucket{src_cell="cell-a",dst_cell="cell-b",le="0.000008"} 5"#,
        r#"cellwatch_connect_latency_seconds_bucket{src_cell="cell-a",dst_cell="cell-b",le="+Inf"} 5"#,
        r#"cellwatch_connect_latency_seconds_sum{src_cell="cell-a",dst_cell="cell-b"} 0.00002"#,
        r#"cellwatch_connect_latency_seconds_count{src_cell="cell-a",dst_cell="cell-b"} 5"#,
        r#"cellwatch_map_entries{map="conns"} 2"#,
        r#"cellwatch_map_capacity{map="conns"} 10"#,
        r#"cellwatch_events_lost_total{source="conn_table_full"} 0"#,
        r#"cellwatch_events_lost_total{source="violation_undecodable"} 3"#,
        "cellwatch_violation_log_suppressed_total 4",
        "# TYPE cellwatch_rtt_seconds histogram",
        "# TYPE cellwatch_connections_active gauge",
    ] {
        assert!(text.lines().any(|l| l == want), "missing line {want}\n---\n{text}");
    }
    // Ingress keys feed no client-side family, and no RTT when the client is in a cell.
    assert_eq!(text.matches("cellwatch_connect_latency_seconds_count{").count(), 1);
    assert_eq!(text.matches("cellwatch_rtt_seconds_count{").count(), 1);
}

#[test]
fn rtt_is_counted_once_per_connection() {
    let mut ids = CellIds::default();
    let a = ids.id("cell-a").unwrap();
    let ext = agent_common::CELL_EXTERNAL;
    let mut s = PairStats::ZERO;
    s.rtt_hist[4] = 2;
    let snap = Snapshot {
        pairs: vec![
            (key(a, a, Direction::EGRESS, 0), s),
            (key(a, a, Direction::INGRESS, 0), s),
            (key(ext, a, Direction::INGRESS, 0), s),
        ],
        ..Snapshot::default()
    };
    let text = render(&snap, &ids);
    let mut counts: Vec<&str> =
        text.lines().filter(|l| l.starts_with("cellwatch_rtt_seconds_count{")).collect();
    counts.sort_unstable();
    assert_eq!(
        counts,
        [
            r#"cellwatch_rtt_seconds_count{src_cell="cell-a",dst_cell="cell-a",direction="egress"} 2"#,
            r#"cellwatch_rtt_seconds_count{src_cell="external",dst_cell="cell-a",direction="ingress"} 2"#,
        ],
        "{text}"
    );
}

#[test]
fn buckets_are_powers_of_two_microseconds() {
    let b: Vec<f64> = Buckets::all().bounds().collect();
    assert_eq!(b.len(), agent_common::HIST_BUCKETS - 1);
    assert_eq!(b[0], 1e-6);
    assert_eq!(b[10], 1024e-6);
}

/// Samples of one active pair seen from both ends, with default buckets.
fn pair_samples(verdict: u8, denied: u64) -> usize {
    let mut ids = CellIds::default();
    let (a, b) = (ids.id("cell-a").unwrap(), ids.id("cell-b").unwrap());
    let mut s = PairStats::ZERO;
    s.opened = 10;
    s.closed = 9;
    s.bytes_sent = 100;
    s.latency_hist[8] = 10;
    s.rtt_hist[7] = 10;
    s.violations = if verdict == 1 { 10 + denied } else { 0 };
    s.denied = denied;
    let snap = Snapshot {
        pairs: vec![
            (key(a, b, Direction::EGRESS, verdict), s),
            (key(a, b, Direction::INGRESS, verdict), s),
        ],
        ..Snapshot::default()
    };
    let mut text = String::new();
    super::render(&snap, &ids, &Options::default(), &mut text);
    text.lines().filter(|l| l.contains("cell-a") && !l.starts_with('#')).count()
}

/// The scrape-size budget: an active pair seen from both ends, with default buckets, is
/// at most 40 samples, its connections allowed or violations, audited or refused.
#[test]
fn an_active_pair_is_at_most_forty_samples() {
    assert_eq!(pair_samples(0, 0), 38, "allowed");
    assert_eq!(pair_samples(1, 0), 40, "violations, audited");
    assert_eq!(pair_samples(1, 3), 41, "violations, some refused");
}

#[test]
fn an_empty_snapshot_renders_no_pair_family() {
    let text = render(&Snapshot::default(), &CellIds::default());
    assert!(!text.contains("cellwatch_connections_opened_total"), "{text}");
    assert!(text.contains(r#"cellwatch_events_lost_total{source="conn_table_full"} 0"#), "{text}");
}

/// The chunked render is the same text, in line-ending chunks of about 64 KiB.
#[test]
fn chunked_rendering_is_the_same_text_in_whole_lines() {
    let mut ids = CellIds::default();
    let cells: Vec<u32> = (0..40).map(|i| ids.id(&format!("cell-{i:02}")).unwrap()).collect();
    let mut s = PairStats::ZERO;
    s.opened = 3;
    s.latency_hist[9] = 3;
    s.rtt_hist[7] = 3;
    let pairs = cells
        .iter()
        .flat_map(|a| cells.iter().map(move |b| (key(*a, *b, Direction::EGRESS, 0), s)))
        .collect();
    let snap = Snapshot { pairs, ..Snapshot::default() };
    let whole = render(&snap, &ids);
    let mut chunks = Vec::new();
    super::render_chunked(
        &snap,
        &ids,
        &Options { buckets: Buckets::all(), ..Options::default() },
        &mut |c| chunks.push(c.to_owned()),
    );
    assert!(chunks.len() > 10, "{} chunks of {} bytes", chunks.len(), whole.len());
    for c in &chunks {
        assert!(c.ends_with('\n'), "a chunk ends a line");
        assert!(c.len() < 80 * 1024, "a chunk of {} bytes", c.len());
    }
    assert_eq!(chunks.concat(), whole);
}

/// Connections to a service count in the pair's families (summed with the rest) and in
/// the service's, per client cell; the catalog names cells and services.
#[test]
fn services_have_their_families_and_the_pair_adds_them_up() {
    let mut ids = CellIds::default();
    let (a, g) = (ids.id("cell-a").unwrap(), ids.id("global").unwrap());
    let db = ids.service_id("orders-db").unwrap();
    let mut plain = PairStats::ZERO;
    plain.opened = 2;
    plain.bytes_sent = 10;
    let mut to_db = PairStats::ZERO;
    to_db.opened = 3;
    to_db.closed = 1;
    to_db.bytes_sent = 300;
    to_db.failed[Failure::REFUSED] = 1;
    to_db.latency_hist[9] = 3;
    to_db.latency_sum_ns = 900_000;
    let snap = Snapshot {
        pairs: vec![
            (key(a, g, Direction::EGRESS, Verdict::ALLOWED.0), plain),
            (key(a, g, Direction::EGRESS, Verdict::ALLOWED.0).with_service(db), to_db),
        ],
        catalog: Catalog {
            cells: vec![(a, false), (g, true)],
            services: vec![(db, "orders-db".into(), g)],
            ..Catalog::default()
        },
        ..Snapshot::default()
    };
    let text = render(&snap, &ids);
    for want in [
        r#"cellwatch_connections_opened_total{src_cell="cell-a",dst_cell="global",direction="egress",verdict="allowed"} 5"#,
        r#"cellwatch_bytes_sent_total{src_cell="cell-a",dst_cell="global",direction="egress"} 310"#,
        r#"cellwatch_service_connections_opened_total{src_cell="cell-a",service="orders-db",direction="egress",verdict="allowed"} 3"#,
        r#"cellwatch_service_connections_active{src_cell="cell-a",service="orders-db",direction="egress"} 2"#,
        r#"cellwatch_service_connections_failed_total{src_cell="cell-a",service="orders-db",reason="refused"} 1"#,
        r#"cellwatch_service_bytes_sent_total{src_cell="cell-a",service="orders-db",direction="egress"} 300"#,
        r#"cellwatch_service_connect_latency_seconds_count{src_cell="cell-a",service="orders-db"} 3"#,
        r#"cellwatch_connect_latency_seconds_count{src_cell="cell-a",dst_cell="global"} 3"#,
        r#"cellwatch_cell_info{cell="global",global="true"} 1"#,
        r#"cellwatch_cell_info{cell="cell-a",global="false"} 1"#,
        r#"cellwatch_service_info{service="orders-db",cell="global"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == want), "missing {want}\n---\n{text}");
    }
    // One series per pair and direction, the services folded in.
    let opened =
        text.lines().filter(|l| l.starts_with("cellwatch_connections_opened_total{")).count();
    assert_eq!(opened, 1, "{text}");
}

#[test]
fn drained_cells_render_their_families() {
    use crate::metrics::{Holdout, TemporaryRule};
    let mut ids = CellIds::default();
    let (a, b, c) =
        (ids.id("cell-a").unwrap(), ids.id("cell-b").unwrap(), ids.id("cell-c").unwrap());
    let stats = |opened, closed, drain_opened, drain_denied| PairStats {
        opened,
        closed,
        drain_opened,
        drain_denied,
        ..PairStats::ZERO
    };
    let snap = Snapshot {
        pairs: vec![
            (key(a, b, Direction::EGRESS, Verdict::ALLOWED.0), stats(8, 0, 5, 2)),
            (key(a, b, Direction::EGRESS, Verdict::VIOLATION.0), stats(1, 1, 1, 0)),
            (key(a, b, Direction::INGRESS, Verdict::ALLOWED.0), stats(8, 5, 5, 0)),
            // Into a cell drained no more, which counted two while it was.
            (key(a, c, Direction::EGRESS, Verdict::ALLOWED.0), stats(4, 0, 2, 0)),
        ],
        catalog: Catalog {
            drains: vec![(b, 1_796_119_200)],
            temporary: vec![TemporaryRule {
                from: "cell-a".into(),
                to: "cell-b".into(),
                reason: "orders \"migration\"".into(),
                until: 1_797_292_800,
            }],
            ..Catalog::default()
        },
        holdouts: vec![Holdout {
            cell: b,
            src_cell: a,
            comm: "pool".into(),
            container: "host".into(),
            connections: 3,
        }],
        ..Snapshot::default()
    };
    let text = render(&snap, &ids);
    let want = [
        r#"cellwatch_drain_start_timestamp_seconds{cell="cell-b"} 1796119200"#,
        r#"cellwatch_drain_connections_opened_total{cell="cell-b",src_cell="cell-a",direction="egress"} 6"#,
        r#"cellwatch_drain_connections_opened_total{cell="cell-b",src_cell="cell-a",direction="ingress"} 5"#,
        r#"cellwatch_drain_connections_refused_total{cell="cell-b",src_cell="cell-a"} 2"#,
        r#"cellwatch_drain_connections_active{cell="cell-b",src_cell="cell-a",direction="egress"} 8"#,
        r#"cellwatch_drain_connections_active{cell="cell-b",src_cell="cell-a",direction="ingress"} 3"#,
        r#"cellwatch_drain_holdouts{cell="cell-b",src_cell="cell-a",comm="pool",container="host"} 3"#,
        r#"cellwatch_allow_rule_expiry_timestamp_seconds{from="cell-a",to="cell-b",reason="orders \"migration\""} 1797292800"#,
    ];
    for w in want {
        assert!(text.lines().any(|l| l == w), "missing {w}\n---\n{text}");
    }
    let drain_lines = text.lines().filter(|l| l.starts_with("cellwatch_drain_")).count();
    assert_eq!(drain_lines, 9, "{text}");
    // Into cell-c, not drained now but drained before: its counters go on (a series that
    // came back with each drain would read as new connections), its gauges do not.
    for w in [
        r#"cellwatch_drain_connections_opened_total{cell="cell-c",src_cell="cell-a",direction="egress"} 2"#,
        r#"cellwatch_drain_connections_refused_total{cell="cell-c",src_cell="cell-a"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == w), "missing {w}\n---\n{text}");
    }
    let gauges = ["cellwatch_drain_connections_active", "cellwatch_drain_start_timestamp_seconds"];
    assert!(!text.lines().any(|l| gauges.iter().any(|g| l.starts_with(g)) && l.contains("cell-c")));
}

/// Samples of an allowed and a violating pair (both ends) at each detail level: `pairs`
/// drops the allowed pair's histograms only, `cells` every histogram and the destination.
#[test]
fn each_detail_level_keeps_what_it_says() {
    use crate::metrics::Detail;
    let mut ids = CellIds::default();
    let (a, b, c) =
        (ids.id("cell-a").unwrap(), ids.id("cell-b").unwrap(), ids.id("cell-c").unwrap());
    let mut s = PairStats::ZERO;
    s.opened = 10;
    s.closed = 9;
    s.bytes_sent = 100;
    s.latency_hist[8] = 10;
    s.rtt_hist[7] = 10;
    let mut v = s;
    v.violations = 10;
    let snap = Snapshot {
        pairs: vec![
            (key(a, b, Direction::EGRESS, 0), s),
            (key(a, b, Direction::INGRESS, 0), s),
            (key(a, c, Direction::EGRESS, 1), v),
            (key(a, c, Direction::INGRESS, 1), v),
        ],
        ..Snapshot::default()
    };
    let text = |detail| {
        let mut t = String::new();
        super::render(&snap, &ids, &Options { detail, ..Options::default() }, &mut t);
        t
    };
    let of = |t: &str, dst: &str| {
        t.lines()
            .filter(|l| !l.starts_with('#') && l.contains(&format!("dst_cell=\"{dst}\"")))
            .count()
    };
    let full = text(Detail::Full);
    assert_eq!((of(&full, "cell-b"), of(&full, "cell-c")), (38, 40));
    let pairs = text(Detail::Pairs);
    assert_eq!((of(&pairs, "cell-b"), of(&pairs, "cell-c")), (12, 40), "{pairs}");
    let cells = text(Detail::Cells);
    assert!(!cells.contains("dst_cell="), "{cells}");
    assert!(!cells.contains("_bucket{"), "{cells}");
    for want in [
        r#"cellwatch_connections_opened_total{src_cell="cell-a",direction="egress",verdict="allowed"} 10"#,
        r#"cellwatch_connections_opened_total{src_cell="cell-a",direction="egress",verdict="violation"} 10"#,
        r#"cellwatch_connections_active{src_cell="cell-a",direction="ingress"} 2"#,
        r#"cellwatch_bytes_sent_total{src_cell="cell-a",direction="egress"} 200"#,
        r#"cellwatch_boundary_violations_total{src_cell="cell-a",direction="egress"} 10"#,
    ] {
        assert!(cells.lines().any(|l| l == want), "missing {want}\n{cells}");
    }
    let samples = cells.lines().filter(|l| !l.starts_with('#') && l.contains("cell-a")).count();
    assert_eq!(samples, 18, "per cell and direction, both verdicts\n{cells}");
}

#[test]
fn udp_and_dns_families_render_per_pair_service_and_response_code() {
    use agent_common::{DnsKey, DnsStats, UdpStats};
    let mut ids = CellIds::default();
    let (g, a, b) =
        (ids.id("global").unwrap(), ids.id("cell-a").unwrap(), ids.id("cell-b").unwrap());
    let dns = ids.service_id("dns").unwrap();
    let stats = |opened, sent, received| UdpStats {
        opened,
        datagrams_sent: sent,
        bytes_sent: sent * 10,
        datagrams_received: received,
        bytes_received: received * 10,
        ..UdpStats::ZERO
    };
    let mut refused = stats(0, 0, 0);
    refused.denied = 4;
    let answers = |n: u64, bucket: usize| {
        let mut d = DnsStats::ZERO;
        d.answers = n;
        d.latency_sum_ns = n * 1000;
        d.latency_hist[bucket] = n;
        d
    };
    let snap = Snapshot {
        udp: vec![
            (key(a, b, Direction::EGRESS, Verdict::VIOLATION.0), stats(2, 17, 17)),
            (key(a, b, Direction::EGRESS, Verdict::VIOLATION.0).with_service(0), refused),
            (key(a, g, Direction::EGRESS, 0).with_service(dns), stats(20, 20, 20)),
            (key(a, b, Direction::INGRESS, Verdict::VIOLATION.0), stats(2, 17, 17)),
        ],
        dns: vec![
            (DnsKey { src_cell: a, service: dns, rcode: 0, _pad: 0 }, answers(20, 1)),
            (DnsKey { src_cell: b, service: dns, rcode: 3, _pad: 0 }, answers(1, 2)),
            (DnsKey { src_cell: b, service: dns, rcode: 9, _pad: 0 }, answers(1, 2)),
            (DnsKey { src_cell: b, service: dns, rcode: 10, _pad: 0 }, answers(2, 2)),
        ],
        ..Snapshot::default()
    };
    let text = render(&snap, &ids);
    for want in [
        r#"cellwatch_udp_flows_opened_total{src_cell="cell-a",dst_cell="cell-b",direction="egress",verdict="violation"} 2"#,
        r#"cellwatch_udp_flows_opened_total{src_cell="cell-a",dst_cell="global",direction="egress",verdict="allowed"} 20"#,
        r#"cellwatch_udp_datagrams_sent_total{src_cell="cell-a",dst_cell="cell-b",direction="ingress"} 17"#,
        r#"cellwatch_udp_bytes_received_total{src_cell="cell-a",dst_cell="cell-b",direction="egress"} 170"#,
        r#"cellwatch_udp_denied_total{src_cell="cell-a",dst_cell="cell-b"} 4"#,
        r#"cellwatch_udp_service_flows_opened_total{src_cell="cell-a",service="dns",direction="egress",verdict="allowed"} 20"#,
        r#"cellwatch_dns_queries_total{src_cell="cell-a",service="dns",rcode="NOERROR"} 20"#,
        r#"cellwatch_dns_queries_total{src_cell="cell-b",service="dns",rcode="NXDOMAIN"} 1"#,
        // Response codes past REFUSED share `other`.
        r#"cellwatch_dns_queries_total{src_cell="cell-b",service="dns",rcode="other"} 3"#,
        r#"cellwatch_dns_latency_seconds_count{src_cell="cell-b",service="dns"} 4"#,
        r#"cellwatch_dns_latency_seconds_count{src_cell="cell-a",service="dns"} 20"#,
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
    // Denied only client side; no pair family of TCP gains a UDP row.
    assert!(!text.contains("cellwatch_udp_denied_total{src_cell=\"cell-a\",dst_cell=\"global\""));
    assert!(!text.contains("cellwatch_connections_opened_total"), "{text}");
    // Per cell: destinations summed, DNS kept, its histogram dropped.
    let mut out = String::new();
    let opts = Options { detail: super::Detail::Cells, ..Options::default() };
    super::render(&snap, &ids, &opts, &mut out);
    assert!(out.contains(r#"cellwatch_udp_flows_opened_total{src_cell="cell-a",direction="egress",verdict="allowed"} 20"#), "{out}");
    assert!(
        out.contains(
            r#"cellwatch_udp_datagrams_sent_total{src_cell="cell-a",direction="egress"} 37"#
        ),
        "{out}"
    );
    assert!(out.contains(
        r#"cellwatch_dns_queries_total{src_cell="cell-a",service="dns",rcode="NOERROR"} 20"#
    ));
    assert!(!out.contains("cellwatch_dns_latency_seconds"), "{out}");
}
