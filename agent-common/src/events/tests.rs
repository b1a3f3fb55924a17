//! Unit tests of `events`.

use super::*;

#[test]
fn seed_outcomes_decode_as_written() {
    let mut rec = [0u8; SeedOutcome::BYTES];
    rec[..8].copy_from_slice(&42u64.to_ne_bytes());
    rec[8..].copy_from_slice(&SeedOutcome::ALREADY_TRACKED.to_ne_bytes());
    let o = SeedOutcome::decode(&rec);
    assert_eq!(o, Some(SeedOutcome { cookie: 42, what: SeedOutcome::ALREADY_TRACKED }));
    assert_eq!(SeedOutcome::decode(&rec[..15]), None);
}
