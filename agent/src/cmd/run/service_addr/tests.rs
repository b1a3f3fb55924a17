//! Unit tests of `service_addr`.

#[test]
fn a_table_past_the_bound_is_read_to_its_last_whole_line_and_said() {
    let dir = std::env::temp_dir().join(format!("cellwatch-ipvs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("ip_vs_conn");
    std::fs::write(&p, "header\nline one\nline two\n").unwrap();
    let path = p.to_str().unwrap();
    assert_eq!(super::read_bounded(path, 1024), ("header\nline one\nline two\n".into(), true));
    assert_eq!(super::read_bounded(path, 20), ("header\nline one\n".into(), false));
    assert_eq!(super::read_bounded("/nonexistent/ip_vs_conn", 20), (String::new(), true));
    std::fs::remove_dir_all(&dir).unwrap();
}
