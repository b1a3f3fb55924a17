//! `cargo xtask bench service-addr`: connection churn through a Kubernetes Service
//! address, side by side with direct connects to the same pod, with and without the
//! agent. kube-proxy's layout in network namespaces (`cellwatch_tests::kubeproxy`): a
//! client pod, a server pod, iptables DNAT in the node, the agent in the node's namespace.
//! Each connection: connect, one byte each way, close with RST. Runs are
//! interleaved; each figure is connections per second, and its ratio to direct connects
//! with no agent.
#![expect(unsafe_code, reason = "poll(2) on the server's listener")]
use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use cellwatch_tests::{
    Agent, AgentOpts,
    kubeproxy::{Cluster, Pod},
    netns::enter,
};

use super::{
    harness::agent_build,
    record,
    stats::{median, min_max},
};
use crate::util::{ok, step};

/// The cluster's addresses: 10.253.0.0/16 holds nothing else on the machine.
const fn addr(third: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 253, third, d))
}

const CONFIG: &str = "cells:\n  - name: cell-a\n    cidrs: [10.253.1.0/24]\n  - name: cell-b\n    \
                      cidrs: [10.253.2.0/24]\nservice_cidrs: [10.253.9.0/24]\n";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Direct,
    Service,
}

pub(crate) fn service_addr(smoke: bool) -> Result<()> {
    let bin = agent_build(smoke)?;
    let (n, runs) = if smoke { (200, 1) } else { (2000, 5) };
    step(&format!(
        "service_addr: {n} connections per run through a Service address and directly, with and \
         without the agent, {runs} runs of each, interleaved"
    ));
    let mut c = Cluster::new("bench");
    let client = c.pod("a", addr(1, 10), addr(0, 1));
    let server = c.pod("b", addr(2, 10), addr(0, 2));
    c.default_route("b");
    let service_addr = SocketAddr::new(addr(9, 10), 80);
    let port = 8080;
    c.service(service_addr, SocketAddr::new(server.addr, port));
    let direct = SocketAddr::new(server.addr, port);
    // (agent?, target) in table order.
    let variants = [
        (false, Target::Direct),
        (false, Target::Service),
        (true, Target::Direct),
        (true, Target::Service),
    ];
    let mut rates = vec![Vec::new(); variants.len()];
    for run in 0..runs {
        for k in 0..variants.len() {
            let i = (k + run) % variants.len();
            let (with_agent, target) = variants[i];
            let agent = with_agent.then(|| start(&bin, &c)).transpose()?;
            let to = if target == Target::Direct { direct } else { service_addr };
            let rate = churn(&c, &client, &server, port, to, n);
            if let Some(a) = agent {
                check(&a, n, target)?;
            }
            let rate = rate?;
            ok(&format!("run {}: {:<32} {rate:.0} connections/s", run + 1, label(variants[i])));
            rates[i].push(rate);
        }
    }
    if smoke {
        return Ok(());
    }
    let base = median(&rates[0]);
    let mut t = format!(
        "### Churn through a Service address\n\n`cargo xtask bench service-addr`: {n} connections per \
         run from a client pod to a server pod, connect, one byte each way, close with RST (no \
         TIME_WAIT to stall a reused port), either to the pod's address or through a Service address that iptables DNAT \
         in the node sends to it, as kube-proxy does; the agent runs in the node's network \
         namespace. {runs} runs of each variant, interleaved; median [min, max].\n\n\
         | variant | connections/s | ratio to direct, no agent |\n|---|---|---|\n"
    );
    for (v, r) in variants.iter().zip(&rates) {
        let (min, max) = min_max(r);
        t.push_str(&format!(
            "| {} | {:.0} [{min:.0}, {max:.0}] | {:.3} |\n",
            label(*v),
            median(r),
            median(r) / base
        ));
    }
    let ratio = |a: usize, b: usize| median(&rates[a]) / median(&rates[b]);
    t.push_str(&format!(
        "\nWith the agent, a connection through the Service address runs at {:.3} of a direct \
         one; without it, at {:.3} (the DNAT's own cost). The agent's extra work for a \
         Service connection is one ctnetlink lookup and the settling of its counts.\n",
        ratio(3, 2),
        ratio(1, 0)
    ));
    record::update("service_addr", &t)?;
    println!("\n{t}\n    BENCHMARKS.md updated");
    Ok(())
}

