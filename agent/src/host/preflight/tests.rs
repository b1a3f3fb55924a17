//! Unit tests of `preflight`.

use super::*;

#[test]
fn missing_caps_are_named() {
    let err = check_capabilities(1 << CAP_NET_ADMIN).unwrap_err().to_string();
    assert!(err.starts_with("this process lacks CAP_BPF and CAP_PERFMON, which"), "{err}");
    let all = (1 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_NET_ADMIN);
    assert!(check_capabilities(all).is_ok());
    assert!(check_capabilities((1 << CAP_SYS_ADMIN) | (1 << CAP_NET_ADMIN)).is_ok());
    let none = check_capabilities(0).unwrap_err().to_string();
    assert!(none.contains("lacks CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN,"), "{none}");
}
