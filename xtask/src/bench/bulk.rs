//! `cargo xtask bench bulk`: one loopback connection between two cells moving several GiB,
//! with no agent, with cellwatch (audit and enforce) and with tcplife, interleaved. The
//! agent does no per-packet or per-ACK work, so this should cost it nothing measurable.
use std::{
    io::{Read, Write},
    net::TcpListener,
    thread,
    time::Instant,
};

use anyhow::{Result, bail};

use super::{
    harness::{Bins, SERVER, connect, interleaved, ratio_table},
    record,
};
use crate::util::{ok, step};

const CHUNK: usize = 1 << 20;

pub(crate) fn bulk(smoke: bool, baseline: Option<std::path::PathBuf>) -> Result<()> {
    // In 64ths of a GiB: 4 GiB, or 1/16 GiB for a smoke run.
    let (runs, sixty_fourths) = if smoke { (1, 4u64) } else { (5, 256u64) };
    let bytes = sixty_fourths << 24;
    let gib = sixty_fourths as f64 / 64.0;
    let bins = Bins::get(smoke, baseline)?;
    let variants = bins.variants();
    step(&format!("bulk: {gib} GiB over one connection, {runs} runs of each variant, interleaved"));
    let rates =
        interleaved(runs, &bins, &variants, |_, _| transfer(bytes), |r| format!("{r:>6.2} GiB/s"))?;
    if smoke {
        ok("smoke run done (nothing recorded)");
        return Ok(());
    }
    let table = ratio_table("GiB/s", &variants, &rates, 2);
    let section = format!(
        "### Bulk throughput over one connection\n\n\
         `cargo xtask bench bulk`: {gib} GiB from cell-a to cell-b over one loopback connection, \
         1 MiB writes, {runs} runs of each variant, interleaved (each round starts with the next variant); median [min, max].\n\n{table}\n\
         Target (issue 6): 0.99 of no-agent throughput or more. None of cellwatch's programs \
         runs per packet or per ACK; a difference here is the machine's noise.\n"
    );
    record::update("bulk", &section)?;
    ok("BENCHMARKS.md updated");
    Ok(())
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
