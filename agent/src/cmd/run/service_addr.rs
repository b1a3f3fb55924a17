//! Connections to Kubernetes Service addresses (`service_cidrs`): the agent
//! finds where each went (the reply tuple of its conntrack entry, in the node's network
//! namespace where kube-proxy's DNAT ran), judges that backend by the running config and
//! hands the answer to the kernel, which counts the connection under it from then on
//! (`service_addr.rs` and `settle.rs` in the programs).
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
        mpsc::{self, RecvTimeoutError},
    },
    time::{Duration, Instant},
};

use agent_common::{
    CELL_EXTERNAL, CELL_UNRESOLVED, Deferred, NO_SERVICE, Resolution, Verdict, ViolationEvent,
};
use agent_core::{
    config::Config,
    conntrack::{Tuple, ipvs_backend},
    events::addr,
    ids::CellIds,
    policy::{self, Place},
};
use tracing::{debug, info, warn};

use crate::{
    host::conntrack::{Conntrack, Destination, NewEntries},
    kernel::MapsHandle,
    serve::metrics::{DROPPED_ANNOUNCED_FULL, DROPPED_IPVS_TOO_LARGE},
    sync,
};

/// How often connections that closed before their answer are looked for (a request can
/// be lost when the ring buffer is full, and an agent that restarts finds them there).
const SCAN_EVERY: Duration = Duration::from_secs(1);
/// The most requests answered in one batch.
const BATCH: usize = 4096;
/// The longest wait for the kernel's next request.
const WAIT: Duration = Duration::from_millis(100);
/// IPVS's connections in this network namespace (kube-proxy's IPVS mode).
const IPVS_CONNS: &str = "/proc/net/ip_vs_conn";
/// The most bytes of IPVS's connection table read for one batch (a table past it is
/// read that far, and counted).
const IPVS_MAX: u64 = 64 << 20;
/// The most announced entries kept at once.
const ANNOUNCED_MAX: usize = 65_536;
/// How long an announced entry is kept for a request that may still come.
const ANNOUNCED_FOR: Duration = Duration::from_secs(60);
/// A connection conntrack has no entry for is asked about once more this much later
/// before it counts as `unresolved` (an entry can be briefly out of the table, as when a
/// reused port's old entry is replaced).
const RETRY_AFTER: Duration = Duration::from_millis(300);

/// Find the backend of this connection: its cookie, its client and the service address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Request {
    cookie: u64,
    tuple: Tuple,
}

impl Request {
    /// The request the kernel sent (`src` is the client, `dst` the service address).
    fn of_event(e: &ViolationEvent) -> Self {
        Self::new(e.cookie, e.family, (e.src_addr, e.src_port), (e.dst_addr, e.dst_port))
    }

    /// A client's connection that closed before its answer (local end is the client).
    fn of_deferred(d: &Deferred) -> Self {
        let c = &d.conn;
        Self::new(c.cookie, c.family, (c.local_addr, c.local_port), (c.remote_addr, c.remote_port))
    }

    /// Conntrack sees an IPv4 connection of an IPv6 socket (`::ffff:a.b.c.d`) as IPv4.
    fn new(cookie: u64, family: u16, src: ([u8; 16], u16), dst: ([u8; 16], u16)) -> Self {
        let end = |(raw, port)| SocketAddr::new(addr(family, raw).to_canonical(), port);
        Self { cookie, tuple: Tuple { src: end(src), dst: end(dst) } }
    }
}

