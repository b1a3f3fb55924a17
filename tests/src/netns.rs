//! Test hosts in network namespaces the test makes itself: a namespace joined to this
//! one by a veth pair (or, for a slow lossy path, by whatever gives one: `netem` on the
//! veth, else a pair of TUN devices with a delaying, dropping forwarder), and sockets
//! opened from inside it. Removed on drop, whatever the test did.
#![expect(
    unsafe_code,
    reason = "a thread enters the namespace with setns(2); TUN devices need ioctl(2) and poll(2)"
)]

use std::{
    collections::VecDeque,
    fs::{File, OpenOptions},
    io::{self, Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    os::fd::AsRawFd,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// A network namespace joined to this one.
pub struct Netns {
    pub name: String,
    /// The link's end in this namespace.
    pub host_if: String,
    /// The forwarder threads of a TUN link; none for a veth pair.
    forwarder: Option<Forwarder>,
}

/// Runs `cmd` (words split at spaces; no shell, whose built-in applets could shadow
/// iproute2 where busybox is the shell).
pub fn run(cmd: &str) {
    let mut words = cmd.split_whitespace();
    let program = words.next().unwrap_or_default();
    let (ok, why) = match Command::new(program).args(words).output() {
        Ok(o) => (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned()),
        Err(e) => (false, e.to_string()),
    };
    assert!(ok, "`{cmd}` failed (iproute2 is installed by setup): {why}");
}

/// `nodad` for IPv6 (usable at once, no duplicate address detection); IPv4 has none.
pub fn nodad(a: IpAddr) -> &'static str {
    if a.is_ipv6() { " nodad" } else { "" }
}

impl Netns {
    fn empty(tag: &str) -> Self {
        let name = format!("cw{tag}{}", std::process::id() % 100_000);
        let host_if = format!("{name}h");
        // A namespace of that name left by an earlier, killed run of this test goes first.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        run(&format!("ip netns add {name}"));
        let ns = Self { name, host_if, forwarder: None };
        run(&format!("ip -n {} link set lo up", ns.name));
        ns
    }

    /// Makes namespace `cw<tag><pid>` joined by a veth pair; for each `(outside, inside,
    /// prefix)`, `inside/prefix` on its end and `outside/prefix` on this namespace's end.
    pub fn new(tag: &str, addrs: &[(IpAddr, IpAddr, u8)]) -> Self {
        let ns = Self::empty(tag);
        ns.veth();
        let (n, h) = (&ns.name, &ns.host_if);
        for &(outside, inside, prefix) in addrs {
            run(&format!("ip addr add {outside}/{prefix} dev {h}{}", nodad(outside)));
            run(&format!("ip -n {n} addr add {inside}/{prefix} dev {n}n{}", nodad(inside)));
        }
        ns.up();
        ns
    }

    /// Routes everything the namespace sends through this namespace (via `outside`, this
    /// end's address), and lets this end forward what comes in, so namespaces joined here
    /// reach each other. Forwarding is set on this link's end only, never node-wide.
    pub fn route_through(&self, outside: IpAddr) {
        run(&format!("ip -n {} route add default via {outside}", self.name));
        let family = if outside.is_ipv6() { "ipv6" } else { "ipv4" };
        run(&format!("sysctl -q -w net.{family}.conf.{}.forwarding=1", self.host_if));
    }

    /// One more address on this namespace's end of the link.
    pub fn alias(&self, outside: IpAddr, prefix: u8) {
        run(&format!("ip addr add {outside}/{prefix} dev {}{}", self.host_if, nodad(outside)));
    }

    fn veth(&self) {
        run(&format!("ip link add {} type veth peer name {}n", self.host_if, self.name));
        run(&format!("ip link set {0}n netns {0}", self.name));
    }

    /// Point-to-point addresses: `outside` here, `inside` there, each the other's peer.
    fn peers(&self, outside: IpAddr, inside: IpAddr) {
        let (n, h) = (&self.name, &self.host_if);
        run(&format!("ip addr add {outside} peer {inside} dev {h}{}", nodad(outside)));
        run(&format!("ip -n {n} addr add {inside} peer {outside} dev {n}n{}", nodad(inside)));
    }

    fn up(&self) {
        run(&format!("ip link set {} up", self.host_if));
        run(&format!("ip -n {0} link set {0}n up", self.name));
    }

    /// A namespace at `inside` reached from `outside` over a path where every packet each
    /// way waits `delay_ms` and is lost with `loss_percent`: a veth pair with `netem` when
    /// the kernel has it, else TUN devices with a forwarder in this process doing the same.
    pub fn slow_lossy(
        tag: &str,
        outside: IpAddr,
        inside: IpAddr,
        delay_ms: u32,
        loss_percent: u8,
    ) -> Self {
        let netem = format!("netem delay {delay_ms}ms loss {loss_percent}%");
        let mut ns = Self::empty(tag);
        let (n, h) = (ns.name.clone(), ns.host_if.clone());
        ns.veth();
        let root = Command::new("tc")
            .args(["qdisc", "add", "dev", &h, "root"])
            .args(netem.split(' '))
            .output()
            .expect("tc (iproute2 is installed by setup)");
        if root.status.success() {
            run(&format!("ip netns exec {n} tc qdisc add dev {n}n root {netem}"));
        } else {
            eprintln!(
                "no netem here ({}): a TUN pair with a forwarder makes the {delay_ms} ms, \
                 {loss_percent}% path instead",
                String::from_utf8_lossy(&root.stderr).trim()
            );
            run(&format!("ip link del {h}"));
            let outer = tun(&h).unwrap_or_else(|e| panic!("TUN device {h}: {e}"));
            let inner =
                ns.inside(|| tun(&format!("{n}n"))).unwrap_or_else(|e| panic!("TUN in {n}: {e}"));
            let delay = Duration::from_millis(delay_ms.into());
            ns.forwarder = Some(Forwarder::start(outer, inner, delay, loss_percent));
        }
        ns.peers(outside, inside);
        ns.up();
        ns
    }

    /// Runs `f` on a thread that entered the namespace, so sockets and devices it makes
    /// live there.
    pub fn inside<T: Send>(&self, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        enter(&self.name, f)
    }

    /// A TCP connection from `from` (an address inside the namespace) to `to`, opened
    /// inside it.
    pub fn connect(&self, from: IpAddr, to: SocketAddr) -> io::Result<TcpStream> {
        self.inside(|| crate::connect_from(from, to))
    }

    /// An unbound TCP connection to `to` opened inside the namespace: the kernel picks
    /// the source address.
    pub fn connect_unbound(&self, to: SocketAddr) -> io::Result<TcpStream> {
        self.inside(|| TcpStream::connect_timeout(&to, Duration::from_secs(5)))
    }
}

/// Runs `f` on a thread that entered the network namespace `name` (`ip netns`), so
/// sockets and devices it makes live there.
pub fn enter<T: Send>(name: &str, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let ns = File::open(format!("/run/netns/{name}"))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns(2) with an open namespace file and CLONE_NEWNET changes only
            // this thread's network namespace; the thread ends right after.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
    })
}

