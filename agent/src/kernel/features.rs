//! Optional kernel features, probed at start: each is one row of [`FEATURES`] (what
//! the agent looks for, where its finding goes, what is lost without it), reported in
//! `cellwatch_kernel_feature` and, when missing, in one log line.
use agent_common::{SETTING_DESTROY_COOKIE_OFFSET, SETTING_RST_COOKIE_OFFSET};
use aya::maps::{Array, MapData};
use tracing::warn;

use super::{
    error::{KernelError, map_err},
    object::{self, DESTROY_EVENT, RST_EVENT, TCP},
};
use crate::host::preflight::TRACEFS_PATH;

/// What the running kernel offers that the agent can do without.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feature {
    /// `tcp:tcp_receive_reset` carries `sock_cookie`: refused connects are told from
    /// timed-out ones (else both count as `other`).
    RstSockCookie,
    /// `tcp:tcp_destroy_sock` carries `sock_cookie`: connections older than the agent are
    /// seen closing.
    DestroySockCookie,
}

/// One optional feature: its label, the tracepoint whose record has the field, the
/// `SETTINGS` index its offset goes to, and what the agent cannot tell without it.
struct Row {
    feature: Feature,
    label: &'static str,
    event: &'static str,
    setting: u32,
    without: &'static str,
}

const FEATURES: [Row; 2] = [
    Row {
        feature: Feature::RstSockCookie,
        label: "rst_sock_cookie",
        event: RST_EVENT,
        setting: SETTING_RST_COOKIE_OFFSET,
        without: "refused connects are counted as `other`",
    },
    Row {
        feature: Feature::DestroySockCookie,
        label: "destroy_sock_cookie",
        event: DESTROY_EVENT,
        setting: SETTING_DESTROY_COOKIE_OFFSET,
        without: "connections older than the agent are not seen closing",
    },
];

impl Feature {
    /// The `feature` label of `cellwatch_kernel_feature`.
    pub(crate) fn as_str(self) -> &'static str {
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
        let offset = cookie_offset(row.event);
        match offset {
            // The programs find the field at this offset (0 = absent).
            Some(off) => {
                settings.set(row.setting, off, 0).map_err(map_err(object::SETTINGS))?;
            }
            None => warn!("{TCP}:{} has no sock_cookie field here: {}", row.event, row.without),
        }
        found.push((row.feature, offset.is_some()));
    }
    Ok(found)
}

/// Offset of `sock_cookie` in a tcp tracepoint's record, from tracefs.
fn cookie_offset(event: &str) -> Option<u32> {
    let path = format!("{TRACEFS_PATH}/events/{TCP}/{event}/format");
    let text = std::fs::read_to_string(path).ok()?;
    field_offset(&text, "sock_cookie")
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
        for f in [super::Feature::RstSockCookie, super::Feature::DestroySockCookie] {
            assert_ne!(f.as_str(), "unknown");
        }
    }
}
