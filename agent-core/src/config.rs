//! The cell map: parse and validate the YAML config (every problem, located), and the
//! embedded default used when `--config` is absent.
//!
//! Parsing is in two steps. [`raw`] turns YAML into spanned values with serde; then
//! [`validate`] checks meaning (names, CIDRs, references, duplicates) and reports every
//! problem it finds, each as `FILE:LINE:COL: message`.

mod raw;
mod validate;

use std::{fmt, net::IpAddr, path::Path, time::SystemTime};

pub use ipnet::IpNet;

/// The embedded default: no cells, loopback ignored, audit mode. Every peer is then
/// `external` and allowed, so the agent reports connection telemetry from the first
/// second without anything to configure.
pub const DEFAULT_YAML: &str = include_str!("config/default.yaml");

/// Largest config file accepted, so a mistaken path (a log, a disk image) fails fast.
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// A validated config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub cells: Vec<Cell>,
    pub allow: Vec<AllowRule>,
    pub external: External,
    pub ignore_cidrs: Vec<IpNet>,
    pub mode: Mode,
    /// Client cells enforce mode applies to; `None` = every cell.
    pub enforce_cells: Option<Vec<String>>,
    /// Named destinations inside cells, counted per (client cell, service).
    pub services: Vec<Service>,
    /// Kubernetes Service ranges: their addresses are virtual, and a connection to one
    /// is judged by the backend its DNAT chose.
    pub service_cidrs: Vec<IpNet>,
}

/// A named destination (a shared database, a queue): its prefixes, all inside one cell,
/// and its server ports (empty = every port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub cidrs: Vec<IpNet>,
    pub ports: Vec<u16>,
    /// What it serves: TCP connections (the default) or UDP flows.
    pub protocol: Protocol,
    /// The cell its prefixes lie in.
    pub cell: String,
}

/// The transport a service serves (`protocol:`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    pub name: String,
    pub global: bool,
    pub cidrs: Vec<IpNet>,
    /// Set while the cell is drained (`drained:`).
    pub drain: Option<Drain>,
}

/// A drained cell: its traffic is routed elsewhere, and what still opens into it, or is
/// still open, is counted apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drain {
    /// The drain's start as the config records it (`drained: "<RFC 3339>"`); `None` for
    /// `drained: true`.
    pub since: Option<SystemTime>,
    /// `drain: refuse`: enforce mode refuses new connects into the cell from other cells.
    pub refuse: bool,
}

/// An extra allowed flow from client cell `from` to server cell `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowRule {
    pub from: String,
    pub to: String,
    /// Server ports; empty = every port.
    pub ports: Vec<u16>,
    /// A temporary rule's deadline (`until:`): its flows are violations from then on.
    pub until: Option<Deadline>,
    /// Why the rule is there (`reason:`); empty when not given.
    pub reason: String,
}

/// A temporary rule's deadline, with where the file gives it (for warnings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deadline {
    pub at: SystemTime,
    pub line: u64,
    pub column: u64,
}

/// What a connection to or from a peer in no cell is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum External {
    #[default]
    Allow,
    Violation,
    Ignore,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Audit,
    Enforce,
}

/// One problem in a config file, located.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

/// Why a config could not be used. `Display` gives one `FILE:LINE:COL: message` line
/// per problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the config file: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:1:1: the config file is {size} bytes, more than the {max} a cell map can need")]
    TooLarge { path: String, size: u64, max: u64 },
    #[error("{}", render_problems(path, problems))]
    Invalid { path: String, problems: Vec<Problem> },
}

impl ConfigError {
    /// The problems, for callers that count or log them one by one.
    pub fn problems(&self) -> usize {
        match self {
            Self::Invalid { problems, .. } => problems.len(),
            _ => 1,
        }
    }
}

/// One line per problem, whatever the file held: control characters in a message (a
/// value with a newline or CR in it) are escaped, never printed raw.
fn render_problems(path: &str, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{path}:{}:{}: ", p.line, p.column));
        for c in p.message.chars() {
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
    }
    out
}