impl Drop for Netns {
    fn drop(&mut self) {
        // The forwarder stops first; closing its TUN descriptors removes both devices.
        drop(self.forwarder.take());
        // Deleting the namespace deletes its end of the link (and any qdisc) with it.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Opens a new TUN device `name` (layer 3, no packet-info header) in this thread's
/// network namespace; it exists until the returned file is closed.
fn tun(name: &str) -> io::Result<File> {
    let f = OpenOptions::new().read(true).write(true).open("/dev/net/tun")?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(io::Error::other(format!("interface name {name} is too long")));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = libc::c_char::from_ne_bytes([src]);
    }
    let flags = libc::IFF_TUN | libc::IFF_NO_PI;
    req.ifr_ifru.ifru_flags = i16::try_from(flags).expect("TUN flags fit a short");
    // SAFETY: TUNSETIFF reads and writes one ifreq, which lives across the call.
    if unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNSETIFF, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(f)
}

/// Two threads moving packets between TUN devices, each way delayed and randomly dropped.
struct Forwarder {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Forwarder {
    fn start(a: File, b: File, delay: Duration, loss_percent: u8) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (a2, b2) = (a.try_clone().expect("dup a TUN fd"), b.try_clone().expect("dup a TUN fd"));
        let threads = [(a, b2), (b, a2)]
            .into_iter()
            .map(|(from, to)| {
                let stop = stop.clone();
                std::thread::spawn(move || forward(&from, &to, delay, loss_percent, &stop))
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Waits up to `timeout` for `f` to be readable.
fn readable(f: &File, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd { fd: f.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one pollfd, alive across the call.
    unsafe { libc::poll(&mut pfd, 1, ms) > 0 && pfd.revents & libc::POLLIN != 0 }
}

/// Moves packets from `from` to `to`, each held for `delay` (in order) unless dropped.
fn forward(from: &File, to: &File, delay: Duration, loss_percent: u8, stop: &AtomicBool) {
    let mut rng = crate::Rng::from_env("netns forwarder");
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 65_536];
    let tick = Duration::from_millis(5);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while queue.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, packet)) = queue.pop_front() {
                // A full device queue drops the packet, as a real link would.
                let _ = (&*to).write(&packet);
            }
        }
        let wait =
            queue.front().map_or(tick, |(due, _)| due.saturating_duration_since(now).min(tick));
        if readable(from, wait)
            && let Ok(n) = (&*from).read(&mut buf)
            && !rng.chance(loss_percent.into())
        {
            queue.push_back((Instant::now() + delay, buf[..n].to_vec()));
        }
    }
}
