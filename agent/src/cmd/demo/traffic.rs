//! The demo's traffic: a small server in each cell and a paced, bounded client loop that
//! makes allowed, rule-allowed, cross-cell and refused connections.
#![forbid(unsafe_code)]

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream},
    task::JoinSet,
    time::{Instant, timeout},
};

/// Pause between rounds; a round makes at most five connections.
const ROUND: Duration = Duration::from_millis(400);
/// Upper bound on rounds whatever the duration (an hour at the pace above).
const MAX_ROUNDS: u64 = 9_000;
/// Per-step limit for connect, write and read.
const STEP_TIMEOUT: Duration = Duration::from_secs(2);
/// cell-2's database port, which the demo config lets cell-1 call.
const DB_PORT: u16 = 15432;
/// The port of `ledger`, the shared service in the global cell (demo.yaml).
const LEDGER_PORT: u16 = 15433;

/// `127.100.<cell>.<host>`: cell 0 is global, 1 to 3 are cell-1 to cell-3.
const fn demo_ip(cell: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 100, cell, host))
}

/// A kind of connection the generator makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Allowed,
    AllowedByRule,
    Leak,
    RefusedLeak,
}

/// One flow: from a client address in one cell to a server in another, every `every`
/// rounds.
#[derive(Clone, Copy, Debug)]
struct Flow {
    kind: Kind,
    from: IpAddr,
    to: SocketAddr,
    every: u64,
}

/// What the generator did, by kind.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tally {
    pub(crate) allowed: u64,
    pub(crate) allowed_by_rule: u64,
    pub(crate) leaks: u64,
    pub(crate) refused: u64,
    /// Connections that did not go as planned (e.g. a timeout on a loaded machine).
    pub(crate) unexpected: u64,
}

impl Tally {
    pub(crate) fn total(&self) -> u64 {
        self.allowed + self.allowed_by_rule + self.leaks + self.refused + self.unexpected
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum TrafficError {
    #[error(
        "the demo cannot listen on {addr}: {source} (the demo needs 127.100.0.0/16 and ports {DB_PORT} and {LEDGER_PORT} there)"
    )]
    Bind { addr: SocketAddr, source: io::Error },
}

/// The demo's servers, running as tasks in `set`, and the flows that use them.
pub(crate) struct Traffic {
    flows: Vec<Flow>,
}

impl Traffic {
    /// Starts one echo-style server in global (and the shared `ledger` there), cell-1 and
    /// cell-2 (two there: an API and the database), and finds a closed port in cell-3 for
    /// refused connects.
    pub(crate) async fn start(set: &mut JoinSet<()>) -> Result<Self, TrafficError> {
        let global = listen(set, SocketAddr::new(demo_ip(0, 1), 0)).await?;
        let cell1 = listen(set, SocketAddr::new(demo_ip(1, 1), 0)).await?;
        let cell2 = listen(set, SocketAddr::new(demo_ip(2, 1), 0)).await?;
        let db = listen(set, SocketAddr::new(demo_ip(2, 1), DB_PORT)).await?;
        let ledger = listen(set, SocketAddr::new(demo_ip(0, 5), LEDGER_PORT)).await?;
        // A port bound and released at once: nothing listens there, so connects are refused.
        let closed = bind(SocketAddr::new(demo_ip(3, 1), 0))?.local_addr().map_err(|source| {
            TrafficError::Bind { addr: SocketAddr::new(demo_ip(3, 1), 0), source }
        })?;
        let (c1, c2, c3) = (demo_ip(1, 10), demo_ip(2, 10), demo_ip(3, 10));
        Ok(Self {
            flows: vec![
                Flow { kind: Kind::Allowed, from: c1, to: cell1, every: 1 },
                Flow { kind: Kind::Allowed, from: c2, to: global, every: 1 },
                Flow { kind: Kind::AllowedByRule, from: c1, to: db, every: 1 },
                // The shared ledger: cell-2 calls it every round, cell-1 every other one.
                Flow { kind: Kind::Allowed, from: c2, to: ledger, every: 1 },
                Flow { kind: Kind::Allowed, from: c1, to: ledger, every: 2 },
                Flow { kind: Kind::Leak, from: c3, to: cell2, every: 2 },
                Flow { kind: Kind::RefusedLeak, from: c1, to: closed, every: 5 },
            ],
        })
    }

    /// Makes connections round by round until `deadline`; each client sends a ping, reads
    /// the answer and closes after the server did.
    pub(crate) async fn generate(&self, deadline: Instant) -> Tally {
        let mut tally = Tally::default();
        for round in 0..MAX_ROUNDS {
            if Instant::now() >= deadline {
                break;
            }
            for f in self.flows.iter().filter(|f| round % f.every == 0) {
                let outcome = exchange(f.from, f.to).await;
                let slot = match (f.kind, outcome) {
                    (Kind::Allowed, Ok(())) => &mut tally.allowed,
                    (Kind::AllowedByRule, Ok(())) => &mut tally.allowed_by_rule,
                    (Kind::Leak, Ok(())) => &mut tally.leaks,
                    (Kind::RefusedLeak, Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        &mut tally.refused
                    }
                    _ => &mut tally.unexpected,
                };
                *slot += 1;
            }
            tokio::time::sleep_until(deadline.min(Instant::now() + ROUND)).await;
        }
        tally
    }
}

/// A socket bound at `addr`, with SO_REUSEADDR so that a demo run right after another
/// can listen again while the old connections sit in TIME_WAIT.
fn bind(addr: SocketAddr) -> Result<TcpSocket, TrafficError> {
    let s = TcpSocket::new_v4().and_then(|s| {
        s.set_reuseaddr(true)?;
        s.bind(addr).map(|()| s)
    });
    s.map_err(|source| TrafficError::Bind { addr, source })
}

/// Binds a server at `addr` and answers every connection in a task of `set`.
async fn listen(set: &mut JoinSet<()>, addr: SocketAddr) -> Result<SocketAddr, TrafficError> {
    let listener = bind(addr)?.listen(128).map_err(|source| TrafficError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(|source| TrafficError::Bind { addr, source })?;
    set.spawn(serve(listener));
    Ok(local)
}

async fn serve(listener: TcpListener) {
    let mut conns = JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                conns.spawn(answer(s));
            }
            // Out of descriptors or similar: back off rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
        while conns.try_join_next().is_some() {}
    }
}

/// Reads the ping, answers, and closes first (so TIME_WAIT stays on the server side).
async fn answer(mut s: TcpStream) {
    let mut buf = [0u8; 64];
    if matches!(timeout(STEP_TIMEOUT, s.read(&mut buf)).await, Ok(Ok(n)) if n > 0) {
        let _ = timeout(STEP_TIMEOUT, s.write_all(b"pong\n")).await;
    }
}

async fn exchange(from: IpAddr, to: SocketAddr) -> io::Result<()> {
    let timed_out = |_| io::Error::from(io::ErrorKind::TimedOut);
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(from, 0))?;
    let mut s = timeout(STEP_TIMEOUT, sock.connect(to)).await.map_err(timed_out)??;
    timeout(STEP_TIMEOUT, s.write_all(b"ping\n")).await.map_err(timed_out)??;
    let mut answer = Vec::with_capacity(8);
    timeout(STEP_TIMEOUT, s.read_to_end(&mut answer)).await.map_err(timed_out)??;
    Ok(())
}
