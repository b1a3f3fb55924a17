use agent_common::{DIR_EGRESS, DIR_INGRESS, HIST_BUCKETS, PairKey, PairStats};
use agent_core::{config::Config, ids::CellIds, metrics::{Buckets, Snapshot, render}, policy::compile};
fn main() {
    let n = 100u32;
    let mut y = String::from("cells:\n");
    for i in 0..n { y.push_str(&format!("  - {{ name: c{i:04}, cidrs: [10.{}.{}.0/24] }}\n", i / 256, i % 256)); }
    let cfg = Config::parse("b.yaml", &y).unwrap();
    let mut ids = CellIds::default();
    compile(&cfg, &mut ids).unwrap();
    let mut s = PairStats::ZERO; s.opened = 10; s.closed = 9; s.bytes_sent = 1 << 20; s.latency_hist = [3; HIST_BUCKETS]; s.rtt_hist = [2; HIST_BUCKETS];
    let mut pairs = Vec::new();
    for a in 1..=n { for b in 1..=n { for d in [DIR_EGRESS, DIR_INGRESS] { pairs.push((PairKey::new(a, b, d, 0), s)); } } }
    let snap = Snapshot { pairs, ..Snapshot::default() };
    let t = std::time::Instant::now();
    let mut out = String::new();
    render(&snap, &ids, &Buckets::default(), &mut out);
    println!("{} bytes, {} lines, {:?}", out.len(), out.lines().count(), t.elapsed());
    std::fs::write("/tmp/sz/out.txt", &out).unwrap();
}
