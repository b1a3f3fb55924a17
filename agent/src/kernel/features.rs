//! The capability ladder: what the agent can do without. The core (the `sock_ops` and
//! connect programs, the socket fields of `fields.rs`) must load, or the agent stops
//! with one sentence; every mechanism named here is optional, probed at start by loading
//! (and running) it, and reported in `cellwatch_kernel_feature{feature}` and, when
//! missing, in one log line saying what is used instead and what is lost.
//! `cellwatch run --without FEATURE` makes the agent behave as if the kernel had refused
//! it, so every fallback can be proven on a kernel that grants everything.
use std::fmt;

use agent_common::{SETTING_DESTROY_COOKIE_OFFSET, SETTING_DESTROY_SKADDR_OFFSET};
use aya::maps::{Array, MapData};
use tracing::warn;

use super::{
    error::{KernelError, map_err},
    object::{self, DESTROY_EVENT, TCP},
};
use crate::host::preflight::TRACEFS_PATH;

/// One optional mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Feature {
    /// `iter/bpf_sk_storage_map`: the live sweep walks the connection storage, every
    /// network namespace at once.
    SkStorageIter,
    /// `iter/tcp`: the live sweep's second mechanism (one walk per network namespace),
    /// and the seeding of connections older than the agent.
    TcpIter,
    /// `iter/bpf_map_elem`: connections to Service addresses that closed before their
    /// backend was found are settled in one walk.
    MapElemIter,
    /// `BPF_PROG_TEST_RUN` of a raw-tracepoint program: the settling's second mechanism,
    /// one run per connection.
    ProgTestRun,
    /// `tcp:tcp_destroy_sock` carries `sock_cookie` (and `skaddr`): connections older
    /// than the agent are seen closing.
    DestroySockCookie,
    /// This network namespace answers conntrack lookups (ctnetlink): connections to
    /// `service_cidrs` are judged by their backend (probed by `run`).
    ConntrackLookup,
    /// The cgroup skb programs: every UDP datagram counted per flow and cell pair, DNS
    /// answers by response code, and enforce mode's refusal of cross-cell sends.
    Udp,
}

/// What each feature is called, and what the agent does without it.
struct Row {
    feature: Feature,
    label: &'static str,
    /// What the agent does instead, or what it cannot tell, when the feature is missing.
    without: &'static str,
}

/// Every optional feature, in the order the agent probes them.
const ROWS: [Row; 7] = [
    Row {
        feature: Feature::SkStorageIter,
        label: "sk_storage_iter",
        without: "the live sweep walks each network namespace with the TCP iterator instead \
                  (tcp_iter)",
    },
    Row {
        feature: Feature::TcpIter,
        label: "tcp_iter",
        without: "without sk_storage_iter too, open connections count their bytes, RTT and \
                  retransmits only when they close, /connections cannot list them, and \
                  connections to Service addresses count when they close; connections older \
                  than the agent are not counted",
    },
    Row {
        feature: Feature::MapElemIter,
        label: "map_elem_iter",
        without: "connections to Service addresses that closed before their backend was found \
                  are settled one at a time with BPF_PROG_TEST_RUN instead (prog_test_run)",
    },
    Row {
        feature: Feature::ProgTestRun,
        label: "prog_test_run",
        without: "without map_elem_iter too, connections to Service addresses that close \
                  before their backend is found are not counted",
    },
    Row {
        feature: Feature::DestroySockCookie,
        label: "destroy_sock_cookie",
        without: "connections older than the agent are not seen closing, so they are not \
                  seeded",
    },
    Row {
        feature: Feature::ConntrackLookup,
        label: "conntrack_lookup",
        without: "connections to service_cidrs count under the cell `unresolved`",
    },
    Row {
        feature: Feature::Udp,
        label: "udp",
        without: "UDP flows and DNS are not counted (the cellwatch_udp_* and cellwatch_dns_* \
                  families stay empty), and enforce mode does not refuse cross-cell UDP; TCP \
                  is counted as before",
    },
];

