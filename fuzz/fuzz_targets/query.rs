//! Fuzzes the query-string parser of `/connections` and `/violations` with arbitrary
//! text: it must never panic, every refusal must be one printable line, and whatever it
//! accepts must be within the limits.
#![no_main]

use agent_core::{
    names::is_cell_name,
    query::{MAX_LIMIT, parse},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse(Some(&text), &["cell", "verdict", "limit"]) {
        Ok(q) => {
            assert!((1..=MAX_LIMIT).contains(&q.limit), "limit {}", q.limit);
            if let Some(c) = &q.cell {
                assert!(is_cell_name(c), "accepted a cell name the rule refuses: {c:?}");
            }
        }
        Err(e) => assert!(!e.chars().any(char::is_control), "not one printable line: {e:?}"),
    }
});
