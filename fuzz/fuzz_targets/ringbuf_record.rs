//! Fuzzes the decoding of ring-buffer records (violation events) with arbitrary bytes: it
//! must never panic, must accept exactly the records of the right size, and whatever it
//! accepts must turn into addresses and a process name without panicking.
#![no_main]

use agent_core::events::{addr, comm, decode};
use libfuzzer_sys::fuzz_target;

const RECORD: usize = size_of::<agent_common::ViolationEvent>();

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Ok(e) => {
            assert_eq!(data.len(), RECORD);
            let _ = (addr(e.family, e.src_addr), addr(e.family, e.dst_addr), comm(&e.comm));
        }
        Err(bad) => {
            assert_ne!(data.len(), RECORD);
            assert_eq!(bad.0, data.len());
        }
    }
});
