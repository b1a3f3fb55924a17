//! The YAML shape of the config, spanned, before any meaning is checked.
use serde::Deserialize;
use serde_saphyr::{Options, Spanned};

use super::Problem;

pub(super) type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) cells: Vec<RawCell>,
    #[serde(default)]
    pub(super) allow: Vec<RawAllow>,
    #[serde(default)]
    pub(super) external: Option<S<String>>,
    #[serde(default)]
    pub(super) ignore_cidrs: Option<Vec<S<String>>>,
    #[serde(default)]
    pub(super) mode: Option<S<String>>,
    #[serde(default)]
    pub(super) enforce_cells: Option<Vec<S<String>>>,
    #[serde(default)]
    pub(super) services: Vec<RawService>,
    #[serde(default)]
    pub(super) service_cidrs: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) name: S<String>,
    #[serde(default)]
    pub(super) cidrs: Vec<S<String>>,
    #[serde(default)]
    pub(super) ports: Option<Vec<S<i64>>>,
    /// `tcp` (the default) or `udp`.
    #[serde(default)]
    pub(super) protocol: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCell {
    pub(super) name: S<String>,
    #[serde(default)]
    pub(super) global: bool,
    #[serde(default)]
    pub(super) cidrs: Vec<S<String>>,
    /// `true`, or the drain's start as an RFC 3339 time.
    #[serde(default)]
    pub(super) drained: Option<S<RawDrained>>,
    /// `observe` (the default) or `refuse`.
    #[serde(default)]
    pub(super) drain: Option<S<String>>,
}

/// `drained:` as written: a flag, or a time.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawDrained {
    Flag(bool),
    Since(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAllow {
    pub(super) from: S<String>,
    pub(super) to: S<String>,
    #[serde(default)]
    pub(super) ports: Option<Vec<S<i64>>>,
    /// A temporary rule's deadline, an RFC 3339 time.
    #[serde(default)]
    pub(super) until: Option<S<String>>,
    #[serde(default)]
    pub(super) reason: Option<S<String>>,
}

/// Parses YAML into the raw shape. Syntax and shape errors (a typo'd key, a string
/// where a list belongs) stop parsing, so they come one at a time, located.
pub(super) fn parse(text: &str) -> Result<RawConfig, Problem> {
    if text.trim().is_empty() {
        return Err(Problem {
            line: 1,
            column: 1,
            message: "the config is empty: it needs at least a `cells:` list".to_owned(),
        });
    }
    serde_saphyr::from_str_with_options(text, Options::default()).map_err(|e| {
        let (line, column) = e.location().map_or((1, 1), |l| (l.line().max(1), l.column().max(1)));
        Problem { line, column, message: first_line(&e.to_string()) }
    })
}

/// serde-saphyr renders a snippet after the message; the message is its first line,
/// without a location prefix we print ourselves.
fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("invalid YAML").trim();
    let line = line.strip_prefix("error: ").unwrap_or(line);
    let line = strip_location_prefix(line);
    match line.rsplit_once(" at line ") {
        Some((msg, _)) => msg.to_owned(),
        None => line.to_owned(),
    }
}

/// Drops a leading `line N column M: `, which we print as `FILE:N:M:` already.
fn strip_location_prefix(s: &str) -> &str {
    let Some(rest) = s.strip_prefix("line ") else { return s };
    let Some((coords, msg)) = rest.split_once(": ") else { return s };
    let is_coords = coords
        .split_once(" column ")
        .is_some_and(|(l, c)| l.parse::<u64>().is_ok() && c.parse::<u64>().is_ok());
    if is_coords { msg } else { s }
}
