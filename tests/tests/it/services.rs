//! Services (`services:` in the config): connections to a named destination counted per
//! (client cell, service) in the kernel, exactly, beside the pair families that still
//! hold them; a service with ports and one without; the catalog of cells and services;
//! `/connections` naming the service; a reload that adds a service.
use std::{
    io::Read,
    net::{SocketAddr, TcpListener},
};

use cellwatch_tests::{
    Agent, AgentOpts, Metrics, Server, await_reloads, clients, connect_from, json,
    ranges::{HARNESS, SERVICES},
    settle, write_atomic,
};

/// The database's port: a service with ports is matched on it.
const DB_PORT: u16 = 15_432;
const REQ: usize = 120;
const RESP: usize = 900;

/// global (127.110, shared services: `orders-db` on .5.0/24 port 15432, `store` on
/// .6.0/24 on any port), cell-a, cell-b, cell-c on the next /16s.
fn config(extra_service: &str) -> String {
    format!(
        "cells:\n  - {{ name: global, global: true, cidrs: [\"{}\"] }}\n  \
         - {{ name: cell-a, cidrs: [\"{}\"] }}\n  - {{ name: cell-b, cidrs: [\"{}\"] }}\n  \
         - {{ name: cell-c, cidrs: [\"{}\"] }}\n\
         services:\n  - {{ name: orders-db, cidrs: [\"{}.{}.5.0/24\"], ports: [{DB_PORT}] }}\n  \
         - {{ name: store, cidrs: [\"{}.{}.6.0/24\"] }}\n{extra_service}\
         ignore_cidrs: [\"{}\"]\n",
        SERVICES.cidr(0),
        SERVICES.cidr(1),
        SERVICES.cidr(2),
        SERVICES.cidr(3),
        SERVICES.net,
        SERVICES.at(0),
        SERVICES.net,
        SERVICES.at(0),
        HARNESS.cidr(0),
    )
}

fn svc<'a>(src: &'a str, service: &'a str, dir: &'a str) -> [(&'a str, &'a str); 3] {
    [("src_cell", src), ("service", service), ("direction", dir)]
}

fn svcv<'a>(src: &'a str, service: &'a str, dir: &'a str) -> [(&'a str, &'a str); 4] {
    [("src_cell", src), ("service", service), ("direction", dir), ("verdict", "allowed")]
}

fn opened(m: &Metrics, src: &str, service: &str, dir: &str) -> f64 {
    m.get("cellwatch_service_connections_opened_total", &svcv(src, service, dir))
}

#[test]
fn two_cells_calling_a_shared_service_are_counted_exactly_per_service() {
    const A: usize = 40;
    const B: usize = 25;
    const C: usize = 15;
    const OTHER_PORT: usize = 10;
    let agent = Agent::start(AgentOpts {
        config: Some(&config("")),
        args: &["--live-interval", "1h"],
        ..AgentOpts::default()
    });
    let db = SocketAddr::new(SERVICES.ip(0, 5, 1), DB_PORT);
    let server = Server::start_on(db, A + B, REQ, RESP);
    // The database's address on another port: no service (orders-db has ports).
    let other = Server::start(SERVICES.ip(0, 5, 1), OTHER_PORT, REQ, RESP);
    // `store` has no ports: any port of its prefix.
    let store = Server::start(SERVICES.ip(0, 6, 9), C, REQ, RESP);
    assert_eq!(clients(SERVICES.ip(1, 0, 1), db, A, REQ, RESP), A);
    assert_eq!(clients(SERVICES.ip(2, 0, 1), db, B, REQ, RESP), B);
    assert_eq!(clients(SERVICES.ip(1, 0, 2), other.addr, OTHER_PORT, REQ, RESP), OTHER_PORT);
    assert_eq!(clients(SERVICES.ip(3, 0, 1), store.addr, C, REQ, RESP), C);
    assert_eq!(server.join() + other.join() + store.join(), A + B + OTHER_PORT + C);

    let closed = "cellwatch_connections_closed_total";
    let pair = |src, dir| {
        [("src_cell", src), ("dst_cell", "global"), ("direction", dir), ("verdict", "allowed")]
    };
    let m = settle(&agent, |m| {
        ["egress", "ingress"].iter().all(|d| {
            m.get(closed, &pair("cell-a", d)) == (A + OTHER_PORT) as f64
                && m.get(closed, &pair("cell-b", d)) == B as f64
                && m.get(closed, &pair("cell-c", d)) == C as f64
        })
    });
    for dir in ["egress", "ingress"] {
        // Per service, exactly: cell-a and cell-b call orders-db, cell-c calls store.
        assert_eq!(opened(&m, "cell-a", "orders-db", dir), A as f64, "{dir}");
        assert_eq!(opened(&m, "cell-b", "orders-db", dir), B as f64, "{dir}");
        assert_eq!(opened(&m, "cell-c", "orders-db", dir), 0.0, "{dir}");
        assert_eq!(opened(&m, "cell-c", "store", dir), C as f64, "{dir}");
        assert_eq!(opened(&m, "cell-a", "store", dir), 0.0, "{dir}");
        let active = "cellwatch_service_connections_active";
        assert_eq!(m.get(active, &svc("cell-a", "orders-db", dir)), 0.0, "{dir}");
        // The pair families still hold every connection, service or not.
        let pair_opened = m.get("cellwatch_connections_opened_total", &pair("cell-a", dir));
        assert_eq!(pair_opened, (A + OTHER_PORT) as f64, "{dir}");
    }
    let (sent, received) =
        ("cellwatch_service_bytes_sent_total", "cellwatch_service_bytes_received_total");
    assert_eq!(m.get(sent, &svc("cell-a", "orders-db", "egress")), (A * REQ) as f64);
    assert_eq!(m.get(received, &svc("cell-a", "orders-db", "egress")), (A * RESP) as f64);
    assert_eq!(m.get(sent, &svc("cell-b", "orders-db", "ingress")), (B * RESP) as f64);
    assert_eq!(m.get(received, &svc("cell-b", "orders-db", "ingress")), (B * REQ) as f64);
    let latency = "cellwatch_service_connect_latency_seconds_count";
    let sl = [("src_cell", "cell-a"), ("service", "orders-db")];
    assert_eq!(m.get(latency, &sl), A as f64);
    // No failure: those series appear from the first failure on.
    assert!(!m.0.keys().any(|k| k.starts_with("cellwatch_service_connections_failed_total")));
    // The catalog.
    assert_eq!(m.get("cellwatch_cell_info", &[("cell", "global"), ("global", "true")]), 1.0);
    assert_eq!(m.get("cellwatch_cell_info", &[("cell", "cell-b"), ("global", "false")]), 1.0);
    let info = [("service", "orders-db"), ("cell", "global")];
    assert_eq!(m.get("cellwatch_service_info", &info), 1.0);
}

