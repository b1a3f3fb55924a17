//! The text exposition format's primitives, shared by every family group: a family's
//! declaration and its `# HELP`/`# TYPE` header, sample lines written piece by piece,
//! label values quoted, verdicts as by-verdict slots and labels, histograms (buckets,
//! sum, count) and the buffer handed on in chunks. No family is declared here.
use std::fmt::Write as _;

use agent_common::{HIST_BUCKETS, PairStats, Verdict};

use super::buckets::Buckets;

/// A family's type, as `# TYPE` says it.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// One family's declaration: its name (one of [`super::families`]), type and help.
pub(super) struct Def {
    pub(super) name: &'static str,
    pub(super) kind: Kind,
    pub(super) help: &'static str,
}

/// A family of one series per row, and a row's value in it.
pub(super) type Valued<R> = (&'static Def, fn(&R) -> u64);

/// Which histogram of a pair's statistics, with its sum in seconds.
pub(super) type HistOf = fn(&PairStats) -> (&[u64; HIST_BUCKETS], f64);

pub(super) fn latency_of(s: &PairStats) -> (&[u64; HIST_BUCKETS], f64) {
    (&s.latency_hist, s.latency_sum_ns as f64 * 1e-9)
}

pub(super) fn rtt_of(s: &PairStats) -> (&[u64; HIST_BUCKETS], f64) {
    (&s.rtt_hist, s.rtt_sum_us as f64 * 1e-6)
}

/// One histogram's kernel buckets and sum, added up over keys.
pub(super) struct Hist {
    buckets: [u64; HIST_BUCKETS],
    sum_seconds: f64,
}

impl Default for Hist {
    fn default() -> Self {
        Self { buckets: [0; HIST_BUCKETS], sum_seconds: 0.0 }
    }
}

impl Hist {
    pub(super) fn add(&mut self, buckets: &[u64; HIST_BUCKETS], sum_seconds: f64) {
        for (a, b) in self.buckets.iter_mut().zip(buckets) {
            *a += b;
        }
        self.sum_seconds += sum_seconds;
    }

    pub(super) fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// One sample line: `name{labels[,extra]} value`, written piece by piece (a scrape of
/// 10,000 pairs is 400,000 of them).
pub(super) fn sample(out: &mut String, name: &str, labels: &str, extra: &str, value: u64) {
    out.push_str(name);
    out.push('{');
    out.push_str(labels);
    if !extra.is_empty() {
        out.push(',');
        out.push_str(extra);
    }
    out.push_str("} ");
    out.push_str(itoa::Buffer::new().format(value));
    out.push('\n');
}

/// The verdicts, in the order their series are written.
pub(super) const VERDICTS: [Verdict; 2] = [Verdict::ALLOWED, Verdict::VIOLATION];

/// A verdict's slot in a by-verdict `[_; 2]`, in [`VERDICTS`]' order (any verdict but a
/// violation counts as allowed, as its label says).
pub(super) fn slot(v: Verdict) -> usize {
    usize::from(v == Verdict::VIOLATION)
}

/// The `verdict="…"` label of each of [`VERDICTS`], by slot.
pub(super) fn verdict_labels() -> [String; 2] {
    VERDICTS.map(|v| format!("verdict=\"{}\"", v.label()))
}

/// Label values as they appear in the text, quoted and escaped.
pub(super) fn quoted(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// About how much text `render_chunked` hands on at a time.
pub(super) const CHUNK: usize = 64 * 1024;

/// Where the text goes: a buffer, handed to `drain` (when there is one) whenever it
/// holds `CHUNK` bytes or more at the start of a line, so every chunk ends a line.
pub(super) struct Out<'d> {
    pub(super) buf: String,
    pub(super) drain: Option<&'d mut dyn FnMut(&str)>,
}

impl Out<'_> {
    /// The buffer, about to take one more line.
    fn line(&mut self) -> &mut String {
        if self.buf.len() >= CHUNK
            && let Some(drain) = self.drain.as_mut()
        {
            drain(&self.buf);
            self.buf.clear();
        }
        &mut self.buf
    }
}

/// One family being written: its `# HELP` and `# TYPE` lines go out before its first
/// sample, and not at all when it has none (no traffic yet).
pub(super) struct Family<'o, 'd> {
    out: &'o mut Out<'d>,
    def: &'static Def,
    started: bool,
}

impl<'o, 'd> Family<'o, 'd> {
    pub(super) fn new(out: &'o mut Out<'d>, def: &'static Def) -> Self {
        Self { out, def, started: false }
    }

    /// The buffer to write one sample line into, after the header if it is the first.
    pub(super) fn line(&mut self) -> &mut String {
        let out = self.out.line();
        if !self.started {
            self.started = true;
            let Def { name, kind, help } = self.def;
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {}", kind.as_str());
        }
        out
    }

    /// One sample line of the family: `name{labels[,extra]} value`.
    pub(super) fn sample(&mut self, labels: &str, extra: &str, value: u64) {
        let name = self.def.name;
        sample(self.line(), name, labels, extra, value);
    }
}

/// The three names of a histogram's lines.
pub(super) struct HistNames {
    bucket: String,
    sum: String,
    count: String,
}

impl HistNames {
    pub(super) fn of(name: &str) -> Self {
        Self {
            bucket: format!("{name}_bucket"),
            sum: format!("{name}_sum"),
            count: format!("{name}_count"),
        }
    }
}

/// The exported buckets and their `le` labels, formatted once.
pub(super) struct Bounds<'b> {
    buckets: &'b Buckets,
    le: Vec<String>,
}

impl<'b> Bounds<'b> {
    pub(super) fn of(buckets: &'b Buckets) -> Self {
        Self { buckets, le: buckets.bounds().map(|b| format!("le=\"{b}\"")).collect() }
    }
}

/// One histogram's lines: every exported bucket, `+Inf`, the sum and the count.
pub(super) fn histogram(
    out: &mut String,
    names: &HistNames,
    labels: &str,
    h: &Hist,
    bounds: &Bounds<'_>,
) {
    for (le, n) in bounds.le.iter().zip(bounds.buckets.cumulative(&h.buckets)) {
        sample(out, &names.bucket, labels, le, n);
    }
    let count = h.count();
    sample(out, &names.bucket, labels, "le=\"+Inf\"", count);
    let _ = writeln!(out, "{}{{{labels}}} {}", names.sum, h.sum_seconds);
    sample(out, &names.count, labels, "", count);
}
