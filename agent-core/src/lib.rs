//! cellwatch's pure core: the domain (the config, cell names and ids, the policy and its
//! reference verdict), the codecs (BTF, conntrack, ring-buffer records, query strings,
//! the Prometheus text read back) and the exposition format of the contract's metrics.
//! It needs neither the kernel nor an async runtime, so it is unit-tested, fuzzed and
//! benchmarked on its own (it builds on stable Rust with no eBPF toolchain). The clients
//! of the metrics (`top`, `report`, the demo) are `agent-view`'s.
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
