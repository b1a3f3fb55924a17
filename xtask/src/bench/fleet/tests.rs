use std::path::Path;

use clap::Parser;

use super::*;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    fleet: FleetArgs,
}

fn args(argv: &[&str]) -> FleetArgs {
    Cli::try_parse_from(std::iter::once("fleet").chain(argv.iter().copied()))
        .expect("the arguments parse")
        .fleet
}

#[test]
fn the_command_line_reproduces_the_run() {
    let a = args(&[]);
    assert_eq!(a.nodes, [100, 500, 1000]);
    assert!(a.detail.is_empty());
    assert_eq!(
        command_line(&a),
        "cargo xtask bench fleet --nodes 100,500,1000 --cells 10 --pairs 50 --interval 10 --rounds 3"
    );
    let a = args(&[
        "--nodes",
        "5,7",
        "--detail",
        "pairs,cells",
        "--native",
        "--agent-arg=--histogram-buckets=8",
    ]);
    let line = command_line(&a);
    assert!(line.ends_with("--detail pairs,cells --native --agent-arg=--histogram-buckets=8"));
    assert_eq!(args(&line.split_whitespace().skip(4).collect::<Vec<_>>()).nodes, [5, 7]);
    assert!(Cli::try_parse_from(["fleet", "--detail", "most"]).is_err());
}

#[test]
fn detail_becomes_the_agents_metrics_detail_and_none_passes_nothing() {
    assert!(agent_argv(None, &[]).is_empty());
    assert_eq!(agent_argv(Some("pairs"), &[]), ["--metrics-detail", "pairs"]);
    let extra = ["--live-interval".to_owned(), "5s".to_owned()];
    assert_eq!(agent_argv(None, &extra), extra);
}

#[test]
fn pairs_spread_over_the_cells_and_a_few_are_violations() {
    let plan = active_pairs(10, 50);
    assert_eq!(plan.len(), 50);
    let mut unique = plan.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 50, "no pair twice");
    for c in 0..10 {
        assert_eq!(plan.iter().filter(|p| p.0 == c).count(), 5, "five servers per client cell");
        assert!(plan.contains(&(c, c)), "each cell's own pair is active");
    }
    assert_eq!(plan.iter().filter(|&&(s, d)| violates(s, d, 10)).count(), 5);
    assert_eq!(active_pairs(3, 9).len(), 9);
    assert!(!violates(0, 0, 1));
    let cfg = agent_config(10, 50);
    assert!(cfg.contains("  - { name: c009, cidrs: [127.194.9.0/24] }\n"));
    // 40 pairs across cells, 5 of them violations: 35 allow rules.
    assert_eq!(cfg.matches("{ from: ").count(), 35);
    assert!(!cfg.contains("{ from: c000, to: c001 }"), "c000 -> c001 is a violation");
    assert!(cfg.contains("{ from: c001, to: c002 }"));
    assert!(cfg.ends_with("ignore_cidrs: [127.0.0.0/16]\n"));
    assert!(!agent_config(2, 2).contains("allow:"), "no pair across cells: no rules");
}

#[test]
fn a_scrape_passes_its_accept_headers_on() {
    let head = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:4000\r\nUser-Agent: Prometheus/2.42.0\r\n\
                accept: application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
                encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3\r\n\
                Accept-Encoding: gzip\r\n\r\n";
    let r = parse_request(head).expect("a request");
    assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/metrics"));
    assert!(r.accept.starts_with("application/vnd.google.protobuf;proto="));
    assert!(r.accept.ends_with("text/plain;version=0.0.4;q=0.3"));
    assert_eq!(r.encoding, "gzip");
    let bare = parse_request("GET /metrics HTTP/1.0\r\n\r\n").expect("a request");
    assert_eq!((bare.accept.as_str(), bare.encoding.as_str()), ("", ""));
    assert_eq!(parse_request(""), None);
}

