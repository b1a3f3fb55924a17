//! The name of every metric family cellwatch exports, in one place: the writers here, the
//! agent's own metrics, `top`, `report`, the demo and the checks of the shipped dashboards
//! and rules all name families by these constants.

/// Connections that reached ESTABLISHED, per (pair, direction, verdict).
pub const CONNECTIONS_OPENED_TOTAL: &str = "cellwatch_connections_opened_total";
pub const CONNECTIONS_CLOSED_TOTAL: &str = "cellwatch_connections_closed_total";
pub const CONNECTIONS_ACTIVE: &str = "cellwatch_connections_active";
pub const CONNECTIONS_FAILED_TOTAL: &str = "cellwatch_connections_failed_total";
pub const BOUNDARY_VIOLATIONS_TOTAL: &str = "cellwatch_boundary_violations_total";
pub const CONNECTIONS_DENIED_TOTAL: &str = "cellwatch_connections_denied_total";
pub const BYTES_SENT_TOTAL: &str = "cellwatch_bytes_sent_total";
pub const BYTES_RECEIVED_TOTAL: &str = "cellwatch_bytes_received_total";
pub const RETRANSMITS_TOTAL: &str = "cellwatch_retransmits_total";
/// A histogram: its series are `_bucket`, `_sum` and `_count`.
pub const CONNECT_LATENCY_SECONDS: &str = "cellwatch_connect_latency_seconds";
pub const CONNECT_LATENCY_SECONDS_BUCKET: &str = "cellwatch_connect_latency_seconds_bucket";
/// A histogram.
pub const RTT_SECONDS: &str = "cellwatch_rtt_seconds";
pub const RTT_SECONDS_BUCKET: &str = "cellwatch_rtt_seconds_bucket";

/// The catalog: each configured cell, and each configured service.
pub const CELL_INFO: &str = "cellwatch_cell_info";
pub const SERVICE_INFO: &str = "cellwatch_service_info";
/// Per (client cell, service).
pub const SERVICE_CONNECTIONS_OPENED_TOTAL: &str = "cellwatch_service_connections_opened_total";
pub const SERVICE_CONNECTIONS_ACTIVE: &str = "cellwatch_service_connections_active";
pub const SERVICE_CONNECTIONS_FAILED_TOTAL: &str = "cellwatch_service_connections_failed_total";
pub const SERVICE_BYTES_SENT_TOTAL: &str = "cellwatch_service_bytes_sent_total";
pub const SERVICE_BYTES_RECEIVED_TOTAL: &str = "cellwatch_service_bytes_received_total";
/// A histogram.
pub const SERVICE_CONNECT_LATENCY_SECONDS: &str = "cellwatch_service_connect_latency_seconds";
pub const SERVICE_CONNECT_LATENCY_SECONDS_BUCKET: &str =
    "cellwatch_service_connect_latency_seconds_bucket";

/// Drained cells, and temporary allow rules.
pub const DRAIN_START_TIMESTAMP_SECONDS: &str = "cellwatch_drain_start_timestamp_seconds";
pub const DRAIN_CONNECTIONS_OPENED_TOTAL: &str = "cellwatch_drain_connections_opened_total";
pub const DRAIN_CONNECTIONS_REFUSED_TOTAL: &str = "cellwatch_drain_connections_refused_total";
pub const DRAIN_CONNECTIONS_ACTIVE: &str = "cellwatch_drain_connections_active";
pub const DRAIN_HOLDOUTS: &str = "cellwatch_drain_holdouts";
pub const ALLOW_RULE_EXPIRY_TIMESTAMP_SECONDS: &str =
    "cellwatch_allow_rule_expiry_timestamp_seconds";

/// UDP flows (a 5-tuple, until idle for `--udp-idle`) per (pair, direction[, verdict]),
/// with the TCP families' label names.
pub const UDP_FLOWS_OPENED_TOTAL: &str = "cellwatch_udp_flows_opened_total";
pub const UDP_DATAGRAMS_SENT_TOTAL: &str = "cellwatch_udp_datagrams_sent_total";
pub const UDP_DATAGRAMS_RECEIVED_TOTAL: &str = "cellwatch_udp_datagrams_received_total";
pub const UDP_BYTES_SENT_TOTAL: &str = "cellwatch_udp_bytes_sent_total";
pub const UDP_BYTES_RECEIVED_TOTAL: &str = "cellwatch_udp_bytes_received_total";
pub const UDP_DENIED_TOTAL: &str = "cellwatch_udp_denied_total";
/// Per (client cell, service), for services with `protocol: udp`.
pub const UDP_SERVICE_FLOWS_OPENED_TOTAL: &str = "cellwatch_udp_service_flows_opened_total";
/// DNS per (client cell, service on port 53): answers by response code, and latency.
pub const DNS_QUERIES_TOTAL: &str = "cellwatch_dns_queries_total";
/// A histogram.
pub const DNS_LATENCY_SECONDS: &str = "cellwatch_dns_latency_seconds";
pub const DNS_LATENCY_SECONDS_BUCKET: &str = "cellwatch_dns_latency_seconds_bucket";

