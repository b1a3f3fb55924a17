//! The histogram buckets `/metrics` exports. The kernel keeps log2 buckets (bucket `i`
//! holds values below 2^i µs); an exported bucket is one of those bounds, its count the
//! kernel's buckets summed up to it, so every figure is exact. Fewer buckets than the
//! kernel's 28 keep a scrape small: by default 10 finite ones, from 64 µs to about 1 s.

use agent_common::HIST_BUCKETS;

/// The kernel bounds exported by default, as powers of two of microseconds: 64 µs,
/// 256 µs, 512 µs, 1 ms, 2 ms, 4 ms, 16 ms, 65 ms, 262 ms and 1.05 s. Finest where
/// connections inside a data centre are (a zone's RTT is about 0.1 to 1 ms, across zones
/// 1 to 4 ms), coarser above; ten keep a pair seen from both ends within 40 samples.
const DEFAULT_EXPONENTS: [u32; 10] = [6, 8, 9, 10, 11, 12, 14, 16, 18, 20];

/// Which kernel bounds are exported (finite ones; `+Inf` always is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Buckets {
    /// Exponents `i` of the bounds 2^i µs, ascending, each below `HIST_BUCKETS - 1`.
    exponents: Vec<u32>,
}

impl Default for Buckets {
    fn default() -> Self {
        Self { exponents: DEFAULT_EXPONENTS.to_vec() }
    }
}

/// The largest finite bound the kernel keeps: 2^26 µs (about 67 s).
#[expect(clippy::cast_possible_truncation, reason = "HIST_BUCKETS is 28")]
const MAX_EXPONENT: u32 = (HIST_BUCKETS - 2) as u32;

impl Buckets {
    /// Every kernel bound (27 finite buckets).
    pub fn all() -> Self {
        Self { exponents: (0..=MAX_EXPONENT).collect() }
    }

    /// `all`, or a comma-separated list of durations (`100us,1ms,10ms,1s`), each rounded
    /// up to the kernel bound that holds it (the next power of two of microseconds).
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.trim() == "all" {
            return Ok(Self::all());
        }
        let mut exponents = Vec::new();
        for part in s.split(',').map(str::trim) {
            let us = micros(part)?;
            // The smallest i with us <= 2^i.
            let i = u64::BITS - us.saturating_sub(1).leading_zeros();
            if us == 0 || i > MAX_EXPONENT {
                return Err(format!(
                    "bucket `{part}` is outside 1us to {}s",
                    (1u64 << MAX_EXPONENT) / 1_000_000
                ));
            }
            exponents.push(i);
        }
        exponents.sort_unstable();
        exponents.dedup();
        if exponents.is_empty() {
            return Err("no bucket given".to_owned());
        }
        Ok(Self { exponents })
    }

    /// The finite upper bounds, seconds, ascending.
    pub fn bounds(&self) -> impl Iterator<Item = f64> + '_ {
        self.exponents.iter().map(|i| (1u64 << i) as f64 * 1e-6)
    }

    /// Cumulative counts at each finite bound, then the total (`+Inf`).
    pub fn cumulative<'a>(
        &'a self,
        kernel: &'a [u64; HIST_BUCKETS],
    ) -> impl Iterator<Item = u64> + 'a {
        let mut sum = 0u64;
        let mut next = 0usize;
        self.exponents.iter().map(move |i| {
            let upto = usize::try_from(*i).unwrap_or(HIST_BUCKETS);
            while next <= upto && next < HIST_BUCKETS {
                sum += kernel[next];
                next += 1;
            }
            sum
        })
    }

    /// How many finite bounds are exported.
    pub fn len(&self) -> usize {
        self.exponents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.exponents.is_empty()
    }
}

/// A duration in whole microseconds: `250us`, `1ms`, `1.5ms`, `2s`.
fn micros(s: &str) -> Result<u64, String> {
    let bad = || format!("`{s}` is not a duration such as 100us, 5ms or 1s");
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let scale = match unit {
        "us" | "µs" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        _ => return Err(bad()),
    };
    let us = (n * scale).ceil();
    if !us.is_finite() || !(0.0..=1e12).contains(&us) {
        return Err(bad());
    }
    // Bounded above: the cast is exact.
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "0 <= us <= 1e12")]
    Ok(us as u64)
}

#[cfg(test)]
mod tests;