impl Feature {
    fn row(self) -> &'static Row {
        // Every feature has its row (a unit test checks it); the first is a safe default.
        ROWS.iter().find(|r| r.feature == self).unwrap_or(&ROWS[0])
    }

    /// The `feature` label of `cellwatch_kernel_feature`.
    pub(crate) fn as_str(self) -> &'static str {
        self.row().label
    }

    /// What the agent does instead, or cannot tell, without it.
    pub(crate) fn without(self) -> &'static str {
        self.row().without
    }

    /// The feature of a label.
    pub(crate) fn parse(label: &str) -> Result<Self, UnknownFeature> {
        ROWS.iter()
            .find(|r| r.label == label)
            .map(|r| r.feature)
            .ok_or_else(|| UnknownFeature { name: label.to_owned() })
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--without` name that is no feature.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "unknown feature `{name}` for --without; the features are {}",
    ROWS.iter().map(|r| r.label).collect::<Vec<_>>().join(", ")
)]
pub(crate) struct UnknownFeature {
    name: String,
}

/// The features a run does without (`--without`), as if the kernel had refused them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Without(Vec<Feature>);

impl Without {
    /// `--without`'s value: comma-separated feature labels.
    pub(crate) fn parse(list: &str) -> Result<Self, UnknownFeature> {
        let mut out = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let f = Feature::parse(name)?;
            if !out.contains(&f) {
                out.push(f);
            }
        }
        Ok(Self(out))
    }

    /// Several `--without` flags add up.
    pub(crate) fn extend(&mut self, other: &Self) {
        for f in &other.0 {
            if !self.0.contains(f) {
                self.0.push(*f);
            }
        }
    }

    pub(crate) fn has(&self, f: Feature) -> bool {
        self.0.contains(&f)
    }
}

/// Whether a feature works here, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    Works,
    /// Forced off by `--without`.
    Forced,
    /// The kernel refused it: the sentence that says how.
    Refused(String),
}

impl Found {
    pub(crate) fn works(&self) -> bool {
        *self == Self::Works
    }
}

/// What the probes found, feature by feature.
#[derive(Debug, Clone, Default)]
pub(crate) struct Findings(Vec<(Feature, Found)>);

impl Findings {
    /// Records one finding and, for a missing feature, logs the one line that says what
    /// the agent does instead.
    pub(crate) fn record(&mut self, feature: Feature, found: Found) {
        say(feature, &found);
        self.0.retain(|(f, _)| *f != feature);
        self.0.push((feature, found));
    }

    pub(crate) fn works(&self, feature: Feature) -> bool {
        self.0.iter().any(|(f, found)| *f == feature && found.works())
    }

    /// Every feature probed, and whether it works, in probing order.
    pub(crate) fn rows(&self) -> Vec<(Feature, bool)> {
        let mut rows: Vec<_> = self.0.iter().map(|(f, found)| (*f, found.works())).collect();
        rows.sort_by_key(|(f, _)| ROWS.iter().position(|r| r.feature == *f));
        rows
    }

    /// One line for the log: `sk_storage_iter=yes tcp_iter=no ...`.
    pub(crate) fn summary(&self) -> String {
        self.rows()
            .iter()
            .map(|(f, ok)| format!("{f}={}", if *ok { "yes" } else { "no" }))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The one log line of a missing feature: why, and what the agent does instead.
pub(crate) fn say(feature: Feature, found: &Found) {
    match found {
        Found::Works => {}
        Found::Forced => warn!(%feature, "{feature} is off (--without): {}", feature.without()),
        Found::Refused(why) => warn!(%feature, "{why}; so {}", feature.without()),
    }
}

/// The `tcp:tcp_destroy_sock` fields (`destroy_sock_cookie`): tells the programs where
/// they are (through `settings`), unless `--without` says otherwise.
pub(super) fn probe_destroy_cookie(
    settings: &mut Array<MapData, u32>,
    without: &Without,
) -> Result<Found, KernelError> {
    let feature = Feature::DestroySockCookie;
    let fields =
        [("sock_cookie", SETTING_DESTROY_COOKIE_OFFSET), ("skaddr", SETTING_DESTROY_SKADDR_OFFSET)];
    let path = format!("{TRACEFS_PATH}/events/{TCP}/{DESTROY_EVENT}/format");
    let format = std::fs::read_to_string(path).unwrap_or_default();
    let offsets = fields.map(|(field, _)| field_offset(&format, field));
    let found = if without.has(feature) {
        Found::Forced
    } else if offsets.iter().all(Option::is_some) {
        Found::Works
    } else {
        Found::Refused(format!("{TCP}:{DESTROY_EVENT} lacks a field cellwatch reads here"))
    };
    // The programs find each field at its offset (0 = absent).
    for ((_, setting), off) in fields.iter().zip(offsets) {
        let off = if found.works() { off.unwrap_or(0) } else { 0 };
        settings.set(*setting, off, 0).map_err(map_err(object::SETTINGS))?;
    }
    Ok(found)
}

/// Parses `field:__u64 sock_cookie; offset:64; size:8;` lines of a tracefs format file.
fn field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|l| {
        let decl = l.trim().strip_prefix("field:")?.split(';').next()?;
        let name = decl.rsplit(|c: char| c.is_whitespace() || c == '*').next()?;
        if name != field {
            return None;
        }
        let off = l.split("offset:").nth(1)?.split(';').next()?;
        off.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests;
