//! Unit tests of `mounts`.

use super::*;

#[test]
fn cgroup2_root_found_on_hybrid_and_unified_hosts() {
    let hybrid = Mounts::parse(
        "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n\
             cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n",
    );
    assert_eq!(hybrid.cgroup2_root(), Some("/sys/fs/cgroup/unified".into()));
    let unified = Mounts::parse("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n");
    assert_eq!(unified.cgroup2_root(), Some("/sys/fs/cgroup".into()));
    assert_eq!(Mounts::parse("proc /proc proc rw 0 0\n").cgroup2_root(), None);
}

#[test]
fn covering_mount_is_the_longest_prefix() {
    let m = Mounts::parse("/dev/vda / ext4 rw 0 0\nbpf /sys/fs/bpf bpf rw 0 0\n");
    assert_eq!(
        m.covering(Path::new("/sys/fs/bpf/cellwatch")).map(|m| m.fstype.as_str()),
        Some("bpf")
    );
    assert_eq!(m.covering(Path::new("/tmp/x")).map(|m| m.fstype.as_str()), Some("ext4"));
    // A filesystem mounted over another at the same point: the top one counts (this
    // machine kind boots with sysfs at /sys/fs/bpf, and bpffs goes on top).
    let stacked = Mounts::parse("sysfs /sys/fs/bpf sysfs rw 0 0\nbpf /sys/fs/bpf bpf rw 0 0\n");
    let top = stacked.covering(Path::new("/sys/fs/bpf/cellwatch")).map(|m| m.fstype.as_str());
    assert_eq!(top, Some("bpf"));
    let esc = Mounts::parse("x /mnt/a\\040b tmpfs rw 0 0\n");
    assert_eq!(esc.0[0].point, PathBuf::from("/mnt/a b"));
}
