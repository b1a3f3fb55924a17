//! `/metrics`: the kernel's counters rendered as the metrics of the contract (by
//! `agent-core`), followed by the agent's own (build info, start, kernel features,
//! config reloads, process CPU and memory).
#![forbid(unsafe_code)]

use agent_core::{
    ids::CellIds,
    metrics::{Buckets, Options, Snapshot, encode, families, proto, render_chunked},
};
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::kernel::{Feature, PinnedState};

/// Metrics the agent keeps itself, as opposed to those read from the kernel.
pub(crate) struct AgentMetrics {
    registry: Registry,
    /// The buckets and detail of the text form (the native form takes every bucket).
    opts: Options,
    pub(crate) config_reloads: IntCounterVec,
    /// Work on connections to Service addresses that a bound turned away, by reason.
    pub(crate) service_lookups_dropped: IntCounterVec,
}

/// The reasons of `cellwatch_service_lookups_dropped_total`.
pub(crate) const DROPPED_QUEUE_FULL: &str = "request_queue_full";
pub(crate) const DROPPED_ANNOUNCED_FULL: &str = "announced_table_full";
pub(crate) const DROPPED_IPVS_TOO_LARGE: &str = "ipvs_table_too_large";

impl AgentMetrics {
    pub(crate) fn new(
        version: &str,
        kernel: &str,
        pinned: PinnedState,
        features: &[(Feature, bool)],
        opts: Options,
    ) -> Self {
        let registry = Registry::new();
        let config_reloads = counters(
            Opts::new(families::CONFIG_RELOADS_TOTAL, "Config reloads, by result"),
            "result",
            &["success", "error"],
        );
        let service_lookups_dropped = counters(
            Opts::new(
                families::SERVICE_LOOKUPS_DROPPED_TOTAL,
                "Backend lookups of connections to Service addresses turned away by a bound: \
                 requests past the queue (asked again at the next sweep or scan), announced \
                 conntrack entries past the table, an IPVS table past the size read",
            ),
            "reason",
            &[DROPPED_QUEUE_FULL, DROPPED_ANNOUNCED_FULL, DROPPED_IPVS_TOO_LARGE],
        );
        let (started, discarded) = start_info(pinned);
        registry.register(Box::new(build_info(version, kernel))).expect("unique metric");
        registry.register(Box::new(kernel_features(features))).expect("unique metric");
        registry.register(Box::new(started)).expect("unique metric");
        registry.register(Box::new(discarded)).expect("unique metric");
        registry.register(Box::new(config_reloads.clone())).expect("unique metric");
        registry.register(Box::new(service_lookups_dropped.clone())).expect("unique metric");
        // process_cpu_seconds_total, process_resident_memory_bytes, open fds: the agent's
        // own cost, for the agent-health dashboard.
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("unique metric");
        Self { registry, opts, config_reloads, service_lookups_dropped }
    }

    /// The whole exposition, kernel families followed by the agent's own, written to
    /// `out` in chunks (a gzip encoder, for a scrape that asked for one, keeps only the
    /// compressed text), as text or as protobuf with native histograms.
    pub(crate) fn render(
        &self,
        snap: &Snapshot,
        ids: &CellIds,
        form: Form,
        out: &mut dyn std::io::Write,
    ) -> Result<(), RenderError> {
        match form {
            Form::Text => self.render_text(snap, ids, &self.opts, out),
            Form::Native => {
                // Every kernel bucket, so the native histograms get the kernel's resolution.
                let opts = Options { buckets: Buckets::all(), ..self.opts.clone() };
                let mut w = proto::Writer::new(out);
                self.render_text(snap, ids, &opts, &mut w)?;
                w.finish().map(|_| ()).map_err(RenderError::Write)
            }
        }
    }

    fn render_text(
        &self,
        snap: &Snapshot,
        ids: &CellIds,
        opts: &Options,
        out: &mut dyn std::io::Write,
    ) -> Result<(), RenderError> {
        let mut failed = None;
        render_chunked(snap, ids, opts, &mut |chunk| {
            if failed.is_none() {
                failed = out.write_all(chunk.as_bytes()).err();
            }
        });
        if let Some(e) = failed {
            return Err(RenderError::Write(e));
        }
        let mut own = String::new();
        encode(self.registry.gather(), &mut own)?;
        out.write_all(own.as_bytes()).map_err(RenderError::Write)
    }
}

/// The exposition's form, as the scraper asked (see [`proto::accepted`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Form {
    /// The text format, with the histogram buckets of `--histogram-buckets`.
    Text,
    /// Delimited protobuf, connect latency and RTT as native histograms.
    Native,
}

/// A counter by `label`, each of `values` shown from the start (at 0).
fn counters(opts: Opts, label: &str, values: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(opts, &[label]).expect("static metric definition");
    for v in values {
        c.with_label_values(&[*v]);
    }
    c
}

/// `cellwatch_build_info`.
fn build_info(version: &str, kernel: &str) -> IntGaugeVec {
    let build = IntGaugeVec::new(
        Opts::new(families::BUILD_INFO, "cellwatch version and the kernel it runs on; always 1"),
        &["version", "kernel"],
    )
    .expect("static metric definition");
    build.with_label_values(&[version, kernel]).set(1);
    build
}

/// `cellwatch_start_info`, and `cellwatch_pinned_state_discarded_total`.
fn start_info(pinned: PinnedState) -> (IntGaugeVec, IntCounter) {
    let started = IntGaugeVec::new(
        Opts::new(
            families::START_INFO,
            "What this agent made of the state pinned under --bpffs: fresh, adopted (this \
             build's programs kept running), replaced (another build's programs swapped, \
             maps kept) or discarded (unreadable, removed, then fresh); always 1",
        ),
        &["pinned_state"],
    )
    .expect("static metric definition");
    started.with_label_values(&[pinned.as_str()]).set(1);
    let discarded = IntCounter::new(
        families::PINNED_STATE_DISCARDED_TOTAL,
        "Pinned state of another layout (or a start that never finished) that this agent \
         could not read, and removed: its counts were lost",
    )
    .expect("static metric definition");
    if matches!(pinned, PinnedState::Discarded(_)) {
        discarded.inc();
    }
    (started, discarded)
}

/// `cellwatch_kernel_feature`.
fn kernel_features(features: &[(Feature, bool)]) -> IntGaugeVec {
    let feature = IntGaugeVec::new(
        Opts::new(
            families::KERNEL_FEATURE,
            "Optional kernel features: 1 if this kernel has it, 0 if the agent does \
             without (see the log for what it then cannot tell)",
        ),
        &["feature"],
    )
    .expect("static metric definition");
    for (f, has) in features {
        feature.with_label_values(&[f.as_str()]).set(i64::from(*has));
    }
    feature
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RenderError {
    #[error("encoding the agent's own metrics failed: {0}")]
    Encode(#[from] prometheus::Error),
    #[error("writing the exposition failed: {0}")]
    Write(std::io::Error),
}

#[cfg(test)]
mod tests;
