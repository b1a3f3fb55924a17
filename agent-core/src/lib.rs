//! cellwatch's pure core: everything the agent decides or renders that needs neither
//! the kernel nor an async runtime, so it is unit-tested, fuzzed and benchmarked on its
//! own (it builds on stable Rust with no eBPF toolchain).
//!
//! - [`config`]: the YAML cell map, validated, every problem located.
//! - [`btf`]: where a kernel struct member lives, from the kernel's BTF.
//! - [`names`]: the cell-name rule.
//! - [`ids`]: cell name <-> kernel cell id.
//! - [`policy`]: a config compiled into kernel map contents, and the reference verdict.
//! - [`metrics`]: a kernel snapshot rendered as the contract's metric families.
//! - [`promtext`]: the Prometheus text read back into samples.
//! - [`events`]: ring-buffer records decoded, and the kernel's address encodings.
//! - [`query`]: the query strings of the JSON endpoints.
//! - [`top`]: `cellwatch top`'s rows from two scrapes, and the newest violation per pair.
//! - [`report`]: `cellwatch report`'s model from Prometheus' answers (blast radius,
//!   dependencies, containment, outlier cells) and its text, JSON and dot.
#![forbid(unsafe_code)]

pub mod btf;
pub mod config;
pub mod conntrack;
pub mod events;
pub mod ids;
pub mod metrics;
pub mod names;
pub mod policy;
pub mod promtext;
pub mod query;
pub mod report;
pub mod top;