#[test]
fn a_refused_service_connect_is_a_failure_of_the_service() {
    let agent = Agent::start(AgentOpts { config: Some(&config("")), ..AgentOpts::default() });
    // Nothing listens on the database's port at this address: refused.
    let to = SocketAddr::new(SERVICES.ip(0, 5, 77), DB_PORT);
    for _ in 0..3 {
        assert!(connect_from(SERVICES.ip(2, 0, 7), to).is_err(), "nothing listens at {to}");
    }
    let failed = "cellwatch_service_connections_failed_total";
    let labels = [("src_cell", "cell-b"), ("service", "orders-db"), ("reason", "refused")];
    let m = settle(&agent, |m| m.get(failed, &labels) >= 3.0);
    assert_eq!(m.get(failed, &labels), 3.0);
    assert_eq!(
        m.get(failed, &[("src_cell", "cell-b"), ("service", "orders-db"), ("reason", "reset")]),
        0.0
    );
}

#[test]
fn a_reload_adds_a_service_and_an_open_connection_keeps_its_own() {
    let agent = Agent::start(AgentOpts { config: Some(&config("")), ..AgentOpts::default() });
    // Held open across the reload: it was to no service, and stays so.
    let l = TcpListener::bind((SERVICES.ip(0, 7, 1), 0)).unwrap();
    let held = connect_from(SERVICES.ip(1, 0, 9), l.local_addr().unwrap()).unwrap();
    let (mut accepted, _) = l.accept().unwrap();
    let conns = json(&agent, "/connections?cell=cell-a");
    let mine: Vec<_> = conns
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["dst"]["port"] == l.local_addr().unwrap().port())
        .collect();
    assert_eq!(mine.len(), 2, "both ends listed: {conns}");
    assert!(mine.iter().all(|c| c["service"].is_null()), "{conns}");

    let extra =
        format!("  - {{ name: cache, cidrs: [\"{}.{}.7.0/24\"] }}\n", SERVICES.net, SERVICES.at(0));
    write_atomic(&agent.config_path(), &config(&extra));
    await_reloads(&agent, "success", 1.0);
    let n = 5;
    let cache = Server::start(SERVICES.ip(0, 7, 2), n, REQ, RESP);
    assert_eq!(clients(SERVICES.ip(1, 0, 10), cache.addr, n, REQ, RESP), n);
    assert_eq!(cache.join(), n);
    let m = settle(&agent, |m| opened(m, "cell-a", "cache", "ingress") >= n as f64);
    assert_eq!(opened(&m, "cell-a", "cache", "egress"), n as f64);
    assert_eq!(opened(&m, "cell-a", "cache", "ingress"), n as f64);
    let conns = json(&agent, "/connections?cell=cell-a");
    let mine: Vec<_> = conns
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["dst"]["port"] == l.local_addr().unwrap().port())
        .collect();
    assert!(mine.iter().all(|c| c["service"].is_null()), "judged when first seen: {conns}");
    drop(held);
    let mut buf = [0u8; 1];
    assert_eq!(accepted.read(&mut buf).unwrap(), 0, "the held connection closed");
    let info = [("service", "cache"), ("cell", "global")];
    assert_eq!(agent.metrics().get("cellwatch_service_info", &info), 1.0);
}

#[test]
fn a_service_connection_lists_its_service() {
    let agent = Agent::start(AgentOpts { config: Some(&config("")), ..AgentOpts::default() });
    let l = TcpListener::bind((SERVICES.ip(0, 6, 3), 0)).unwrap();
    let c = connect_from(SERVICES.ip(3, 0, 4), l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    let conns = json(&agent, "/connections?cell=cell-c");
    let list = conns.as_array().unwrap();
    assert_eq!(list.len(), 2, "{conns}");
    assert!(list.iter().all(|x| x["service"] == "store"), "{conns}");
    let m = agent.metrics();
    let active = "cellwatch_service_connections_active";
    assert_eq!(m.get(active, &svc("cell-c", "store", "egress")), 1.0);
    drop((c, s));
}
