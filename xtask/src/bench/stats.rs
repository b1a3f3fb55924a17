//! Summaries of repeated measurements: median, spread, and readable units.

pub(super) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

pub(super) fn min_max(v: &[f64]) -> (f64, f64) {
    (v.iter().copied().fold(f64::INFINITY, f64::min), v.iter().copied().fold(0.0, f64::max))
}

/// `median [min, max]` of times in seconds, in adaptive units.
pub(super) fn stats(v: &[f64]) -> String {
    let (min, max) = min_max(v);
    format!("{} [{}, {}]", secs(median(v)), secs(min), secs(max))
}

fn secs(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}
