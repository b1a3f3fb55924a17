//! Summing the per-CPU copies of a pair's statistics into one: what the agent reads.

use crate::PairStats;

impl PairStats {
    /// Adds `o` into `self`: per-CPU copies summed into one (userspace only).
    pub fn merge(&mut self, o: &Self) {
        self.opened += o.opened;
        self.closed += o.closed;
        self.violations += o.violations;
        self.denied += o.denied;
        self.drain_opened += o.drain_opened;
        self.drain_denied += o.drain_denied;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.retransmits += o.retransmits;
        self.latency_sum_ns += o.latency_sum_ns;
        self.rtt_sum_us += o.rtt_sum_us;
        for (a, b) in self.failed.iter_mut().zip(o.failed) {
            *a += b;
        }
        for (a, b) in self.latency_hist.iter_mut().zip(o.latency_hist) {
            *a += b;
        }
        for (a, b) in self.rtt_hist.iter_mut().zip(o.rtt_hist) {
            *a += b;
        }
    }
}
