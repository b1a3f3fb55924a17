//! `cargo xtask bench bulk`: one loopback connection between two cells moving several GiB,
//! with no agent, with cellwatch (audit, audit `--without udp`, enforce) and with tcplife,
//! interleaved. The agent's only per-packet work for TCP is its UDP programs' (cgroup skb
//! egress and ingress, on every packet of the node): one copy of its first bytes and a
//! compare per packet, which `--without udp` leaves off; one more audit run with
//! `kernel.bpf_stats_enabled` counts their runs and time.
use std::{
    io::{Read, Write},
    net::TcpListener,
    thread,
    time::Instant,
};

use anyhow::{Result, bail};

use super::{
    harness::{
        Beside, Bins, BpfStats, SERVER, SKB_PROGRAMS, Variant, config, connect, interleaved,
        prog_runs, ratio_table, require_udp, start_agent,
    },
    record, stats,
};
use crate::util::{ok, step};

const CHUNK: usize = 1 << 20;

pub(crate) fn bulk(smoke: bool, baseline: Option<std::path::PathBuf>) -> Result<()> {
    // In 64ths of a GiB: 4 GiB, or 1/16 GiB for a smoke run.
    let (runs, sixty_fourths) = if smoke { (1, 4u64) } else { (5, 256u64) };
    let bytes = sixty_fourths << 24;
    let gib = sixty_fourths as f64 / 64.0;
    let bins = Bins::get(smoke, baseline)?;
    let mut variants = bins.variants();
    variants.insert(2, Variant::AuditWithoutUdp);
    step(&format!("bulk: {gib} GiB over one connection, {runs} runs of each variant, interleaved"));
    let rates =
        interleaved(runs, &bins, &variants, |_, _| transfer(bytes), |r| format!("{r:>6.2} GiB/s"))?;
    let skb = profile(&bins, bytes)?;
    if smoke {
        ok("smoke run done (nothing recorded)");
        return Ok(());
    }
    let table = ratio_table("GiB/s", &variants, &rates, 2);
    let [(e_runs, e_ns), (i_runs, i_ns)] = skb;
    let per_gib = |x: u64| x as f64 / gib;
    let ns = |(runs, ns): (u64, u64)| ns as f64 / runs.max(1) as f64;
    let section = format!(
        "### Bulk throughput over one connection\n\n\
         `cargo xtask bench bulk`: {gib} GiB from cell-a to cell-b over one loopback connection, \
         1 MiB writes, {runs} runs of each variant, interleaved (each round starts with the next variant); median [min, max].\n\n{table}\n\
         Target (issue 6): 0.99 of no-agent throughput or more. Since UDP support, two of \
         cellwatch's programs run per packet, TCP's data and ACKs included: cgroup skb egress \
         and ingress, which copy the first bytes of a TCP packet's IP header and return; \
         `--without udp` leaves them off. One more audit run of {gib} GiB with \
         `kernel.bpf_stats_enabled` (two clock reads added to each run): egress {:.0} runs per \
         GiB at {:.0} ns, ingress {:.0} runs per GiB at {:.0} ns (a run per packet as the stack \
         hands it over, a GSO packet of tens of KiB on loopback, and per ACK), so about \
         {:.0} µs of kernel time per GiB, {:.3}% of the no-agent run's wall time per GiB. A \
         difference between the rows beyond that is the machine's noise.\n",
        per_gib(e_runs),
        ns((e_runs, e_ns)),
        per_gib(i_runs),
        ns((i_runs, i_ns)),
        per_gib(e_ns + i_ns) / 1000.0,
        per_gib(e_ns + i_ns) / 1e9 * stats::median(&rates[0]) * 100.0,
    );
    record::update("bulk", &section)?;
    ok("BENCHMARKS.md updated");
    Ok(())
}

/// One more audit run of `bytes`, `kernel.bpf_stats_enabled` on: the skb programs'
/// (runs, ns), egress and ingress.
fn profile(bins: &Bins, bytes: u64) -> Result<[(u64, u64); 2]> {
    step("bulk: one more audit run, kernel.bpf_stats_enabled on");
    let stats = BpfStats::enable()?;
    let agent = start_agent(&bins.agent, &config("audit"), &[])?;
    require_udp(&agent)?;
    let beside = Beside::Agent(agent);
    let before = prog_runs(&beside, &SKB_PROGRAMS)?;
    transfer(bytes)?;
    let after = prog_runs(&beside, &SKB_PROGRAMS)?;
    drop(beside);
    drop(stats);
    let d = [0, 1].map(|i| (after[i].0 - before[i].0, after[i].1 - before[i].1));
    ok(&format!("egress {} runs, {} ns; ingress {} runs, {} ns", d[0].0, d[0].1, d[1].0, d[1].1));
    Ok(d)
}

/// Sends `bytes` over one connection; GiB/s as the receiver saw them arrive.
fn transfer(bytes: u64) -> Result<f64> {
    let listener = TcpListener::bind((SERVER, 0))?;
    let to = listener.local_addr()?;
    let server = thread::spawn(move || -> Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0u64;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok(got),
                n => got += n as u64,
            }
        }
    });
    let mut c = connect(to)?;
    let chunk = vec![0x5au8; CHUNK];
    let t = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        let n = usize::try_from(bytes - sent).map_or(CHUNK, |left| CHUNK.min(left));
        c.write_all(&chunk[..n])?;
        sent += n as u64;
    }
    c.shutdown(std::net::Shutdown::Write)?;
    let got = server.join().map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    let secs = t.elapsed().as_secs_f64();
    if got != bytes {
        bail!("sent {bytes} bytes, received {got}");
    }
    Ok(bytes as f64 / secs / (1u64 << 30) as f64)
}