/// The kernel side's bookkeeping.
pub const EVENTS_LOST_TOTAL: &str = "cellwatch_events_lost_total";
pub const VIOLATION_LOG_SUPPRESSED_TOTAL: &str = "cellwatch_violation_log_suppressed_total";
pub const EVENTS_TOTAL: &str = "cellwatch_events_total";
pub const ENFORCE_UNRESOLVED_TOTAL: &str = "cellwatch_enforce_unresolved_total";
pub const LIVE_SWEEP_CONNECTIONS_TOTAL: &str = "cellwatch_live_sweep_connections_total";
pub const KERNEL_OP_RUNS_TOTAL: &str = "cellwatch_kernel_op_runs_total";
pub const KERNEL_OP_SECONDS_TOTAL: &str = "cellwatch_kernel_op_seconds_total";
pub const MAP_ENTRIES: &str = "cellwatch_map_entries";
pub const MAP_CAPACITY: &str = "cellwatch_map_capacity";

/// The agent's own metrics (kept by the agent, not read from the kernel).
pub const BUILD_INFO: &str = "cellwatch_build_info";
pub const CONFIG_RELOADS_TOTAL: &str = "cellwatch_config_reloads_total";
pub const SERVICE_LOOKUPS_DROPPED_TOTAL: &str = "cellwatch_service_lookups_dropped_total";
pub const START_INFO: &str = "cellwatch_start_info";
pub const PINNED_STATE_DISCARDED_TOTAL: &str = "cellwatch_pinned_state_discarded_total";
pub const KERNEL_FEATURE: &str = "cellwatch_kernel_feature";

/// Every family: the kernel-derived ones in the order `/metrics` writes them, then the
/// agent's own (which the registry writes sorted by name).
pub const ALL: [&str; 49] = [
    CONNECTIONS_OPENED_TOTAL,
    CONNECTIONS_CLOSED_TOTAL,
    CONNECTIONS_ACTIVE,
    CONNECTIONS_FAILED_TOTAL,
    BOUNDARY_VIOLATIONS_TOTAL,
    CONNECTIONS_DENIED_TOTAL,
    BYTES_SENT_TOTAL,
    BYTES_RECEIVED_TOTAL,
    RETRANSMITS_TOTAL,
    CONNECT_LATENCY_SECONDS,
    RTT_SECONDS,
    CELL_INFO,
    SERVICE_INFO,
    SERVICE_CONNECTIONS_OPENED_TOTAL,
    SERVICE_CONNECTIONS_ACTIVE,
    SERVICE_CONNECTIONS_FAILED_TOTAL,
    SERVICE_BYTES_SENT_TOTAL,
    SERVICE_BYTES_RECEIVED_TOTAL,
    SERVICE_CONNECT_LATENCY_SECONDS,
    DRAIN_START_TIMESTAMP_SECONDS,
    DRAIN_CONNECTIONS_OPENED_TOTAL,
    DRAIN_CONNECTIONS_REFUSED_TOTAL,
    DRAIN_CONNECTIONS_ACTIVE,
    DRAIN_HOLDOUTS,
    ALLOW_RULE_EXPIRY_TIMESTAMP_SECONDS,
    UDP_FLOWS_OPENED_TOTAL,
    UDP_DATAGRAMS_SENT_TOTAL,
    UDP_DATAGRAMS_RECEIVED_TOTAL,
    UDP_BYTES_SENT_TOTAL,
    UDP_BYTES_RECEIVED_TOTAL,
    UDP_DENIED_TOTAL,
    UDP_SERVICE_FLOWS_OPENED_TOTAL,
    DNS_QUERIES_TOTAL,
    DNS_LATENCY_SECONDS,
    EVENTS_LOST_TOTAL,
    VIOLATION_LOG_SUPPRESSED_TOTAL,
    EVENTS_TOTAL,
    ENFORCE_UNRESOLVED_TOTAL,
    LIVE_SWEEP_CONNECTIONS_TOTAL,
    KERNEL_OP_RUNS_TOTAL,
    KERNEL_OP_SECONDS_TOTAL,
    MAP_ENTRIES,
    MAP_CAPACITY,
    BUILD_INFO,
    CONFIG_RELOADS_TOTAL,
    SERVICE_LOOKUPS_DROPPED_TOTAL,
    START_INFO,
    PINNED_STATE_DISCARDED_TOTAL,
    KERNEL_FEATURE,
];

/// The histogram families, whose series carry `_bucket`, `_sum` and `_count`.
pub const HISTOGRAMS: [&str; 4] =
    [CONNECT_LATENCY_SECONDS, RTT_SECONDS, SERVICE_CONNECT_LATENCY_SECONDS, DNS_LATENCY_SECONDS];

/// Whether `series` is a declared family's: its name, or a histogram's `_bucket`, `_sum`
/// or `_count`.
pub fn declares(series: &str) -> bool {
    ALL.contains(&series)
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|s| series.strip_suffix(s).is_some_and(|h| HISTOGRAMS.contains(&h)))
}

/// Every `cellwatch_*` name in `text` (a dashboard, a rule file, a query) that is no
/// declared family's series, each once, in order of appearance.
pub fn undeclared(text: &str) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("cellwatch_") {
        let before = text.len() - rest.len() + at;
        let tail = &text[before..];
        let len = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..len];
        // Part of a longer word (`my_cellwatch_x`) is not a name of ours.
        let inside = text[..before]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !inside && !declares(name) && !out.contains(&name) {
            out.push(name);
        }
        rest = &tail[len..];
    }
    out
}

#[cfg(test)]
mod tests;
