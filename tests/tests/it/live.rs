//! Live telemetry: open connections add their bytes, retransmits and RTT to the counters
//! every `--live-interval`, and the totals stay exact across closes during sweeps,
//! restarts (SIGTERM and kill -9) and a slow, lossy path.
use std::{
    io::{Read, Write},
    net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use cellwatch_tests::{
    Agent, AgentOpts, Metrics, Pins, Rng, connect_from, json,
    netns::Netns,
    ranges::{LIVE, LIVE_NETNS},
    scrape_until,
};

/// Two cells, client (`a`) and server (`b`), on /16s `at` and `at + 1` of the block, with
/// an allow rule a -> b (so no violation events are logged by the thousand).
#[derive(Clone, Copy)]
struct Two(u8);

const ONE_CELLS: Two = Two(0);
const RACE_CELLS: Two = Two(2);
const RESTART_CELLS: Two = Two(4);

impl Two {
    fn config(self) -> String {
        format!(
            "cells:\n  - {{ name: cell-a, cidrs: [\"{}\"] }}\n  - {{ name: cell-b, cidrs: [\"{}\"] }}\n\
             allow:\n  - {{ from: cell-a, to: cell-b }}\n",
            LIVE.cidr(self.0),
            LIVE.cidr(self.0 + 1)
        )
    }

    fn a(self, d: u8) -> IpAddr {
        LIVE.ip(self.0, 0, d)
    }

    fn b(self, d: u8) -> IpAddr {
        LIVE.ip(self.0 + 1, 0, d)
    }
}

fn pd(dir: &str) -> [(&str, &str); 3] {
    [("src_cell", "cell-a"), ("dst_cell", "cell-b"), ("direction", dir)]
}

fn pdv(dir: &str) -> [(&str, &str); 4] {
    [("src_cell", "cell-a"), ("dst_cell", "cell-b"), ("direction", dir), ("verdict", "allowed")]
}

/// Bytes each way, from both ends' counters: (client sent, client received, server sent,
/// server received).
fn bytes(m: &Metrics) -> (f64, f64, f64, f64) {
    (
        m.get("cellwatch_bytes_sent_total", &pd("egress")),
        m.get("cellwatch_bytes_received_total", &pd("egress")),
        m.get("cellwatch_bytes_sent_total", &pd("ingress")),
        m.get("cellwatch_bytes_received_total", &pd("ingress")),
    )
}

fn rtt_samples(m: &Metrics) -> f64 {
    m.get("cellwatch_rtt_seconds_count", &pd("egress"))
}

fn send_all(mut s: &TcpStream, n: usize, fill: u8) {
    let chunk = vec![fill; 64 * 1024];
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len());
        s.write_all(&chunk[..k]).expect("send");
        left -= k;
    }
}

fn read_exactly(mut s: &TcpStream, n: usize) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = n;
    while left > 0 {
        let k = s.read(&mut buf[..left.min(64 * 1024)]).expect("receive");
        assert!(k > 0, "the peer closed with {left} bytes to come");
        left -= k;
    }
}