/// Where a connection from `client` went, judged by `cfg`: the backend's cell, service
/// and the verdict; the cell `unresolved` (allowed, and visible as such) when no backend
/// was found.
pub(crate) fn judge(cfg: &Config, ids: &CellIds, client: IpAddr, to: Destination) -> Resolution {
    let Destination::Backend(backend) = to else {
        return Resolution {
            dst_cell: CELL_UNRESOLVED,
            service: NO_SERVICE,
            verdict: Verdict::ALLOWED.0,
            _pad: 0,
        };
    };
    let (ip, port) = (backend.ip().to_canonical(), backend.port());
    let dst_cell = match policy::place(cfg, ip) {
        Place::Cell(name) => ids.lookup(name).unwrap_or(CELL_EXTERNAL),
        Place::External | Place::Ignored => CELL_EXTERNAL,
    };
    let service = policy::service(cfg, ip, port)
        .and_then(|name| ids.service_lookup(name))
        .unwrap_or(NO_SERVICE);
    // A connection the config does not track is answered as allowed.
    let verdict = policy::verdict(cfg, client.to_canonical(), ip, port).unwrap_or(Verdict::ALLOWED);
    Resolution { dst_cell, service, verdict: verdict.0, _pad: 0 }
}

/// Conntrack lookups forced off (`--without conntrack_lookup`).
#[derive(Debug, thiserror::Error)]
#[error("off (--without conntrack_lookup)")]
struct ForcedOff;

/// What the answerer thread (the one answering the kernel's requests to find a Service
/// backend) works with.
pub(crate) struct Answerer {
    pub(crate) maps: MapsHandle,
    pub(crate) config: Arc<RwLock<Config>>,
    pub(crate) ids: Arc<RwLock<CellIds>>,
    pub(crate) requests: mpsc::Receiver<ViolationEvent>,
    pub(crate) stop: Arc<AtomicBool>,
    /// Conntrack lookups allowed (false with `--without conntrack_lookup`: as where
    /// ctnetlink is missing).
    pub(crate) conntrack: bool,
    /// `cellwatch_service_lookups_dropped_total`, by reason.
    pub(crate) dropped: prometheus::IntCounterVec,
}

/// Answers requests on a thread of its own until `stop` is set.
pub(crate) fn spawn(a: Answerer) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || Answering::new(a).run())
}

/// The answerer thread's state while it answers.
struct Answering {
    maps: MapsHandle,
    config: Arc<RwLock<Config>>,
    ids: Arc<RwLock<CellIds>>,
    requests: mpsc::Receiver<ViolationEvent>,
    stop: Arc<AtomicBool>,
    finder: Finder,
    /// Connections to ask about again: when, and what.
    again: Vec<(Instant, u64, Tuple)>,
    last_scan: Instant,
}

impl Answering {
    fn new(a: Answerer) -> Self {
        let Answerer { maps, config, ids, requests, stop, conntrack, dropped } = a;
        let finder = Finder {
            ct: open_conntrack(conntrack),
            announced: Announced::new(),
            conntrack,
            announced_full: dropped.with_label_values(&[DROPPED_ANNOUNCED_FULL]),
            ipvs_too_large: dropped.with_label_values(&[DROPPED_IPVS_TOO_LARGE]),
        };
        let last_scan = Instant::now().checked_sub(SCAN_EVERY).unwrap_or_else(Instant::now);
        Self { maps, config, ids, requests, stop, finder, again: Vec::new(), last_scan }
    }

    fn run(mut self) {
        // Subscribed at once when the config has service_cidrs, before any request.
        self.finder.announce(&self.config);
        while !self.stop.load(Ordering::Relaxed) {
            let mut batch = self.gather();
            let now = Instant::now();
            let last = self.due_again(&mut batch, now);
            self.finder.announce(&self.config);
            if batch.is_empty() {
                continue;
            }
            let answers = self.answer(&batch, &last, now);
            match self.maps.resolve(&answers) {
                Ok(settled) => debug!(answered = answers.len(), settled, "service backends"),
                Err(e) => warn!(error = %e, "cannot hand service backends to the kernel"),
            }
        }
        info!("service backend lookups stopped");
    }

