//! Unit tests of `attach`.

#[test]
fn the_verifier_reason_is_its_last_verdict_line() {
    let log = "0: R1=ctx() R10=fp0\n; if v6 { x } @ ctx.rs:48\n389: (61) r8 = *(u32 *)(r2 +0)\n\
                   dereference of modified ctx ptr R2 off=28 disallowed\nverification time 564 usec\n\
                   stack depth 328+0+0\nprocessed 230 insns (limit 1000000)\n";
    assert_eq!(
        super::verifier_reason(log).as_deref(),
        Some("dereference of modified ctx ptr R2 off=28 disallowed")
    );
}