#[test]
fn the_agents_answer_keeps_its_type_and_encoding() {
    let raw = b"HTTP/1.0 200 OK\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\n\
                content-encoding: gzip\r\ncontent-length: 3\r\n\r\nabc";
    let a = parse_answer(raw).expect("an answer");
    assert_eq!(a.status, 200);
    assert_eq!(a.content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert_eq!(a.encoding.as_deref(), Some("gzip"));
    assert_eq!(a.body, b"abc");
    let plain = parse_answer(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").expect("an answer");
    assert_eq!((plain.status, plain.encoding), (503, None));
    assert!(
        parse_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc").is_err()
    );
    assert!(parse_answer(b"HTTP/1.1 200 OK\r\n").is_err());
}

#[test]
fn query_answers_and_rule_groups_are_read() {
    let json = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1712345678.9,"1000"]}]}}"#;
    assert_eq!(first_value(json), Some(1000.0));
    assert_eq!(first_value(r#"{"status":"success","data":{"result":[]}}"#), None);
    let m = Metrics::parse(
        "prometheus_rule_group_last_duration_seconds{rule_group=\"/r/rules.yaml;cellwatch.records\"} 0.25\n\
         prometheus_rule_group_last_evaluation_timestamp_seconds{rule_group=\"/r/rules.yaml;cellwatch.records\"} 1.7e9\n\
         prometheus_rule_group_last_duration_seconds{rule_group=\"/r/rules.yaml;cellwatch.alerts\"} 0.5\n",
    );
    // The alerts group has no evaluation time yet: left out.
    assert_eq!(rule_groups(&m), [("cellwatch.records".to_owned(), 1.7e9, 0.25)]);
}

#[test]
fn prometheus_scrapes_every_target_as_one_job() {
    let cfg = prom_config(&[4001, 4002], 10, Path::new("/x/rules.yaml"));
    assert!(cfg.contains("scrape_interval: 10s\n"));
    assert!(cfg.contains("evaluation_interval: 10s\n"));
    assert!(cfg.contains("  - /x/rules.yaml\n"));
    assert!(cfg.contains("job_name: cellwatch\n"));
    assert!(cfg.contains("targets: [\"127.0.0.1:4001\", \"127.0.0.1:4002\"]"));
}

#[test]
fn targets_serve_the_cached_answer_to_each() {
    // A stand-in agent: answers every connection with a fixed body, counting them.
    let agent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = agent.local_addr().expect("addr").port();
    let asked = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&asked);
    thread::spawn(move || {
        for s in agent.incoming() {
            let mut s = s.expect("a connection");
            let mut buf = [0; 1024];
            let n = s.read(&mut buf).expect("a request");
            counter.fetch_add(1, Ordering::Relaxed);
            let gz = String::from_utf8_lossy(&buf[..n]).contains("Accept-Encoding: gzip");
            let enc = if gz { "Content-Encoding: gzip\r\n" } else { "" };
            let answer = format!("HTTP/1.0 200 OK\r\nContent-Type: text/x-test\r\n{enc}\r\nup 1\n");
            s.write_all(answer.as_bytes()).expect("the answer");
        }
    });
    let targets = Targets::start(3, port, Duration::from_secs(60)).expect("targets");
    let get = |p: u16, extra: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", p)).expect("connect");
        write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n{extra}\r\n").expect("request");
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("answer");
        raw
    };
    for &p in &targets.ports {
        let raw = get(p, "Accept-Encoding: gzip\r\n");
        assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{raw}");
        assert!(raw.contains("Content-Type: text/x-test\r\n"));
        assert!(raw.contains("Content-Encoding: gzip\r\n"));
        assert!(raw.ends_with("\r\n\r\nup 1\n"));
    }
    assert!(!get(targets.ports[0], "").contains("Content-Encoding"));
    // One render per header set, not per target.
    assert_eq!(asked.load(Ordering::Relaxed), 2);
    // A scrape is counted once its connection is closed, just after the client's read.
    let served = || targets.served.iter().map(|s| s.load(Ordering::Relaxed)).sum::<u64>();
    let deadline = Instant::now() + Duration::from_secs(5);
    while served() < 4 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(served(), 4);
    let mut s = TcpStream::connect(("127.0.0.1", targets.ports[1])).expect("connect");
    write!(s, "GET /other HTTP/1.1\r\n\r\n").expect("request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("answer");
    assert!(raw.starts_with("HTTP/1.1 404"));
}

#[test]
fn the_groups_waited_for_are_the_shipped_rule_files() {
    let rules = std::fs::read_to_string(shipped_rules()).unwrap();
    let groups: Vec<&str> =
        rules.lines().filter_map(|l| l.trim().strip_prefix("- name: ")).collect();
    assert_eq!(groups, GROUPS);
}
