//! Unit tests of `netns`.

#[test]
fn the_agents_own_namespace_comes_first_and_each_comes_once() {
    let all = super::all();
    assert_eq!(all[0], std::path::Path::new("/proc/self/ns/net"));
    // This process is in its own namespace: /proc/<pid>/ns/net is the same one.
    let me = std::path::PathBuf::from(format!("/proc/{}/ns/net", std::process::id()));
    assert!(!all.contains(&me), "{all:?}");
}