    /// The requests the kernel sent (waited for at most [`WAIT`], at most [`BATCH`]); and,
    /// every [`SCAN_EVERY`], the connections that closed before their answer.
    fn gather(&mut self) -> HashMap<u64, Tuple> {
        let mut batch: HashMap<u64, Tuple> = HashMap::new();
        match self.requests.recv_timeout(WAIT) {
            Ok(e) => {
                let r = Request::of_event(&e);
                batch.insert(r.cookie, r.tuple);
                while batch.len() < BATCH {
                    let Ok(e) = self.requests.try_recv() else { break };
                    let r = Request::of_event(&e);
                    batch.insert(r.cookie, r.tuple);
                }
            }
            // No drain sends any more (it ended, or there was no ring buffer): the wait
            // returns at once, so pace the scans here instead of spinning.
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(WAIT),
            Err(RecvTimeoutError::Timeout) => {}
        }
        if self.last_scan.elapsed() >= SCAN_EVERY {
            self.last_scan = Instant::now();
            for d in self.maps.waiting_deferred() {
                let r = Request::of_deferred(&d);
                batch.insert(r.cookie, r.tuple);
            }
        }
        batch
    }

    /// The second asking of those whose time has come, added to `batch`: their cookies,
    /// as this asking is their last.
    fn due_again(&mut self, batch: &mut HashMap<u64, Tuple>, now: Instant) -> HashSet<u64> {
        let (due, wait): (Vec<_>, Vec<_>) = self.again.drain(..).partition(|(at, ..)| *at <= now);
        self.again = wait;
        let last: HashSet<u64> = due.iter().map(|(_, c, _)| *c).collect();
        for (_, cookie, t) in due {
            batch.entry(cookie).or_insert(t);
        }
        last
    }

    /// The answers for `batch`, judged by the running config. A connection no backend
    /// was found for is asked about again later unless this was its `last` asking.
    fn answer(
        &mut self,
        batch: &HashMap<u64, Tuple>,
        last: &HashSet<u64>,
        now: Instant,
    ) -> Vec<(u64, Resolution)> {
        let cfg = sync::read(&self.config);
        let ids = sync::read(&self.ids);
        // kube-proxy's IPVS mode: its connections, read once a batch if needed.
        let mut ipvs: Option<String> = None;
        batch
            .iter()
            .filter_map(|(cookie, t)| {
                let to = self.finder.destination(t, &mut ipvs);
                if to == Destination::NoEntry && !last.contains(cookie) {
                    self.again.push((now + RETRY_AFTER, *cookie, *t));
                    return None;
                }
                if !matches!(to, Destination::Backend(_)) {
                    debug!(client = %t.src, service = %t.dst, ?to, "no backend found");
                }
                Some((*cookie, judge(&cfg, &ids, t.src.ip(), to)))
            })
            .collect()
    }
}

/// Conntrack's socket, unless lookups are off or not possible (said once).
fn open_conntrack(allowed: bool) -> Option<Conntrack> {
    let opened =
        if allowed { Conntrack::open() } else { Err(std::io::Error::other(ForcedOff).into()) };
    match opened {
        Ok(ct) => Some(ct),
        Err(e) => {
            warn!(
                error = %e,
                "no conntrack lookups (ctnetlink): connections to service_cidrs count \
                 under the cell `unresolved`"
            );
            None
        }
    }
}

/// Where connections to Service addresses went, asked of each source in turn.
struct Finder {
    ct: Option<Conntrack>,
    announced: Announced,
    /// Conntrack lookups allowed: the announcements are listened to only then.
    conntrack: bool,
    announced_full: prometheus::IntCounter,
    ipvs_too_large: prometheus::IntCounter,
}

impl Finder {
    /// Takes in what conntrack announced since the last call, counting what found no
    /// room.
    fn announce(&mut self, config: &RwLock<Config>) {
        if self.conntrack {
            let over = self.announced.take(&sync::read(config));
            self.announced_full.inc_by(over);
        }
    }

