//! The protobuf exposition (`application/vnd.google.protobuf;
//! proto=io.prometheus.client.MetricFamily; encoding=delimited`), with every histogram as
//! a native histogram: the text exposition, rendered with every kernel bucket, read back
//! line by line and written as length-delimited `MetricFamily` messages. One family is
//! held at a time, so a scrape holds no more than the largest family's messages.
//!
//! A native histogram of schema 0 has buckets `(2^(k-1), 2^k]` seconds. The kernel's
//! buckets are powers of two of *micro*seconds, which do not fall on those bounds, so
//! each classic bucket `(lo, hi]` goes whole into the native bucket that holds its
//! geometric middle `sqrt(lo * hi)`: for the kernel's `[2^(i-1), 2^i)` µs that is
//! `(2^(i-21), 2^(i-20)]` s, which covers 93% of it (by its logarithm), so a quantile
//! read from either form lands in the same or the neighbouring bucket, and every count
//! and sum is exact.

use std::collections::BTreeMap;

/// The content type of the protobuf exposition this module writes.
pub const CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// The lowest bound a scraper must see to take a histogram for a native one: no value
/// lies at or below it (the kernel's smallest bucket is below 1 µs, placed above it).
const ZERO_THRESHOLD: f64 = 1e-12;

/// Whether an `Accept` header asks for the delimited `MetricFamily` protobuf (with a
/// q above 0), as Prometheus does with `--enable-feature=native-histograms`.
pub fn accepted(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        if !parts.next().is_some_and(|t| t.eq_ignore_ascii_case("application/vnd.google.protobuf"))
        {
            return false;
        }
        let (mut proto, mut delimited, mut refused) = (false, false, false);
        for p in parts {
            let p = p.replace(' ', "");
            proto |= p == "proto=io.prometheus.client.MetricFamily";
            delimited |= p == "encoding=delimited";
            refused |= p.strip_prefix("q=").and_then(|q| q.parse::<f64>().ok()) == Some(0.0);
        }
        proto && delimited && !refused
    })
}

/// A writer that takes the text exposition and writes the protobuf one to `inner`, a
/// family at a time. [`Writer::finish`] writes the last family and returns `inner`.
pub struct Writer<W: std::io::Write> {
    transcoder: Transcoder,
    /// Bytes of a character split across writes.
    pending: Vec<u8>,
    out: Vec<u8>,
    inner: W,
}

impl<W: std::io::Write> Writer<W> {
    pub fn new(inner: W) -> Self {
        Self { transcoder: Transcoder::default(), pending: Vec::new(), out: Vec::new(), inner }
    }

    /// The last family written, and `inner` back.
    pub fn finish(mut self) -> std::io::Result<W> {
        if !self.pending.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the exposition ended inside a character",
            ));
        }
        self.transcoder.finish(&mut self.out);
        self.inner.write_all(&self.out)?;
        Ok(self.inner)
    }
}

