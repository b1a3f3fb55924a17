//! Which side of a connection counts, in one place: each connection once, from the
//! client's socket (`direction="egress"`), plus the server's (`direction="ingress"`) when
//! the client is in no cell (`src_cell="external"`), which no cellwatch sees as egress.
//! Series without a direction (failures, connect latency) are the client's already.
//! It is the kernel's rule of which side samples RTT (`agent_common::observes_rtt`), read
//! on labels. `top`'s rows, `report`'s queries and the demo's table and blast radius all
//! count so, as the recording rules do; and all take the client's bytes from a counted
//! side the same way ([`client_bytes`]).

use agent_common::{CELL_EXTERNAL, Direction, observes_rtt};
use agent_core::{names::EXTERNAL, promtext::Sample};

/// The `direction` of a client's socket.
pub const EGRESS: &str = Direction::EGRESS.label();
/// The `direction` of a server's socket.
pub const INGRESS: &str = Direction::INGRESS.label();

/// A cell id that stands for any cell's: the rule asks only whether the client is in one.
const SOME_CELL: u32 = 1;

/// Whether a series with these `direction` and `src_cell` labels is its connections'
/// counted side: [`observes_rtt`] of the kernel values the labels name.
pub fn counts(direction: &str, src_cell: &str) -> bool {
    let direction = match direction {
        // No direction: the client's side already.
        "" | EGRESS => Direction::EGRESS,
        INGRESS => Direction::INGRESS,
        _ => return false,
    };
    observes_rtt(direction, if src_cell == EXTERNAL { CELL_EXTERNAL } else { SOME_CELL })
}

/// [`counts`], of a sample of `/metrics`.
pub fn counts_sample(s: &Sample) -> bool {
    counts(s.label("direction"), s.label("src_cell"))
}

/// The rule as PromQL label matchers, for families with a direction: a series counts
/// when it matches either (the client's side first).
pub fn matchers() -> [String; 2] {
    [format!("direction=\"{EGRESS}\""), format!("direction=\"{INGRESS}\", src_cell=\"{EXTERNAL}\"")]
}

/// One way of a connection's payload bytes: sent or received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    Sent,
    Received,
}

impl Way {
    /// The other way.
    pub fn other(self) -> Self {
        match self {
            Self::Sent => Self::Received,
            Self::Received => Self::Sent,
        }
    }
}

/// Which of a socket's byte counts holds its client's bytes going `way`, on a side with
/// this `direction`: the same way on the client's own socket, the other way on the
/// server's (what the client sent, the server received). Its own inverse: a socket's
/// count going `way` is its client's going `client_bytes(way, direction)`. The report's
/// queries and the demo's table both read a counted side's bytes as the client's so.
pub fn client_bytes(way: Way, direction: &str) -> Way {
    if direction == INGRESS { way.other() } else { way }
}

#[cfg(test)]
mod tests;
