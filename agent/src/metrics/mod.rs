//! The Prometheus view: kernel snapshots rendered as the metrics of the contract, plus
//! the agent's own metrics (build info, config reloads, process CPU and memory).
#![forbid(unsafe_code)]

mod families;

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

pub use families::{bucket_bounds, families};

use crate::kernel::{Feature, Snapshot, Start};
use crate::policy::CellIds;

/// Metrics the agent keeps itself, as opposed to those read from the kernel.
pub struct AgentMetrics {
    registry: Registry,
    pub config_reloads: IntCounterVec,
}

impl AgentMetrics {
    pub fn new(version: &str, kernel: &str, start: Start, features: &[(Feature, bool)]) -> Self {
        let registry = Registry::new();
        let build = IntGaugeVec::new(
            Opts::new(
                "cellwatch_build_info",
                "cellwatch version and the kernel it runs on; always 1",
            ),
            &["version", "kernel"],
        )
        .expect("static metric definition");
        build.with_label_values(&[version, kernel]).set(1);
        let config_reloads = IntCounterVec::new(
            Opts::new("cellwatch_config_reloads_total", "Config reloads, by result"),
            &["result"],
        )
        .expect("static metric definition");
        for r in ["success", "error"] {
            config_reloads.with_label_values(&[r]);
        }
        let started = IntGaugeVec::new(
            Opts::new(
                "cellwatch_start_info",
                "What this agent made of the state pinned under --bpffs: fresh, adopted (this \
                 build's programs kept running), replaced (another build's programs swapped, \
                 maps kept) or discarded (unreadable, removed, then fresh); always 1",
            ),
            &["pinned_state"],
        )
        .expect("static metric definition");
        started.with_label_values(&[start.as_str()]).set(1);
        let discarded = IntCounter::new(
            "cellwatch_pinned_state_discarded_total",
            "Pinned state of another layout (or a start that never finished) that this agent \
             could not read, and removed: its counts were lost",
        )
        .expect("static metric definition");
        if matches!(start, Start::Discard(_)) {
            discarded.inc();
        }
        let feature = IntGaugeVec::new(
            Opts::new(
                "cellwatch_kernel_feature",
                "Optional kernel features: 1 if this kernel has it, 0 if the agent does \
                 without (see the log for what it then cannot tell)",
            ),
            &["feature"],
        )
        .expect("static metric definition");
        for (f, has) in features {
            feature.with_label_values(&[f.as_str()]).set(i64::from(*has));
        }
        registry.register(Box::new(build)).expect("unique metric");
        registry.register(Box::new(feature)).expect("unique metric");
        registry.register(Box::new(started)).expect("unique metric");
        registry.register(Box::new(discarded)).expect("unique metric");
        registry.register(Box::new(config_reloads.clone())).expect("unique metric");
        // process_cpu_seconds_total, process_resident_memory_bytes, open fds: the agent's
        // own cost, for the agent-health dashboard.
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("unique metric");
        Self { registry, config_reloads }
    }

    /// The whole exposition: kernel families followed by the agent's own. A family with
    /// no samples yet (no traffic) is left out, as the text format requires.
    pub fn render(&self, snap: &Snapshot, ids: &CellIds) -> Result<String, prometheus::Error> {
        let mut fams = families(snap, ids);
        fams.extend(self.registry.gather());
        fams.retain(|f| !f.get_metric().is_empty());
        let mut buf = Vec::with_capacity(64 * 1024);
        TextEncoder::new().encode(&fams, &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}
