//! The live connections as the sweep reports them (for `/connections`), and how many
//! connections older than the agent are still open.
use agent_common::{Conn, SweepTail};

use super::{error::KernelError, maps::Maps};

/// One live connection, as its pair's counters hold it.
pub(crate) struct LiveConn {
    pub(crate) conn: Conn,
    pub(crate) now: SweepTail,
}

impl From<(Conn, SweepTail)> for LiveConn {
    fn from((conn, now): (Conn, SweepTail)) -> Self {
        Self { conn, now }
    }
}

/// Connections older than the agent that are still open.
pub(super) fn seeded_open(m: &Maps) -> Result<usize, KernelError> {
    Ok(m.seeded.keys().filter(Result::is_ok).count())
}
