//! The address ranges of each test area, in one table. All areas run in one test binary
//! (`tests/tests/it/`), their tests side by side, each with agents of its own, and every
//! agent counts whatever touches its cells. So each area owns blocks of /16s that no
//! other area uses, and builds its addresses and config CIDRs from them
//! (`FOUNDATION.ip(1, 0, 1)` is 127.32.0.1, `FOUNDATION.cidr(1)` is "127.32.0.0/16").
//!
//! | area | block | used for |
//! |---|---|---|
//! | harness | 127.0.0.0/16 | the agents' HTTP ports (127.0.0.1), `free_port`, `http_get`, Prometheus; the configs with an `ignore_cidrs` range ignore it |
//! | foundation | 127.31–38 | four tests, two cells each (31–32, 33–34, 35–36, 37–38) |
//! | telemetry | 127.50–99, and ::1 | six tests, three cells each (shared, blue, green) from 50, 60, 70, 80, 90, 95; blue also holds ::1, which no other area uses |
//! | demo | 127.100 | fixed by the demo's embedded cell map (`agent/src/cmd/demo/demo.yaml`) |
//! | prometheus | 127.120–123 | global, cell-a, cell-b, cell-c (a connection open all along) |
//! | victoria | 127.124–127 | global (service `db` on .5.0/24), cell-a, cell-b, cell-c (a connection open all along) |
//! | fleet | 127.128–131 | cell-a, cell-b: native histograms (.128–129), detail levels (.130–131) |
//! | enforce | 127.140–153 | 140–143 and 144–145 (one test each), 146 (the full pair tables, a /24 per cell), 150–153 (the dry run) |
//! | restart | 127.170–178 | four tests: 170–171, 172–173, 174–175, 176–178 |
//! | cells | 127.200–215 | 200–207 the property test's universe (127.200.0.0/13), 210–215 the reload tests |
//! | http | 127.230–231 | cell-a, cell-b |
//! | churn | 127.160–162 | cell-a (allowed clients), cell-c (violating clients), cell-b (the server) |
//! | drain | 127.180–191 | cell-a and cell-b of each test: 180–181 the drain, 182–183 and 190–191 `drain: refuse` (cell-c, cell-d there), 184–185 and 186–187 the temporary rules, 188–189 the Alertmanager test |
//! | live | 127.240–245 | three tests, two cells each (240–241, 242–243, 244–245) |
//! | live, network namespace | 10.240.0.0/16 | the veth pair of the slow, lossy path the test makes |
//! | services | 127.110–117 | 110–113: global (its services' addresses), cell-a, cell-b, cell-c; 114–117 the same for the real-Prometheus test |
//! | top | 127.246–247 | top-a, top-b: shared by the area's tests, which take turns (a lock in `top.rs`) |
//! | ladder | 127.248–249 | cell-a, cell-b: the agent on the core alone |
//! | enforce, network namespace | 10.251.0.0/16, and fd00:251::/48 | the veth pairs of the pod-like namespaces the tests make: 10.251.0.0/24 and fd00:251::/64 for one, 10.251.1.0/24 and fd00:251:0:1::/64 for the other |
//! | service_addr, network namespaces | 10.252.0.0/16, and fd00:252::/48 | kube-proxy's layout: node and pod namespaces; test `t` takes 10.252.(20t)–(20t+9) |
//! | bench service-addr, network namespaces | 10.253.0.0/16 | `cargo xtask bench service-addr`'s cluster |
//! | udp, network namespaces | 10.249.0.0/16 | global, cell-a, cell-b namespaces of each test: 10.249.0–2.0/24 (DNS), 10.249.10–12.0/24 (flows and enforce), 10.249.20–22.0/24 (the ladder), 10.249.30–32.0/24 (the report), 10.249.40–42.0/24 (idle flows), 10.249.50–52.0/24 (the full flow table), 10.249.60.0/24 and fd00:249::/32 (IPv6 flows on a namespace's loopback) |
//! | http, network namespace | 10.254.0.0/16 | the veth pair of a pod-like client of the agent's endpoints |
//! | deploy | 10.0–2 | fixed by the shipped cell map (`deploy/kustomize/cells.yaml`); no traffic |
//!
//! The startup area makes no traffic and uses the harness range only. A new test takes
//! the next free /16s of its area's block, or widens the block into free space; the unit
//! test below fails when two blocks overlap.
use std::net::{IpAddr, Ipv4Addr};