#[test]
fn an_open_connection_counts_its_bytes_and_rtt_while_open() {
    const N: usize = 3 * 1024 * 1024 + 7;
    const M: usize = 12_345;
    let net = ONE_CELLS;
    let agent = Agent::start(AgentOpts {
        config: Some(&net.config()),
        args: &["--live-interval", "1s"],
        ..AgentOpts::default()
    });
    let l = TcpListener::bind((net.b(1), 0)).unwrap();
    let c = connect_from(net.a(1), l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    for stream in [&c, &s] {
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    // The reader runs beside the writer: N is more than small kernels' socket buffers hold.
    thread::scope(|t| {
        t.spawn(|| read_exactly(&s, N));
        send_all(&c, N, b'n');
    });
    send_all(&s, M, b'm');
    read_exactly(&c, M);
    let done = Instant::now();
    // Within one interval (1 s), with a scrape's worth of slack, the counters hold it all
    // while the connection is still open.
    let want = (N as f64, M as f64, M as f64, N as f64);
    let mut m = agent.metrics();
    while bytes(&m) != want && done.elapsed() < Duration::from_secs(3) {
        thread::sleep(Duration::from_millis(50));
        m = agent.metrics();
    }
    assert_eq!(bytes(&m), want, "while open, {:?} after the last byte", done.elapsed());
    assert!(done.elapsed() < Duration::from_millis(2000), "took {:?}", done.elapsed());
    let open_samples = rtt_samples(&m);
    assert!(open_samples >= 1.0, "no RTT sample while open");
    for dir in ["egress", "ingress"] {
        assert_eq!(m.get("cellwatch_connections_active", &pd(dir)), 1.0, "{dir}");
        assert_eq!(m.get("cellwatch_connections_closed_total", &pdv(dir)), 0.0, "{dir}");
    }
    // /connections says the same.
    let conns = json(&agent, "/connections?cell=cell-a");
    let conns = conns.as_array().unwrap();
    assert_eq!(conns.len(), 2, "{conns:?}");
    for conn in conns {
        let (sent, received) = if conn["direction"] == "egress" { (N, M) } else { (M, N) };
        assert_eq!(conn["bytes_sent"], sent, "{conn}");
        assert_eq!(conn["bytes_received"], received, "{conn}");
    }
    drop(c);
    drop(s);
    let m = scrape_until(&agent, |m| {
        ["egress", "ingress"]
            .iter()
            .all(|d| m.get("cellwatch_connections_closed_total", &pdv(d)) == 1.0)
    });
    assert_eq!(bytes(&m), want, "after the close");
    for dir in ["egress", "ingress"] {
        assert_eq!(m.get("cellwatch_connections_closed_total", &pdv(dir)), 1.0, "{dir}");
        assert_eq!(m.get("cellwatch_connections_active", &pd(dir)), 0.0, "{dir}");
    }
    // One more sample at the close; the open ones stay.
    assert!(rtt_samples(&m) > open_samples, "{} after {open_samples}", rtt_samples(&m));
}

/// What one side of the race moved: bytes sent by clients, bytes sent by servers.
#[derive(Default)]
struct Moved {
    client: AtomicU64,
    server: AtomicU64,
    connections: AtomicU64,
}

#[test]
fn connections_closing_while_sweeps_run_count_exactly() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 500;
    let net = RACE_CELLS;
    // The shortest interval: sweeps run all the while connections open and close.
    let agent = Agent::start(AgentOpts {
        config: Some(&net.config()),
        args: &["--live-interval", "100ms"],
        ..AgentOpts::default()
    });
    let l = TcpListener::bind((net.b(1), 0)).unwrap();
    let to = l.local_addr().unwrap();
    let moved = Arc::new(Moved::default());
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let (moved, stop) = (moved.clone(), stop.clone());
        l.set_nonblocking(true).unwrap();
        thread::spawn(move || serve_race(&l, &moved, &stop))
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let clients: Vec<_> = (0..THREADS)
        .map(|t| {
            let moved = moved.clone();
            thread::spawn(move || {
                let mut rng = Rng::from_env(&format!("live race client {t}"));
                for _ in 0..PER_THREAD {
                    if Instant::now() > deadline {
                        break;
                    }
                    race_client(net.a(1 + u8::try_from(t).unwrap()), to, &mut rng, &moved);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    let n = moved.connections.load(Ordering::Relaxed) as f64;
    assert_eq!(n, (THREADS * PER_THREAD) as f64, "every connection went through");
    let m = scrape_until(&agent, |m| {
        ["egress", "ingress"]
            .iter()
            .all(|d| m.get("cellwatch_connections_closed_total", &pdv(d)) == n)
    });
    let (client, server) =
        (moved.client.load(Ordering::Relaxed) as f64, moved.server.load(Ordering::Relaxed) as f64);
    for dir in ["egress", "ingress"] {
        assert_eq!(m.get("cellwatch_connections_opened_total", &pdv(dir)), n, "{dir}");
        assert_eq!(m.get("cellwatch_connections_closed_total", &pdv(dir)), n, "{dir}");
    }
    assert_eq!(bytes(&m), (client, server, server, client), "{} connections", n);
    let swept = m.get("cellwatch_live_sweep_connections_total", &[("result", "read")]);
    assert!(swept > 0.0, "the sweeps saw open connections");
}

/// One client: a random payload, the write side closed, the server's answer read to its
/// end, a random pause, then the close (sometimes with the server's close first).
fn race_client(from: IpAddr, to: SocketAddr, rng: &mut Rng, moved: &Moved) {
    let s = connect_from(from, to).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let n = rng.index(64 * 1024);
    send_all(&s, n, b'c');
    s.shutdown(Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    (&s).read_to_end(&mut answer).expect("the server's answer");
    thread::sleep(Duration::from_micros(rng.below(3000)));
    drop(s);
    moved.client.fetch_add(n as u64, Ordering::Relaxed);
    moved.connections.fetch_add(1, Ordering::Relaxed);
}

/// The server side of the race: for each connection, read to the end, answer a random
/// amount, close. Bounded by the clients' count (the stop flag) and 120 s.
fn serve_race(l: &TcpListener, moved: &Moved, stop: &AtomicBool) {
    let mut rng = Rng::from_env("live race server");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut handlers = Vec::new();
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        match l.accept() {
            Ok((s, _)) => {
                let answer = rng.index(16 * 1024);
                handlers.push(thread::spawn({
                    let moved_server = answer as u64;
                    move || {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                        let mut got = Vec::new();
                        (&s).read_to_end(&mut got).expect("the client's payload");
                        send_all(&s, answer, b's');
                        moved_server
                    }
                }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("accept: {e}"),
        }
        if handlers.len() > 64 {
            for h in handlers.drain(..) {
                moved.server.fetch_add(h.join().unwrap(), Ordering::Relaxed);
            }
        }
    }
    for h in handlers {
        moved.server.fetch_add(h.join().unwrap(), Ordering::Relaxed);
    }
}

#[test]
fn a_transfer_through_sigterm_and_kill_counts_exactly() {
    let net = RESTART_CELLS;
    let pins = Pins::new();
    let config = net.config();
    let start = || {
        Agent::start(AgentOpts {
            config: Some(&config),
            args: &["--live-interval", "200ms"],
            pins: Some(&pins),
            ..AgentOpts::default()
        })
    };
    let mut agent = start();
    let l = TcpListener::bind((net.b(1), 0)).unwrap();
    let c = connect_from(net.a(1), l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    // A paced transfer for about six seconds, through the agent's stops and starts.
    let sent = Arc::new(AtomicU64::new(0));
    let writer = {
        let (c, sent) = (c.try_clone().unwrap(), sent.clone());
        thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(6);
            while Instant::now() < until {
                send_all(&c, 4096, b'r');
                sent.fetch_add(4096, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(2));
            }
            c.shutdown(Shutdown::Write).unwrap();
        })
    };
    let reader = {
        let s = s.try_clone().unwrap();
        thread::spawn(move || {
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut got = Vec::new();
            (&s).read_to_end(&mut got).expect("the transfer");
            got.len()
        })
    };
    thread::sleep(Duration::from_secs(1));
    agent.stop();
    thread::sleep(Duration::from_secs(1));
    let mut agent2 = start();
    thread::sleep(Duration::from_secs(1));
    agent2.kill();
    thread::sleep(Duration::from_secs(1));
    drop((agent, agent2));
    let agent = start();
    writer.join().unwrap();
    let received = reader.join().unwrap();
    let total = sent.load(Ordering::Relaxed);
    assert_eq!(received as u64, total, "the transfer itself");
    drop((c, s));
    let m = scrape_until(&agent, |m| {
        ["egress", "ingress"]
            .iter()
            .all(|d| m.get("cellwatch_connections_closed_total", &pdv(d)) == 1.0)
    });
    let t = total as f64;
    assert_eq!(bytes(&m), (t, 0.0, 0.0, t), "{total} bytes through a SIGTERM and a kill -9");
}

#[test]
fn a_slow_lossy_path_shows_its_rtt_and_retransmits_while_open() {
    let (host, inside) = (LIVE_NETNS.ip(0, 0, 1), LIVE_NETNS.ip(0, 0, 2));
    // 40 ms each way: an RTT of about 80 ms, in the kernel's bucket of 65.5 to 131 ms.
    let ns = Netns::slow_lossy("live", host, inside, 40, 3);
    let config = format!(
        "cells:\n  - {{ name: cell-a, cidrs: [\"{inside}/32\"] }}\n  - {{ name: cell-b, cidrs: [\"{host}/32\"] }}\n"
    );
    let agent = Agent::start(AgentOpts {
        config: Some(&config),
        args: &["--live-interval", "1s", "--histogram-buckets", "all"],
        ..AgentOpts::default()
    });
    let l = TcpListener::bind((host, 0)).unwrap();
    let c = ns.connect(inside, l.local_addr().unwrap()).expect("connect from the namespace");
    let (s, _) = l.accept().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let drain = thread::spawn(move || {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut got = Vec::new();
        let _ = (&s).read_to_end(&mut got);
        got.len()
    });
    let writer = {
        let (c, stop) = (c.try_clone().unwrap(), stop.clone());
        thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                send_all(&c, 16 * 1024, b'l');
                thread::sleep(Duration::from_millis(10));
            }
        })
    };
    // While it is open, within a few intervals: RTT samples and retransmits; and the
    // kernel's own smoothed RTT of the client's socket at each look, its largest kept.
    let local = c.local_addr().unwrap();
    let mut kernel_max_us = 0;
    let m = {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let srtt = ns.inside(|| Ok(cellwatch_tests::srtt_us(local))).expect("ss inside");
            kernel_max_us = kernel_max_us.max(srtt);
            let m = agent.metrics();
            let retrans = m.get("cellwatch_retransmits_total", &pd("egress"));
            if (rtt_samples(&m) >= 3.0 && retrans > 0.0) || Instant::now() > deadline {
                break m;
            }
            thread::sleep(Duration::from_millis(200));
        }
    };
    assert!(!writer.is_finished(), "the connection is still open");
    let samples = rtt_samples(&m);
    assert!(samples >= 3.0, "{samples} RTT samples while open");
    let retrans = m.get("cellwatch_retransmits_total", &pd("egress"));
    assert!(retrans > 0.0, "no retransmit counted on a lossy path while open");
    let le = |bound: &str| {
        let mut labels = pd("egress").to_vec();
        labels.push(("le", bound));
        m.get("cellwatch_rtt_seconds_bucket", &labels)
    };
    assert_eq!(le("0.065536"), 0.0, "an RTT below 65.5 ms on an 80 ms path");
    // The smoothed RTT of an 80 ms path: above 65.5 ms, and below 262 ms even when a
    // loss and its retransmit weigh on it; where the path itself is slower (an emulated
    // VM's timers, the TUN forwarder where there is no netem), below twice the largest
    // the kernel showed for the socket (to the bucket above), and no more.
    let exp = (2 * u64::from(kernel_max_us)).next_power_of_two().trailing_zeros().clamp(18, 26);
    let bound = format!("{}", (1u64 << exp) as f64 * 1e-6);
    assert_eq!(
        le(&bound),
        samples,
        "every RTT sample between 65.5 ms and {bound} s (the kernel's srtt: at most \
         {kernel_max_us} µs when looked at)"
    );
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    drop(c);
    assert!(drain.join().unwrap() > 0);
}
