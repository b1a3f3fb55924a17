//! cellwatch's clients of its own metrics, with no terminal and no network: what `top`,
//! `report`, `drain-status` and the demo make of `/metrics`, `/violations` and
//! Prometheus' answers, and how they print it. The agent's commands add the network and
//! the terminal.
#![forbid(unsafe_code)]

pub mod drain;
pub mod format;
pub mod report;
pub mod scrape;
pub mod side;
pub mod top;
pub mod violations;