/// A block of /16s: `net.first.0.0/16` to `net.last.0.0/16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// The first octet: 127 (loopback) or 10 (a network namespace's veth pair).
    pub net: u8,
    pub first: u8,
    pub last: u8,
}

impl Block {
    const fn new(net: u8, first: u8, last: u8) -> Self {
        assert!(first <= last);
        Self { net, first, last }
    }

    /// The second octet of the block's `i`th /16; panics outside the block.
    pub const fn at(self, i: u8) -> u8 {
        assert!(i <= self.last - self.first, "outside the area's block");
        self.first + i
    }

    /// `net.(first + i).c.d`.
    pub const fn ip(self, i: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(self.net, self.at(i), c, d))
    }

    /// The `i`th /16 as a CIDR, e.g. `127.32.0.0/16`.
    pub fn cidr(self, i: u8) -> String {
        format!("{}.{}.0.0/16", self.net, self.at(i))
    }
}

pub const HARNESS: Block = Block::new(127, 0, 0);
pub const FOUNDATION: Block = Block::new(127, 31, 38);
pub const TELEMETRY: Block = Block::new(127, 50, 99);
pub const DEMO: Block = Block::new(127, 100, 100);
pub const PROMETHEUS: Block = Block::new(127, 120, 123);
pub const VICTORIA: Block = Block::new(127, 124, 127);
pub const FLEET: Block = Block::new(127, 128, 131);
pub const ENFORCE: Block = Block::new(127, 140, 153);
pub const RESTART: Block = Block::new(127, 170, 178);
pub const CELLS: Block = Block::new(127, 200, 215);
pub const HTTP: Block = Block::new(127, 230, 231);
pub const LIVE: Block = Block::new(127, 240, 245);
pub const CHURN: Block = Block::new(127, 160, 162);
pub const DRAIN: Block = Block::new(127, 180, 191);
/// The veth pairs of the live area's network namespaces (a slow, lossy path).
pub const LIVE_NETNS: Block = Block::new(10, 240, 240);
pub const TOP: Block = Block::new(127, 246, 247);
pub const LADDER: Block = Block::new(127, 248, 249);
pub const SERVICES: Block = Block::new(127, 110, 117);
/// With fd00:251::/64 for IPv6 (`fd00:{ENFORCE_NETNS.first}::`).
pub const ENFORCE_NETNS: Block = Block::new(10, 251, 251);
pub const DEPLOY: Block = Block::new(10, 0, 2);
/// With fd00:252::/48 for IPv6: the node and pod namespaces of kube-proxy's layout.
pub const KUBEPROXY_NETNS: Block = Block::new(10, 252, 252);
/// The veth pair of the http area's pod-like namespace (a client off the node).
pub const HTTP_NETNS: Block = Block::new(10, 254, 254);
/// The udp area's namespaces: a global, a cell-a and a cell-b one per test.
pub const UDP_NETNS: Block = Block::new(10, 249, 249);
/// `cargo xtask bench service-addr`'s cluster (never beside the tests, but kept apart anyway).
pub const SERVICE_ADDR_BENCH: Block = Block::new(10, 253, 253);

/// Every block, by area.
pub const TABLE: &[(&str, Block)] = &[
    ("harness", HARNESS),
    ("udp, network namespaces", UDP_NETNS),
    ("foundation", FOUNDATION),
    ("telemetry", TELEMETRY),
    ("demo", DEMO),
    ("prometheus", PROMETHEUS),
    ("victoria", VICTORIA),
    ("fleet", FLEET),
    ("enforce", ENFORCE),
    ("restart", RESTART),
    ("cells", CELLS),
    ("http", HTTP),
    ("live", LIVE),
    ("churn", CHURN),
    ("drain", DRAIN),
    ("live, network namespace", LIVE_NETNS),
    ("top", TOP),
    ("ladder", LADDER),
    ("services", SERVICES),
    ("enforce, network namespace", ENFORCE_NETNS),
    ("deploy", DEPLOY),
    ("service_addr, network namespaces", KUBEPROXY_NETNS),
    ("bench service-addr, network namespaces", SERVICE_ADDR_BENCH),
    ("http, network namespace", HTTP_NETNS),
];

#[cfg(test)]
mod tests;