    /// Where `t` went: its conntrack entry; else the entry conntrack announced for it;
    /// else IPVS's table (`ipvs`, read the first time a batch needs it).
    fn destination(&mut self, t: &Tuple, ipvs: &mut Option<String>) -> Destination {
        let found = lookup(&mut self.ct, t);
        if found != Destination::NoEntry {
            return found;
        }
        let found = self.announced.get(t);
        if found != Destination::NoEntry {
            return found;
        }
        let text = ipvs.get_or_insert_with(|| {
            let (text, whole) = read_bounded(IPVS_CONNS, IPVS_MAX);
            if !whole {
                self.ipvs_too_large.inc();
            }
            text
        });
        ipvs_backend(text, t).map_or(Destination::NoEntry, Destination::Backend)
    }
}

/// The NATed entries to Service addresses conntrack announced lately, by original tuple:
/// the answer for a connection whose entry is gone by the time it is asked about (one
/// the backend refused).
struct Announced {
    new: Option<NewEntries>,
    by_tuple: HashMap<Tuple, (SocketAddr, Instant)>,
}

impl Announced {
    fn new() -> Self {
        Self { new: None, by_tuple: HashMap::new() }
    }

    /// Keeps what was announced since the last call, of connections to `service_cidrs`,
    /// up to `ANNOUNCED_MAX` entries; returns how many were left out for want of room.
    /// Subscribed only while the config has `service_cidrs`: the kernel announces every
    /// new conntrack entry of the node, which a node without them need not be sent.
    fn take(&mut self, cfg: &Config) -> u64 {
        if cfg.service_cidrs.is_empty() {
            self.new = None;
            self.by_tuple.clear();
            return 0;
        }
        if self.new.is_none() {
            self.new = NewEntries::subscribe()
                .map_err(|e| warn!(error = %e, "no conntrack announcements; lookups only"))
                .ok();
        }
        let Some(new) = &mut self.new else { return 0 };
        let entries = new.drain();
        let now = Instant::now();
        self.by_tuple.retain(|_, (_, at)| now.duration_since(*at) < ANNOUNCED_FOR);
        let mut over = 0;
        for (orig, reply) in entries {
            let to_service = cfg.service_cidrs.iter().any(|n| n.contains(&orig.dst.ip()));
            if let (true, Some(backend)) = (to_service, Tuple::backend_of(&orig, &reply)) {
                if self.by_tuple.len() >= ANNOUNCED_MAX && !self.by_tuple.contains_key(&orig) {
                    over += 1;
                    continue;
                }
                self.by_tuple.insert(orig, (backend, now));
            }
        }
        over
    }

    fn get(&self, t: &Tuple) -> Destination {
        self.by_tuple.get(t).map_or(Destination::NoEntry, |(b, _)| Destination::Backend(*b))
    }
}

/// A file's text, up to `max` bytes; and whether that was all of it.
fn read_bounded(path: &str, max: u64) -> (String, bool) {
    use std::io::Read;
    let mut text = String::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(max + 1).read_to_string(&mut text));
    if read.is_err() {
        return (String::new(), true);
    }
    if text.len() as u64 > max {
        // Cut at the last whole line within the bound.
        let cut =
            text[..usize::try_from(max).unwrap_or(usize::MAX)].rfind('\n').map_or(0, |i| i + 1);
        text.truncate(cut);
        return (text, false);
    }
    (text, true)
}

/// The conntrack answer for `t`; no backend when lookups are not possible.
fn lookup(ct: &mut Option<Conntrack>, t: &Tuple) -> Destination {
    let Some(c) = ct else { return Destination::NoEntry };
    match c.destination(t) {
        Ok(d) => d,
        Err(e) => {
            warn!(error = %e, "conntrack lookup failed");
            Destination::NoEntry
        }
    }
}

/// Whether this network namespace answers conntrack lookups (ctnetlink): a lookup of a
/// tuple no connection has is answered "no such entry".
pub(crate) fn probe() -> bool {
    let Ok(mut ct) = Conntrack::open() else { return false };
    let t = Tuple {
        src: SocketAddr::from(([127, 0, 0, 1], 1)),
        dst: SocketAddr::from(([127, 0, 0, 1], 1)),
    };
    ct.destination(&t).is_ok()
}

#[cfg(test)]
mod tests;