impl<W: std::io::Write> std::io::Write for Writer<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        };
        let text = std::str::from_utf8(&self.pending[..valid]).unwrap_or_default();
        self.transcoder.feed(text, &mut self.out);
        self.pending.drain(..valid);
        if !self.out.is_empty() {
            self.inner.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `MetricType` of metrics.proto.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Type {
    Counter = 0,
    Gauge = 1,
    Untyped = 3,
    Histogram = 4,
}

impl Type {
    fn of(s: &str) -> Self {
        match s {
            "counter" => Self::Counter,
            "gauge" => Self::Gauge,
            "histogram" => Self::Histogram,
            _ => Self::Untyped,
        }
    }
}

/// One histogram series being read: its classic buckets (upper bound, cumulative
/// count), sum and count.
#[derive(Default)]
struct Classic {
    labels: String,
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

/// The family being read.
struct Current {
    name: String,
    help: String,
    kind: Type,
    /// Its `Metric` messages so far, each already encoded as field 4 of the family.
    metrics: Vec<u8>,
    hist: Option<Classic>,
}

/// Reads text exposition lines (whole lines, in order, in any number of pieces) and
/// writes the protobuf exposition to the sink handed to [`Transcoder::feed`].
#[derive(Default)]
pub struct Transcoder {
    current: Option<Current>,
    /// The end of a line split across pieces.
    partial: String,
}

impl Transcoder {
    /// Takes the next piece of text; complete families go to `out`.
    pub fn feed(&mut self, text: &str, out: &mut Vec<u8>) {
        let mut rest = text;
        if !self.partial.is_empty() {
            let Some(end) = rest.find('\n') else {
                self.partial.push_str(rest);
                return;
            };
            let line = std::mem::take(&mut self.partial) + &rest[..end];
            self.line(&line, out);
            rest = &rest[end + 1..];
        }
        while let Some(end) = rest.find('\n') {
            self.line(&rest[..end], out);
            rest = &rest[end + 1..];
        }
        self.partial.push_str(rest);
    }

    /// Ends the text: the last family goes to `out`.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, out);
        }
        self.flush(out);
    }

    fn line(&mut self, line: &str, out: &mut Vec<u8>) {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            self.start(name, unescape_help(help), Type::Untyped, out);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            match &mut self.current {
                Some(c) if c.name == name && c.metrics.is_empty() => c.kind = Type::of(kind),
                _ => self.start(name, String::new(), Type::of(kind), out),
            }
        } else if !line.is_empty() && !line.starts_with('#') {
            self.sample(line, out);
        }
    }

    fn start(&mut self, name: &str, help: String, kind: Type, out: &mut Vec<u8>) {
        self.flush(out);
        self.current =
            Some(Current { name: name.to_owned(), help, kind, metrics: Vec::new(), hist: None });
    }

    fn sample(&mut self, line: &str, out: &mut Vec<u8>) {
        let Some((name, labels, value)) = split_sample(line) else { return };
        let member = self.current.as_ref().and_then(|c| member_of(c, name));
        let Some(part) = member else {
            // A sample of no declared family: a family of its own, untyped.
            self.start(name, String::new(), Type::Untyped, out);
            self.sample(line, out);
            return;
        };
        let Some(c) = self.current.as_mut() else { return };
        if c.kind != Type::Histogram {
            let mut m = Vec::new();
            write_labels(&mut m, labels);
            let field = if c.kind == Type::Counter {
                3
            } else if c.kind == Type::Gauge {
                2
            } else {
                5
            };
            let mut v = Vec::with_capacity(9);
            double(&mut v, 1, value);
            message(&mut m, field, &v);
            message(&mut c.metrics, 4, &m);
            return;
        }
        let (series, le) = without_le(labels);
        if c.hist.as_ref().is_some_and(|h| h.labels != series) {
            let h = c.hist.take();
            emit_histogram(&mut c.metrics, h);
        }
        let h = c.hist.get_or_insert_with(|| Classic { labels: series, ..Classic::default() });
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "counts")]
        let n = value as u64;
        match part {
            Part::Bucket => {
                if let Some(bound) = le.and_then(|b| b.parse::<f64>().ok()) {
                    h.buckets.push((bound, n));
                }
            }
            Part::Sum => h.sum = value,
            Part::Count => h.count = n,
            Part::Whole => {}
        }
    }

    fn flush(&mut self, out: &mut Vec<u8>) {
        let Some(mut c) = self.current.take() else { return };
        let h = c.hist.take();
        emit_histogram(&mut c.metrics, h);
        if c.metrics.is_empty() {
            return;
        }
        let mut fam = Vec::with_capacity(c.metrics.len() + c.name.len() + c.help.len() + 16);
        bytes(&mut fam, 1, c.name.as_bytes());
        if !c.help.is_empty() {
            bytes(&mut fam, 2, c.help.as_bytes());
        }
        varint_field(&mut fam, 3, c.kind as u64);
        fam.extend_from_slice(&c.metrics);
        varint(out, fam.len() as u64);
        out.extend_from_slice(&fam);
    }
}

/// Which line of a family a sample is.
enum Part {
    Whole,
    Bucket,
    Sum,
    Count,
}

fn member_of(c: &Current, name: &str) -> Option<Part> {
    if c.kind != Type::Histogram {
        return (name == c.name).then_some(Part::Whole);
    }
    let suffix = name.strip_prefix(c.name.as_str())?;
    match suffix {
        "_bucket" => Some(Part::Bucket),
        "_sum" => Some(Part::Sum),
        "_count" => Some(Part::Count),
        _ => None,
    }
}

/// `name{labels} value` -> (name, the labels' text without braces, value).
fn split_sample(line: &str) -> Option<(&str, &str, f64)> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let rest = &line[name_end..];
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(inner) => {
            let close = closing_brace(inner)?;
            (&inner[..close], &inner[close + 1..])
        }
        None => ("", rest),
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name, labels, value))
}

/// Where the label set's `}` is, quoted values skipped.
fn closing_brace(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match (quoted, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (_, false, '"') => quoted = !quoted,
            (false, _, '}') => return Some(i),
            _ => {}
        }
    }
    None
}

/// The labels parsed, with `le` taken out: (the rest as a key, the `le` value).
fn without_le(labels: &str) -> (String, Option<String>) {
    let mut map = parse_labels(labels);
    let le = map.remove("le");
    let key = map.iter().map(|(k, v)| format!("{k}\u{0}{v}\u{0}")).collect();
    (key, le)
}

fn parse_labels(labels: &str) -> BTreeMap<String, String> {
    crate::promtext::labels(&format!("{labels}}}")).unwrap_or_default()
}

