//! Fuzzes the config parser with arbitrary bytes: it must never panic, every error
//! must be located (`FILE:LINE:COL: ...` on every line), and whatever validates must
//! also compile into kernel map contents.
#![no_main]

use agent_core::{config::Config, ids::CellIds, policy::compile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Config::from_bytes("fuzz.yaml", data) {
        Ok(cfg) => {
            let mut ids = CellIds::default();
            // Validated configs hold at most MAX_CELLS names, so ids never run out.
            compile(&cfg, &mut ids).expect("a validated config compiles");
        }
        Err(e) => {
            for line in e.to_string().lines() {
                let rest = line.strip_prefix("fuzz.yaml:").expect("error names the file");
                let mut parts = rest.splitn(3, ':');
                let (l, c) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                assert!(l.parse::<u64>().is_ok() && c.parse::<u64>().is_ok(), "unlocated: {line}");
            }
        }
    }
});
