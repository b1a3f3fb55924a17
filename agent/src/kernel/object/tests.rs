//! Unit tests of `object`.

use std::collections::BTreeSet;

use super::*;

/// Parsing needs no kernel and no root: the object is only read.
fn object() -> aya_obj::Object {
    aya_obj::Object::parse(EBPF_OBJECT).expect("the embedded eBPF object parses")
}

#[test]
fn every_map_of_the_object_is_pinned_and_no_other() {
    let obj = object();
    let in_object: BTreeSet<&str> = obj.maps.keys().map(String::as_str).collect();
    let pinned: BTreeSet<&str> = PINNED_MAPS.iter().copied().collect();
    assert_eq!(pinned.len(), PINNED_MAPS.len(), "a map is listed twice");
    // `.rodata`, `.bss` and the like are the object's own data sections, not maps
    // the agent names.
    let named: BTreeSet<&str> = in_object.into_iter().filter(|m| !m.starts_with('.')).collect();
    assert_eq!(named, pinned, "the object's maps and the agent's list differ");
}

#[test]
fn every_program_of_the_object_has_a_use_and_no_other() {
    let in_object: BTreeSet<String> = object().programs.keys().cloned().collect();
    let known: BTreeSet<String> = PROGRAMS
        .iter()
        .chain(&UDP_PROGRAMS)
        .map(|(n, _)| *n)
        .chain([SEEDED_CLOSE.0, SETTLE_ONE, PROBE_RAW_TP])
        .chain(ITERATORS.iter().map(|(n, _)| *n))
        .map(str::to_owned)
        .collect();
    assert_eq!(in_object, known, "the object's programs and the agent's lists differ");
}
