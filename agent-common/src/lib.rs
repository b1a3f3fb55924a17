//! Types shared by the cellwatch eBPF programs and the agent: the one `no_std` place
//! where the kernel/user layout of every map key and value is defined.
//!
//! Every type is `#[repr(C)]`, `Copy`, has no implicit padding (padding is spelled out
//! as `_pad` fields that are always zero) and carries a compile-time size assert, so the
//! two sides can never disagree about a layout.
//!
//! - `layout`: the layout version, ids, capacities, and the maps' keys and values.
//! - `settings`: indices into the small array maps, and their values.
//! - `counters`: the pairs' statistics, histogram maths, the bookkeeping counters.
//! - `events`: the ring buffer's events and the iterators' records.
//! - `labels`: direction, verdict and failure, with their labels; the cell id of a peer
//!   in no cell; which side samples the RTT.
//! - `merge`: the per-CPU copies of a pair summed into one.
//! - `udp`: UDP flows, their per-pair statistics, and DNS answers.
//!
//! Everything is re-exported here: `agent_common::X` names every item.
#![no_std]
#![deny(unsafe_code)]

mod counters;
mod events;
mod labels;
mod layout;
mod merge;
mod settings;
mod udp;
#[cfg(feature = "user")]
mod user;

pub use counters::*;
pub use events::*;
pub use labels::*;
pub use layout::*;
pub use settings::*;
pub use udp::*;
