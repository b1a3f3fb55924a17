//! What the agent serves: the HTTP endpoints ([`http`]) and what they answer from, the
//! metrics of the contract plus the agent's own ([`metrics`]), the live connections
//! ([`connections`]) and the recent violations drained from the kernel ([`violations`]);
//! [`timed`] cuts off clients that stop reading.

pub(crate) mod connections;
pub(crate) mod http;
pub(crate) mod metrics;
mod timed;
pub(crate) mod violations;
