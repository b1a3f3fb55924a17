//! Microbenchmarks of the agent's pure hot paths, the work of every scrape and reload:
//! - per-CPU statistics merged into one value per pair (the map readout);
//! - a kernel snapshot rendered as Prometheus text (grouping, histogram buckets, labels);
//! - a 1,000-cell config compiled into kernel map contents.
//!
//! Run with `cargo bench -p agent-core --bench hot_paths`; CI only builds them.
use std::hint::black_box;

use agent_common::{COUNTERS_LEN, Direction, HIST_BUCKETS, PairKey, PairStats, Verdict};
use agent_core::{
    config::Config,
    ids::CellIds,
    metrics::{Options, Snapshot, render},
    policy::compile,
};
use criterion::{Criterion, criterion_group, criterion_main};

/// A config of `n` cells, one /24 each.
fn config(n: u32) -> Config {
    let mut y = String::from("cells:\n");
    for i in 0..n {
        y.push_str(&format!("  - {{ name: c{i:04}, cidrs: [10.{}.{}.0/24] }}\n", i / 256, i % 256));
    }
    Config::parse("bench.yaml", &y).expect("valid config")
}

/// A snapshot of `cells`² pairs, both directions, every field and bucket non-zero.
fn snapshot(cells: u32) -> (Snapshot, CellIds) {
    let mut ids = CellIds::default();
    compile(&config(cells), &mut ids).expect("ids");
    let mut stats = PairStats::ZERO;
    stats.opened = 10;
    stats.closed = 9;
    stats.bytes_sent = 1 << 20;
    stats.latency_hist = [3; HIST_BUCKETS];
    stats.rtt_hist = [2; HIST_BUCKETS];
    let mut pairs = Vec::new();
    for s in 1..=cells {
        for d in 1..=cells {
            for direction in [Direction::EGRESS, Direction::INGRESS] {
                let key = PairKey::new(s, d, direction, Verdict::ALLOWED);
                pairs.push((key, stats));
            }
        }
    }
    (Snapshot { pairs, counters: [0; COUNTERS_LEN as usize], ..Snapshot::default() }, ids)
}

fn readout(c: &mut Criterion) {
    // Two CPUs' copies of 2,000 pair keys, merged into one value each as the readout does.
    let per_cpu = vec![[PairStats::ZERO; 2]; 2_000];
    c.bench_function("readout: merge 2 CPUs x 2,000 pairs", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(per_cpu.len());
            for cpus in black_box(&per_cpu) {
                let mut sum = PairStats::ZERO;
                for v in cpus {
                    sum.merge(v);
                }
                out.push(sum);
            }
            out
        });
    });
}

fn samples_and_render(c: &mut Criterion) {
    for cells in [10, 30] {
        let (snap, ids) = snapshot(cells);
        let pairs = snap.pairs.len();
        let opts = Options::default();
        c.bench_function(&format!("render text: {pairs} pair keys ({cells} cells)"), |b| {
            b.iter(|| {
                let mut out = String::new();
                render(black_box(&snap), black_box(&ids), &opts, &mut out);
                out
            });
        });
    }
}

fn config_compile(c: &mut Criterion) {
    let cfg = config(1000);
    c.bench_function("compile: 1,000 cells", |b| {
        b.iter(|| {
            let mut ids = CellIds::default();
            compile(black_box(&cfg), &mut ids).expect("compile")
        });
    });
}

criterion_group!(benches, readout, samples_and_render, config_compile);
criterion_main!(benches);
