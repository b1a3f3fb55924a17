//! Unit tests of `btf`.

use super::*;

/// A tiny BTF: `struct inner { int a; int b; }`, `struct outer { int x; union { int
/// y; struct inner in; }; }`, and `typedef struct inner inner_t`.
fn sample() -> Vec<u8> {
    let strings = b"\0int\0a\0b\0inner\0x\0y\0in\0outer\0inner_t\0";
    let s = |name: &str| {
        let needle = format!("\0{name}\0");
        let pos = strings.windows(needle.len()).position(|w| w == needle.as_bytes()).unwrap();
        u32::try_from(pos + 1).unwrap()
    };
    let mut t = Vec::new();
    let mut push = |w: u32| t.extend_from_slice(&w.to_le_bytes());
    // 1: int (size 4, 32 bits)
    push(s("int"));
    push(1 << 24);
    push(4);
    push(32);
    // 2: struct inner { a @0, b @32 }
    push(s("inner"));
    push((4 << 24) | 2);
    push(8);
    push(s("a"));
    push(1);
    push(0);
    push(s("b"));
    push(1);
    push(32);
    // 3: anonymous union { y: int @0, in: struct inner @0 }
    push(0);
    push((5 << 24) | 2);
    push(8);
    push(s("y"));
    push(1);
    push(0);
    push(s("in"));
    push(2);
    push(0);
    // 4: struct outer { x @0, <anon union> @64 }
    push(s("outer"));
    push((4 << 24) | 2);
    push(16);
    push(s("x"));
    push(1);
    push(0);
    push(0);
    push(3);
    push(64);
    // 5: typedef inner_t -> 2
    push(s("inner_t"));
    push(8 << 24);
    push(2);
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.push(1);
    out.push(0);
    for w in [
        24u32,
        0,
        u32::try_from(t.len()).unwrap(),
        u32::try_from(t.len()).unwrap(),
        u32::try_from(strings.len()).unwrap(),
    ] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(&t);
    out.extend_from_slice(strings);
    out
}

#[test]
fn members_are_found_through_anonymous_unions_and_typedefs() {
    let data = sample();
    let btf = Btf::parse(&data).unwrap();
    assert_eq!(btf.offset("outer", "x"), Ok(0));
    assert_eq!(btf.offset("outer", "y"), Ok(8));
    assert_eq!(btf.offset("outer", "in.b"), Ok(12));
    assert_eq!(btf.offset("inner_t", "b"), Ok(4));
    assert!(matches!(btf.offset("outer", "z"), Err(BtfError::NoMember { .. })));
    assert!(matches!(btf.offset("nothing", "x"), Err(BtfError::NoStruct(_))));
}

#[test]
fn truncated_or_foreign_data_is_an_error() {
    let data = sample();
    for cut in [0, 3, 10, 30, data.len() - 1] {
        assert!(Btf::parse(&data[..cut]).is_err(), "cut at {cut}");
    }
    assert!(Btf::parse(b"\x7fELF....................").is_err());
}

/// The running kernel's own BTF: every field the programs read is there.
#[test]
fn the_running_kernel_has_every_field() {
    let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
        panic!("/sys/kernel/btf/vmlinux is missing: cellwatch needs a kernel with BTF");
    };
    let f = socket_fields(&Btf::parse(&data).unwrap()).unwrap_or_else(|e| panic!("{e}"));
    for off in [f.sk_err, f.sk_flags, f.sk_lock_owned, f.bytes_acked, f.srtt_us] {
        assert!(off > 0 && off < 8192, "{f:?}");
    }
    assert!(f.sk_lock_slock < f.sk_lock_owned, "{f:?}");
    // The tcp_sock fields are copied in one read on the kernels cellwatch supports.
    assert!(f.span_len > 0 && f.span_len <= agent_common::SPAN_MAX, "{f:?}");
    assert_eq!(f.span_start % 8, 0, "{f:?}");
}