impl Config {
    /// Parses and validates `text`; `path` only names the source in messages.
    pub fn parse(path: &str, text: &str) -> Result<Self, ConfigError> {
        let invalid = |problems| ConfigError::Invalid { path: path.to_owned(), problems };
        let raw = raw::parse(text).map_err(|p| invalid(vec![p]))?;
        validate::validate(raw).map_err(invalid)
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let bytes = read_file(path)?;
        Self::from_bytes(&path.display().to_string(), &bytes)
    }

    /// Parses and validates a config file's content; `path` only names it in messages.
    pub fn from_bytes(path: &str, bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_owned(),
                size: bytes.len() as u64,
                max: MAX_CONFIG_BYTES,
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            problems: vec![not_text(bytes, &e)],
        })?;
        Self::parse(path, text)
    }

    /// The embedded default config.
    pub fn embedded_default() -> Self {
        match Self::parse("<embedded default>", DEFAULT_YAML) {
            Ok(c) => c,
            // The default is checked by a unit test; reaching this is a build defect.
            Err(e) => unreachable!("embedded default config is invalid: {e}"),
        }
    }

    /// Number of prefixes over all cells.
    pub fn prefix_count(&self) -> usize {
        self.cells.iter().map(|c| c.cidrs.len()).sum()
    }

    /// What is valid but likely a mistake at time `now`: a temporary rule whose deadline
    /// has passed (it allows nothing any more), located.
    pub fn warnings(&self, now: SystemTime) -> Vec<Problem> {
        self.allow
            .iter()
            .filter_map(|r| r.until.as_ref().filter(|d| d.at <= now).map(|d| (r, d)))
            .map(|(r, d)| Problem {
                line: d.line,
                column: d.column,
                message: format!(
                    "the temporary rule {} -> {} expired at {}: its flows are violations; \
                     remove it",
                    r.from,
                    r.to,
                    rfc3339(d.at)
                ),
            })
            .collect()
    }
}

/// Parses an RFC 3339 time (`2026-12-15T00:00:00Z`, an offset or fractional seconds
/// allowed).
pub fn parse_rfc3339(s: &str) -> Result<SystemTime, String> {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::parse(s.trim(), &Rfc3339)
        .map(SystemTime::from)
        .map_err(|e| format!("`{s}` is not an RFC 3339 time such as 2026-12-15T00:00:00Z ({e})"))
}

/// `t` as RFC 3339 in UTC, to the second.
pub fn rfc3339(t: SystemTime) -> String {
    use time::format_description::well_known::Rfc3339;
    let t = time::OffsetDateTime::from(t);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_else(|_| format!("{t}"))
}

/// Whole seconds since the Unix epoch of `t` (0 before it).
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A config file's bytes: a regular file (a link to one, as a ConfigMap mounts it, is
/// followed), read up to one byte past the most a cell map can need, so a FIFO or a
/// device never hangs the read and a huge file is never read whole.
pub fn read_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    use std::io::Read;
    let shown = path.display().to_string();
    let read_err = |source| ConfigError::Read { path: shown.clone(), source };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(read_err(std::io::Error::other("it is not a regular file")));
    }
    let too_large =
        |size| ConfigError::TooLarge { path: shown.clone(), size, max: MAX_CONFIG_BYTES };
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes))
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// v4-mapped IPv6 addresses resolve as IPv4, as in the kernel.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

fn not_text(bytes: &[u8], e: &std::str::Utf8Error) -> Problem {
    let upto = &bytes[..e.valid_up_to()];
    let line = upto.iter().filter(|b| **b == b'\n').count() as u64 + 1;
    let column = upto.iter().rev().take_while(|b| **b != b'\n').count() as u64 + 1;
    Problem { line, column, message: "not a text file: invalid UTF-8 here".to_owned() }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Audit => "audit",
            Self::Enforce => "enforce",
        })
    }
}

impl fmt::Display for External {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "allow",
            Self::Violation => "violation",
            Self::Ignore => "ignore",
        })
    }
}

#[cfg(test)]
mod tests;
