//! The scrape model: one `/metrics` (read back into samples by `agent_core::promtext`)
//! as per-pair totals on the counted side of each connection ([`crate::side`]), and
//! histograms as cumulative buckets with Prometheus' `histogram_quantile`. A series that
//! is missing counts as zero, so families that appear late (a pair's first failure) or
//! histograms that are not exported while empty need no special case.
//!
//! Quantiles are interpolated linearly within a bucket, as Prometheus'
//! `histogram_quantile` does; a quantile in the `+Inf` bucket is the largest finite bound.

use std::collections::BTreeMap;

use agent_core::{metrics::families as f, promtext::Sample};

use crate::side;

/// A cell pair: (client cell, server cell).
pub type Pair = (String, String);

/// A histogram's cumulative bucket counts by upper bound (seconds), ascending, `+Inf`
/// last when the agent exported it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hist(pub Vec<(f64, f64)>);

impl Hist {
    /// Adds `count` to the bucket `le` (a series of the same pair from the other side).
    fn add(&mut self, le: f64, count: f64) {
        match self.0.binary_search_by(|(b, _)| b.total_cmp(&le)) {
            Ok(i) => self.0[i].1 += count,
            Err(i) => self.0.insert(i, (le, count)),
        }
    }

    /// Observations in all (the `+Inf` bucket, or the largest one there is).
    pub fn count(&self) -> f64 {
        self.0.last().map_or(0.0, |(_, n)| *n)
    }

    /// What was observed since `old`. A reset (a bucket that went down, or another set
    /// of buckets: the agent restarted, perhaps with other buckets) means everything in
    /// `self` is new.
    pub fn since(&self, old: &Hist) -> Hist {
        let same_bounds = self.0.len() == old.0.len()
            && self.0.iter().zip(&old.0).all(|((a, _), (b, _))| a.total_cmp(b).is_eq());
        if !same_bounds || self.0.iter().zip(&old.0).any(|((_, n), (_, o))| n < o) {
            return self.clone();
        }
        Hist(self.0.iter().zip(&old.0).map(|((le, n), (_, o))| (*le, n - o)).collect())
    }

    /// The `q` quantile (0..=1) in seconds, as Prometheus' `histogram_quantile`: linear
    /// within the bucket the rank falls in, from 0 for the first bucket; the largest
    /// finite bound when it falls in `+Inf`. `None` with no observation or no `+Inf`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let b = &self.0;
        let total = self.count();
        if b.len() < 2 || total <= 0.0 || b.last().is_none_or(|(le, _)| *le != f64::INFINITY) {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let i = b.iter().position(|(_, n)| *n >= rank)?;
        if i == b.len() - 1 {
            return Some(b[i - 1].0);
        }
        let (end, count) = b[i];
        if i == 0 {
            return Some(if end <= 0.0 || count <= 0.0 { end } else { end * rank / count });
        }
        let (start, below) = b[i - 1];
        let inside = count - below;
        if inside <= 0.0 {
            return Some(end);
        }
        Some(start + (end - start) * (rank - below) / inside)
    }
}

/// A pair's counters, gauge and histograms in one scrape, client side.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    pub opened: f64,
    pub violations: f64,
    /// Payload bytes both ways.
    pub bytes: f64,
    pub active: f64,
    pub connect: Hist,
    pub rtt: Hist,
}

/// One scrape's figures by pair.
pub type Scrape = BTreeMap<Pair, Totals>;

/// Reads the pairs out of a parsed `/metrics`.
pub fn read(samples: &[Sample]) -> Scrape {
    let mut pairs = Scrape::new();
    for s in samples.iter().filter(|s| side::counts_sample(s)) {
        let key = (s.label("src_cell").to_owned(), s.label("dst_cell").to_owned());
        if key.0.is_empty() || key.1.is_empty() {
            continue;
        }
        let le = || match s.label("le") {
            "+Inf" => Some(f64::INFINITY),
            v => v.parse::<f64>().ok(),
        };
        match s.name.as_str() {
            f::CONNECTIONS_OPENED_TOTAL => pairs.entry(key).or_default().opened += s.value,
            f::BOUNDARY_VIOLATIONS_TOTAL => {
                pairs.entry(key).or_default().violations += s.value;
            }
            f::BYTES_SENT_TOTAL | f::BYTES_RECEIVED_TOTAL => {
                pairs.entry(key).or_default().bytes += s.value;
            }
            f::CONNECTIONS_ACTIVE => pairs.entry(key).or_default().active += s.value,
            f::CONNECT_LATENCY_SECONDS_BUCKET => {
                if let Some(le) = le() {
                    pairs.entry(key).or_default().connect.add(le, s.value);
                }
            }
            f::RTT_SECONDS_BUCKET => {
                if let Some(le) = le() {
                    pairs.entry(key).or_default().rtt.add(le, s.value);
                }
            }
            _ => {}
        }
    }
    pairs
}

/// How much a counter grew from `old` to `new`; a counter that went down was reset
/// (the agent restarted), so all of `new` is growth.
pub fn increase(old: f64, new: f64) -> f64 {
    if new < old { new } else { new - old }
}

#[cfg(test)]
pub(crate) mod tests;
