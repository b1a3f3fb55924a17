//! How much of the per-pair detail `/metrics` exports (`--metrics-detail`): the series
//! budget of a node. Every level keeps the counters exact; what a level leaves out is
//! left out whole, never sampled.

/// A level of `--metrics-detail`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Detail {
    /// Every family: counters and histograms for every pair.
    #[default]
    Full,
    /// Every pair's counters; connect latency and RTT histograms only for pairs with
    /// violations (and for services).
    Pairs,
    /// Counters per cell (`src_cell`, summed over destination cells), no histograms;
    /// services keep their counters.
    Cells,
}

impl Detail {
    /// Every level, in order of detail.
    pub const ALL: [Self; 3] = [Self::Full, Self::Pairs, Self::Cells];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Pairs => "pairs",
            Self::Cells => "cells",
        }
    }

    /// `full`, `pairs` or `cells`.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str() == s.trim())
            .ok_or_else(|| format!("`{s}` is not a detail level: use full, pairs or cells"))
    }

    /// Whether a pair's histograms are exported: `violating` says whether it has
    /// violations.
    pub(super) fn pair_histograms(self, violating: bool) -> bool {
        match self {
            Self::Full => true,
            Self::Pairs => violating,
            Self::Cells => false,
        }
    }

    /// Whether the pair families keep the destination cell.
    pub(super) fn per_pair(self) -> bool {
        self != Self::Cells
    }

    /// Whether the service families keep their connect latency histogram.
    pub(super) fn service_histograms(self) -> bool {
        self != Self::Cells
    }
}

impl std::fmt::Display for Detail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests;
