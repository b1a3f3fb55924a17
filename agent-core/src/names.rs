//! The cell-name rule, in one place: a Kubernetes label value, lower case. Config
//! validation, query strings and the terminal view all check names with it.

/// The label of a peer in no cell; no cell may take this name.
pub const EXTERNAL: &str = "external";

/// The server cell of a connection to a Kubernetes Service address whose
/// backend was not found (or not yet); no cell may take this name.
pub const UNRESOLVED: &str = "unresolved";

/// Longest cell name (a Kubernetes label value).
pub const NAME_MAX: usize = agent_common::CELL_NAME_MAX;

/// At most [`NAME_MAX`] lower-case letters, digits and `-`, starting and ending with a
/// letter or digit.
pub fn is_cell_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= NAME_MAX
        && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !n.starts_with('-')
        && !n.ends_with('-')
}

#[cfg(test)]
mod tests;
