//! Which side of a connection counts, in one place: each connection once, from the
//! client's socket (`direction="egress"`), plus the server's (`direction="ingress"`) when
//! the client is in no cell (`src_cell="external"`), which no cellwatch sees as egress.
//! Series without a direction (failures, connect latency) are the client's already.
//! `top`'s rows, `report`'s queries and the demo's table and blast radius all count so,
//! as the recording rules do.

use agent_core::{names::EXTERNAL, promtext::Sample};

/// The `direction` of a client's socket.
pub const EGRESS: &str = "egress";
/// The `direction` of a server's socket.
pub const INGRESS: &str = "ingress";

/// Whether a series with these `direction` and `src_cell` labels is its connections'
/// counted side.
pub fn counts(direction: &str, src_cell: &str) -> bool {
    match direction {
        "" | EGRESS => true,
        INGRESS => src_cell == EXTERNAL,
        _ => false,
    }
}

/// [`counts`], of a sample of `/metrics`.
pub fn counts_sample(s: &Sample) -> bool {
    counts(s.label("direction"), s.label("src_cell"))
}

/// The rule as PromQL label matchers, for families with a direction: a series counts
/// when it matches either.
pub fn matchers() -> [String; 2] {
    [format!("direction=\"{EGRESS}\""), format!("direction=\"{INGRESS}\", src_cell=\"{EXTERNAL}\"")]
}

#[cfg(test)]
mod tests;
