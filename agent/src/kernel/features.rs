//! Optional kernel features, probed at start: each is one row of [`FEATURES`] (what
//! the agent looks for, where its finding goes, what is lost without it), reported in
//! `cellwatch_kernel_feature` and, when missing, in one log line. (What the agent cannot
//! do without, the socket fields of `fields.rs`, is no feature: without them it stops.)
use agent_common::{SETTING_DESTROY_COOKIE_OFFSET, SETTING_DESTROY_SKADDR_OFFSET};
use aya::maps::{Array, MapData};
use tracing::warn;

use super::{
    error::{KernelError, map_err},
    object::{self, DESTROY_EVENT, TCP},
};
use crate::host::preflight::TRACEFS_PATH;

/// What the running kernel offers that the agent can do without.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feature {
    /// `tcp:tcp_destroy_sock` carries `sock_cookie` (and `skaddr`): connections older
    /// than the agent are seen closing.
    DestroySockCookie,
    /// This network namespace answers conntrack lookups (ctnetlink): connections to
    /// `service_cidrs` are judged by their backend (probed by `run`, not here).
    ConntrackLookup,
}

/// One optional feature: its label, the tracepoint whose record has the fields, the
/// `SETTINGS` index each field's offset goes to, and what the agent cannot tell without.
struct Row {
    feature: Feature,
    label: &'static str,
    event: &'static str,
    fields: [(&'static str, u32); 2],
    without: &'static str,
}

const FEATURES: [Row; 1] = [Row {
    feature: Feature::DestroySockCookie,
    label: "destroy_sock_cookie",
    event: DESTROY_EVENT,
    fields: [
        ("sock_cookie", SETTING_DESTROY_COOKIE_OFFSET),
        ("skaddr", SETTING_DESTROY_SKADDR_OFFSET),
    ],
    without: "connections older than the agent are not seen closing",
}];

impl Feature {
    /// The `feature` label of `cellwatch_kernel_feature`.
    pub(crate) fn as_str(self) -> &'static str {
        if self == Self::ConntrackLookup {
            return "conntrack_lookup";
        }
        FEATURES.iter().find(|r| r.feature == self).map_or("unknown", |r| r.label)
    }
}

/// Probes every feature, tells the programs what was found (through `settings`) and
/// logs what is missing.
pub(super) fn probe(
    settings: &mut Array<MapData, u32>,
) -> Result<Vec<(Feature, bool)>, KernelError> {
    let mut found = Vec::with_capacity(FEATURES.len());
    for row in &FEATURES {
        let path = format!("{TRACEFS_PATH}/events/{TCP}/{}/format", row.event);
        let format = std::fs::read_to_string(path).unwrap_or_default();
        let offsets = row.fields.map(|(field, _)| field_offset(&format, field));
        let has = offsets.iter().all(Option::is_some);
        if has {
            // The programs find each field at its offset (0 = absent).
            for ((_, setting), off) in row.fields.iter().zip(offsets) {
                let off = off.unwrap_or(0);
                settings.set(*setting, off, 0).map_err(map_err(object::SETTINGS))?;
            }
        } else {
            warn!("{TCP}:{} lacks a field cellwatch reads here: {}", row.event, row.without);
        }
        found.push((row.feature, has));
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
mod tests {
    #[test]
    fn tracefs_field_offsets_parse() {
        let fmt = "name: tcp_receive_reset\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
                   \tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
                   \tfield:__u8 daddr_v6[16];\toffset:46;\tsize:16;\tsigned:0;\n\
                   \tfield:__u64 sock_cookie;\toffset:64;\tsize:8;\tsigned:0;\n";
        assert_eq!(super::field_offset(fmt, "sock_cookie"), Some(64));
        assert_eq!(super::field_offset(fmt, "skaddr"), Some(8));
        assert_eq!(super::field_offset(fmt, "cookie"), None);
    }

    #[test]
    fn every_feature_has_its_row() {
        assert_eq!(super::Feature::DestroySockCookie.as_str(), "destroy_sock_cookie");
        assert_eq!(super::Feature::ConntrackLookup.as_str(), "conntrack_lookup");
    }
}
