//! The connection churn both the churn benchmark and its exactness test drive: `n`
//! sequential loopback connections from one address to a server, one byte each way, then
//! a close with FIN (the server closes first, so TIME_WAIT stays on its side) or with RST
//! (the client aborts: `SO_LINGER` 0).
use std::{
    io::{self, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

/// How a connection ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    Fin,
    Rst,
}

impl Close {
    pub fn label(self) -> &'static str {
        match self {
            Self::Fin => "FIN",
            Self::Rst => "RST",
        }
    }
}

/// Makes `n` connections from `from` to a server it starts on `server`, one after the
/// other; returns connections per second. Bounded: it gives up after `limit`.
pub fn churn(
    from: IpAddr,
    server: IpAddr,
    n: usize,
    close: Close,
    limit: Duration,
) -> io::Result<f64> {
    let listener = TcpListener::bind((server, 0))?;
    let to = listener.local_addr()?;
    let done = Arc::new(AtomicBool::new(false));
    let serving = {
        let done = done.clone();
        thread::spawn(move || serve(&listener, &done, close))
    };
    let started = Instant::now();
    let made = clients(from, to, n, close, started + limit);
    let rate = n as f64 / started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let served = serving.join().map_err(|_| io::Error::other("the churn server panicked"))?;
    made?;
    served?;
    Ok(rate)
}

fn clients(
    from: IpAddr,
    to: SocketAddr,
    n: usize,
    close: Close,
    deadline: Instant,
) -> io::Result<()> {
    let mut byte = [0u8; 1];
    for i in 0..n {
        if Instant::now() > deadline {
            return Err(io::Error::other(format!("churn: only {i} of {n} connections in time")));
        }
        let mut s = crate::connect_from(from, to)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(&[7])?;
        s.read_exact(&mut byte)?;
        match close {
            // Wait for the server's FIN, then close.
            Close::Fin => {
                let _ = s.read(&mut byte)?;
            }
            Close::Rst => {
                socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO))?;
            }
        }
    }
    Ok(())
}

fn serve(listener: &TcpListener, done: &AtomicBool, close: Close) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut byte = [0u8; 1];
    while !done.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut s, _)) => {
                s.set_nonblocking(false)?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.read_exact(&mut byte)?;
                s.write_all(&byte)?;
                if close == Close::Rst {
                    // The client's RST ends it; wait for it, so the server's close comes
                    // after and counts nothing of its own.
                    let _ = s.read(&mut byte);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::yield_now(),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