/// The label pairs of a metric (field 1, sorted by name as the text had them).
fn write_labels(m: &mut Vec<u8>, labels: &str) {
    for (k, v) in parse_labels(labels) {
        label(m, &k, &v);
    }
}

fn label(m: &mut Vec<u8>, k: &str, v: &str) {
    let mut pair = Vec::with_capacity(k.len() + v.len() + 4);
    bytes(&mut pair, 1, k.as_bytes());
    bytes(&mut pair, 2, v.as_bytes());
    message(m, 1, &pair);
}

/// One histogram `Metric`, native, appended as field 4 of its family.
fn emit_histogram(metrics: &mut Vec<u8>, h: Option<Classic>) {
    let Some(h) = h else { return };
    let mut m = Vec::new();
    for pair in h.labels.split_terminator('\u{0}').collect::<Vec<_>>().chunks(2) {
        if let [k, v] = pair {
            label(&mut m, k, v);
        }
    }
    let mut hist = Vec::new();
    varint_field(&mut hist, 1, h.count);
    double(&mut hist, 2, h.sum);
    varint_field(&mut hist, 5, 0); // schema 0: bucket k is (2^(k-1), 2^k]
    double(&mut hist, 6, ZERO_THRESHOLD);
    let (spans, deltas) = native(&h.buckets);
    for (offset, length) in spans {
        let mut span = Vec::new();
        varint_field(&mut span, 1, zigzag(i64::from(offset)));
        varint_field(&mut span, 2, u64::from(length));
        message(&mut hist, 12, &span);
    }
    if !deltas.is_empty() {
        let mut packed = Vec::new();
        for d in deltas {
            varint(&mut packed, zigzag(d));
        }
        bytes(&mut hist, 13, &packed);
    }
    message(&mut m, 7, &hist);
    message(metrics, 4, &m);
}

/// The native bucket (schema 0) that takes a classic bucket `(lo, hi]`: the one that
/// holds its geometric middle. The first bucket's `lo` is taken as `hi / 2` and the
/// `+Inf` bucket's middle as `lo * sqrt(2)`, as the kernel's buckets are.
fn native_index(lo: f64, hi: f64) -> i32 {
    let middle = if hi.is_infinite() { lo * std::f64::consts::SQRT_2 } else { (lo * hi).sqrt() };
    // Bounded: the kernel's bounds are 1 µs to 67 s.
    #[expect(clippy::cast_possible_truncation, reason = "log2 of a bound in seconds")]
    let k = middle.log2().ceil() as i32;
    k.clamp(-1000, 1000)
}

/// Classic cumulative buckets -> native spans (offset, length) and count deltas.
pub(super) fn native(buckets: &[(f64, u64)]) -> (Vec<(i32, u32)>, Vec<i64>) {
    let mut counts: BTreeMap<i32, u64> = BTreeMap::new();
    let mut prev = (0.0, 0u64);
    for (i, &(hi, cum)) in buckets.iter().enumerate() {
        let lo = if i == 0 { hi / 2.0 } else { prev.0 };
        let n = cum.saturating_sub(prev.1);
        if n > 0 {
            *counts.entry(native_index(lo, hi)).or_default() += n;
        }
        prev = (hi, cum);
    }
    let mut spans: Vec<(i32, u32)> = Vec::new();
    let mut deltas = Vec::with_capacity(counts.len());
    let (mut last_index, mut last_count) = (None::<i32>, 0i64);
    for (k, n) in counts {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        match (last_index, spans.last_mut()) {
            (Some(last), Some(span)) if k == last + 1 => span.1 += 1,
            (Some(last), _) => spans.push((k - last - 1, 1)),
            (None, _) => spans.push((k, 1)),
        }
        deltas.push(n - last_count);
        (last_index, last_count) = (Some(k), n);
    }
    (spans, deltas)
}

/// `# HELP` text escapes `\\` and `\n`.
fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some(c) => out.push(c),
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

// The protobuf wire format: varints, fixed64 doubles and length-delimited fields.

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        #[expect(clippy::cast_possible_truncation, reason = "the low seven bits")]
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    #[expect(clippy::cast_possible_truncation, reason = "below 0x80")]
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    #[expect(clippy::cast_sign_loss, reason = "zigzag encoding")]
    let z = ((v << 1) ^ (v >> 63)) as u64;
    z
}

fn key(out: &mut Vec<u8>, field: u32, wire: u32) {
    varint(out, u64::from(field << 3 | wire));
}

fn varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    key(out, field, 0);
    varint(out, v);
}

fn double(out: &mut Vec<u8>, field: u32, v: f64) {
    key(out, field, 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    key(out, field, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn message(out: &mut Vec<u8>, field: u32, m: &[u8]) {
    bytes(out, field, m);
}

#[cfg(test)]
mod tests;