fn label((agent, target): (bool, Target)) -> &'static str {
    match (agent, target) {
        (false, Target::Direct) => "direct, no agent",
        (false, Target::Service) => "through the Service, no agent",
        (true, Target::Direct) => "direct, cellwatch",
        (true, Target::Service) => "through the Service, cellwatch",
    }
}

fn start(bin: &std::path::Path, c: &Cluster) -> Result<Agent> {
    Agent::try_start(AgentOpts {
        config: Some(CONFIG),
        bin: Some(bin),
        netns: Some(&c.node),
        ..AgentOpts::default()
    })
    .map_err(anyhow::Error::msg)
}

/// The agent counted every connection of the run under the server pod's cell, none as
/// unresolved (the benchmark measures the path it claims to).
fn check(a: &Agent, n: usize, target: Target) -> Result<()> {
    let want = n as f64;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = a.metrics();
        let closed = m.get(
            "cellwatch_connections_closed_total",
            &[
                ("src_cell", "cell-a"),
                ("dst_cell", "cell-b"),
                ("direction", "egress"),
                ("verdict", "violation"),
            ],
        );
        if closed >= want {
            if closed > want {
                bail!("{closed} connections counted for {n} made");
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            let elsewhere: Vec<String> =
                m.0.iter()
                    .filter(|(k, v)| {
                        k.starts_with("cellwatch_connections_")
                            && k.contains("src_cell=\"cell-a\"")
                            && !k.contains("dst_cell=\"cell-b\"")
                            && **v > 0.0
                    })
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect();
            let log: Vec<String> = a
                .stderr()
                .lines()
                .filter(|l| l.contains("no backend"))
                .map(str::to_owned)
                .collect();
            bail!(
                "{closed} of {n} connections counted under cell-b ({}); elsewhere: {elsewhere:?}; {log:?}",
                if target == Target::Service { "through the Service" } else { "direct" }
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// `n` connections from `client` to `to`, served in `server` on `port`: connections/s.
fn churn(
    c: &Cluster,
    client: &Pod,
    server: &Pod,
    port: u16,
    to: SocketAddr,
    n: usize,
) -> Result<f64> {
    let listener = c.listen(server, port);
    listener.set_nonblocking(true)?;
    let done = Arc::new(AtomicBool::new(false));
    let serving = {
        let done = done.clone();
        thread::spawn(move || serve(&listener, &done))
    };
    let started = Instant::now();
    let made = enter(&client.netns, || {
        let deadline = started + Duration::from_secs(120);
        for _ in 0..n {
            if Instant::now() > deadline {
                return Err(std::io::Error::other("the churn took over two minutes"));
            }
            let mut s = cellwatch_tests::connect_from(client.addr, to)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(&[1])?;
            let mut b = [0; 1];
            s.read_exact(&mut b)?;
            // Closed with RST: no TIME_WAIT on either side, so the ports a long run
            // reuses are free (each TIME_WAIT met costs a 1 s SYN retransmit).
            socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO))?;
        }
        Ok(())
    });
    let rate = n as f64 / started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    serving.join().map_err(|_| anyhow::anyhow!("the server panicked"))?;
    made.context("the churn")?;
    Ok(rate)
}

fn serve(l: &TcpListener, done: &AtomicBool) {
    use std::os::fd::AsRawFd;
    while !done.load(Ordering::Relaxed) {
        // Waits for a connection (at most 100 ms, to see `done`), so the server adds no
        // polling delay of its own to each connection.
        let mut fds = libc::pollfd { fd: l.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the listener's open descriptor.
        let ready = unsafe { libc::poll(&raw mut fds, 1, 100) };
        if ready <= 0 {
            continue;
        }
        if let Ok((mut s, _)) = l.accept() {
            let _ = s.set_nonblocking(false);
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut b = [0; 1];
            if s.read_exact(&mut b).is_ok() {
                let _ = s.write_all(&[2]);
            }
        }
    }
}
