//! The protobuf exposition, decoded by `prost` from messages declared as metrics.proto
//! declares them: families, labels, values and native histograms.
use super::*;
use prost::Message;

#[derive(Clone, PartialEq, prost::Message)]
struct MetricFamily {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "2")]
    help: Option<String>,
    #[prost(int32, optional, tag = "3")]
    kind: Option<i32>,
    #[prost(message, repeated, tag = "4")]
    metric: Vec<Metric>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LabelPair {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "2")]
    value: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Value {
    #[prost(double, optional, tag = "1")]
    value: Option<f64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Metric {
    #[prost(message, repeated, tag = "1")]
    label: Vec<LabelPair>,
    #[prost(message, optional, tag = "2")]
    gauge: Option<Value>,
    #[prost(message, optional, tag = "3")]
    counter: Option<Value>,
    #[prost(message, optional, tag = "5")]
    untyped: Option<Value>,
    #[prost(message, optional, tag = "7")]
    histogram: Option<Histogram>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Span {
    #[prost(sint32, optional, tag = "1")]
    offset: Option<i32>,
    #[prost(uint32, optional, tag = "2")]
    length: Option<u32>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Histogram {
    #[prost(uint64, optional, tag = "1")]
    sample_count: Option<u64>,
    #[prost(double, optional, tag = "2")]
    sample_sum: Option<f64>,
    #[prost(sint32, optional, tag = "5")]
    schema: Option<i32>,
    #[prost(double, optional, tag = "6")]
    zero_threshold: Option<f64>,
    #[prost(uint64, optional, tag = "7")]
    zero_count: Option<u64>,
    #[prost(message, repeated, tag = "12")]
    positive_span: Vec<Span>,
    #[prost(sint64, repeated, packed = "true", tag = "13")]
    positive_delta: Vec<i64>,
}

fn decode(mut b: &[u8]) -> Vec<MetricFamily> {
    let mut out = Vec::new();
    while !b.is_empty() {
        out.push(MetricFamily::decode_length_delimited(&mut b).expect("a delimited family"));
    }
    out
}

fn transcode(text: &str, piece: usize) -> Vec<MetricFamily> {
    let mut t = Transcoder::default();
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    for chunk in bytes.chunks(piece) {
        t.feed(std::str::from_utf8(chunk).expect("ascii test text"), &mut out);
    }
    t.finish(&mut out);
    decode(&out)
}

fn labels(m: &Metric) -> Vec<(String, String)> {
    m.label
        .iter()
        .map(|l| (l.name.clone().unwrap_or_default(), l.value.clone().unwrap_or_default()))
        .collect()
}

const TEXT: &str = "\
# HELP cw_opened_total Connections \\\\ opened\\nby pair
# TYPE cw_opened_total counter
cw_opened_total{src_cell=\"a\",dst_cell=\"b \\\"q\\\"\"} 7
cw_opened_total{src_cell=\"a\",dst_cell=\"c\"} 3
# HELP cw_active Now open
# TYPE cw_active gauge
cw_active 2
# HELP cw_lat Latency
# TYPE cw_lat histogram
cw_lat_bucket{src_cell=\"a\",le=\"1e-6\"} 1
cw_lat_bucket{src_cell=\"a\",le=\"2e-6\"} 1
cw_lat_bucket{src_cell=\"a\",le=\"4e-6\"} 4
cw_lat_bucket{src_cell=\"a\",le=\"+Inf\"} 5
cw_lat_sum{src_cell=\"a\"} 0.25
cw_lat_count{src_cell=\"a\"} 5
cw_lat_bucket{src_cell=\"b\",le=\"1e-6\"} 0
cw_lat_bucket{src_cell=\"b\",le=\"2e-6\"} 2
cw_lat_bucket{src_cell=\"b\",le=\"4e-6\"} 2
cw_lat_bucket{src_cell=\"b\",le=\"+Inf\"} 2
cw_lat_sum{src_cell=\"b\"} 3e-6
cw_lat_count{src_cell=\"b\"} 2
untyped_thing 4.5
";

#[test]
fn every_family_comes_through_whatever_the_pieces() {
    for piece in [1, 7, 64, TEXT.len()] {
        let fams = transcode(TEXT, piece);
        let names: Vec<_> = fams.iter().map(|f| f.name.clone().unwrap_or_default()).collect();
        assert_eq!(names, ["cw_opened_total", "cw_active", "cw_lat", "untyped_thing"], "{piece}");
        assert_eq!(fams[0].help.as_deref(), Some("Connections \\ opened\nby pair"));
        assert_eq!(fams.iter().map(|f| f.kind.unwrap_or(-1)).collect::<Vec<_>>(), [0, 1, 4, 3]);
        let opened = &fams[0].metric;
        assert_eq!(opened.len(), 2);
        assert_eq!(
            labels(&opened[0]),
            [("dst_cell".into(), "b \"q\"".into()), ("src_cell".into(), "a".into())]
        );
        assert_eq!(opened[0].counter.as_ref().and_then(|c| c.value), Some(7.0));
        assert_eq!(opened[1].counter.as_ref().and_then(|c| c.value), Some(3.0));
        assert_eq!(fams[1].metric[0].gauge.as_ref().and_then(|g| g.value), Some(2.0));
        assert_eq!(fams[3].metric[0].untyped.as_ref().and_then(|g| g.value), Some(4.5));
    }
}

#[test]
fn a_histogram_is_native_with_exact_count_and_sum() {
    let fams = transcode(TEXT, 4096);
    let lat = &fams[2].metric;
    assert_eq!(lat.len(), 2);
    assert_eq!(labels(&lat[0]), [("src_cell".into(), "a".into())]);
    let h = lat[0].histogram.as_ref().expect("a histogram");
    assert_eq!((h.sample_count, h.sample_sum, h.schema), (Some(5), Some(0.25), Some(0)));
    assert!(h.zero_threshold.is_some_and(|z| z > 0.0), "marks it native");
    // Buckets: (0.5us, 1us] -> 1 at k=-20; (2us, 4us] -> 3 at k=-18; +Inf above 4 us -> 1
    // at k=ceil(log2(4e-6 * sqrt 2)) = -17.
    let expanded = expand(h);
    assert_eq!(expanded, [(-20, 1), (-18, 3), (-17, 1)]);
    let h = lat[1].histogram.as_ref().expect("a histogram");
    assert_eq!(expand(h), [(-19, 2)]);
    assert_eq!(h.sample_count, Some(2));
}

/// (index, count) of every bucket the spans cover.
fn expand(h: &Histogram) -> Vec<(i32, i64)> {
    let mut out = Vec::new();
    let mut deltas = h.positive_delta.iter();
    let (mut index, mut count) = (0, 0);
    // A span's offset is from the end of the one before (from 0 for the first).
    for s in &h.positive_span {
        index += s.offset.unwrap_or(0);
        for _ in 0..s.length.unwrap_or(0) {
            count += deltas.next().expect("a delta per bucket");
            out.push((index, count));
            index += 1;
        }
    }
    out
}

#[test]
fn spans_skip_empty_buckets() {
    let (spans, deltas) = native(&[(1e-6, 1), (2e-6, 1), (4e-6, 1), (8e-6, 3), (f64::INFINITY, 3)]);
    // k=-20 holds 1, k=-17 holds 2: two spans, the second 2 after the first's end.
    assert_eq!(spans, [(-20, 1), (2, 1)]);
    assert_eq!(deltas, [1, 1]);
}

#[test]
fn the_kernel_buckets_land_in_the_native_bucket_that_covers_most_of_them() {
    // Kernel bucket i holds [2^(i-1), 2^i) us; its native bucket is (2^(i-21), 2^(i-20)] s.
    for i in 1..27 {
        let lo = f64::from(1u32 << (i - 1)) * 1e-6;
        let hi = f64::from(1u32 << i) * 1e-6;
        assert_eq!(native_index(lo, hi), i - 20, "kernel bucket {i}");
    }
}

#[test]
fn the_accept_header_of_prometheus_with_native_histograms_asks_for_it() {
    let prom = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
                encoding=delimited;q=0.8,application/openmetrics-text;version=1.0.0;q=0.75,\
                text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    assert!(accepted(prom));
    assert!(accepted(CONTENT_TYPE));
    assert!(!accepted("text/plain;version=0.0.4;q=0.5,*/*;q=0.1"));
    assert!(!accepted("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily"));
    assert!(!accepted(
        "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
         encoding=delimited;q=0"
    ));
    assert!(!accepted(""));
}

#[test]
fn the_contracts_families_transcode_as_rendered() {
    use agent_common::{Direction, PairKey, PairStats, Verdict};

    use crate::{
        ids::CellIds,
        metrics::{Buckets, Options, Snapshot},
    };
    let mut ids = CellIds::default();
    let (a, b) = (ids.id("cell-a").expect("an id"), ids.id("cell-b").expect("an id"));
    let mut s = PairStats::ZERO;
    s.opened = 10;
    s.closed = 9;
    s.latency_hist[0] = 1;
    s.latency_hist[8] = 10;
    s.latency_hist[27] = 2;
    s.rtt_hist[7] = 10;
    s.latency_sum_ns = 1_000;
    let snap = Snapshot {
        pairs: vec![
            (PairKey::new(a, b, Direction::EGRESS, Verdict::ALLOWED), s),
            (PairKey::new(a, b, Direction::INGRESS, Verdict::ALLOWED), s),
        ],
        ..Snapshot::default()
    };
    let mut text = String::new();
    crate::metrics::render(
        &snap,
        &ids,
        &Options { buckets: Buckets::all(), ..Options::default() },
        &mut text,
    );
    let fams = transcode(&text, 64 * 1024);
    let samples = crate::promtext::parse(&text);
    for f in &fams {
        let name = f.name.clone().unwrap_or_default();
        let want = if f.kind == Some(4) {
            samples.iter().filter(|s| s.name == format!("{name}_count")).count()
        } else {
            samples.iter().filter(|s| s.name == name).count()
        };
        assert_eq!(f.metric.len(), want, "{name}");
        for m in f.metric.iter().filter_map(|m| m.histogram.as_ref()) {
            let total: i64 = expand(m).iter().map(|(_, n)| n).sum();
            assert_eq!(Some(u64::try_from(total).unwrap_or(0)), m.sample_count, "{name}");
        }
    }
    assert!(fams.iter().any(|f| f.kind == Some(4)), "the sample has histograms");
}
