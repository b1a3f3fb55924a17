//! Start-up on a node that lacks something: each case is made real in a private mount
//! namespace (`unshare -m`), so the host is never touched. Each ends either in an
//! automatic remedy or in one clear sentence and a non-zero exit, never a panic.
use std::{process::Command, time::Duration};

use cellwatch_tests::{
    Agent, AgentOpts, Pins, TempDir, cellwatch, cgroup2_root, free_port, http_get, prog_ids_of,
};

/// `unshare -m` then a shell snippet, then exec of the agent with its arguments.
fn in_mount_ns(script: &str) -> Vec<String> {
    vec![
        "unshare".into(),
        "-m".into(),
        "--propagation".into(),
        "private".into(),
        "sh".into(),
        "-c".into(),
        format!("{script} && exec \"$0\" \"$@\""),
    ]
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Runs `cellwatch run` under `wrapper` and expects it to fail by itself.
fn run_fails(wrapper: &[&str]) -> (i32, String) {
    run_fails_as(AgentOpts { wrapper, ..AgentOpts::default() })
}

fn run_fails_as(opts: AgentOpts<'_>) -> (i32, String) {
    let mut a = Agent::spawn(opts);
    let status = a
        .wait(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("agent did not exit:\n{}", a.stderr()));
    (status.code().unwrap_or(-1), a.stderr())
}

/// One sentence on one line, prefixed `cellwatch: `, and no panic or backtrace.
fn assert_one_sentence(stderr: &str) -> &str {
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("cellwatch: "), "last line is not the error sentence: {stderr}");
    last
}

#[test]
fn without_privilege_it_names_the_missing_capabilities() {
    let wrapper = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ];
    let (code, stderr) = run_fails(&wrapper);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "exactly one line expected: {stderr}");
    let line = assert_one_sentence(&stderr);
    for cap in ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"] {
        assert!(line.contains(cap), "{line}");
    }
}

/// Each of the three capabilities the DaemonSet grants is needed: without any one of
/// them (the other two kept), the agent names exactly that one.
#[test]
fn each_required_capability_is_named_when_missing() {
    let caps = ["bpf", "perfmon", "net_admin"];
    for missing in caps {
        let kept: Vec<String> =
            caps.iter().filter(|c| **c != missing).map(|c| format!("+{c}")).collect();
        let bounding = format!("--bounding-set=-all,{}", kept.join(","));
        let wrapper = ["setpriv", bounding.as_str(), "--inh-caps=-all"];
        let (code, stderr) = run_fails(&wrapper);
        assert_eq!(code, 1, "without {missing}: {stderr}");
        let line = assert_one_sentence(&stderr);
        // "this process lacks X, which ...; run it as root or grant <all three>"
        let lacks = line.split(';').next().unwrap_or_default();
        let named = format!("CAP_{}", missing.to_uppercase());
        assert!(lacks.contains(&format!("lacks {named},")), "without {missing}: {line}");
        for other in caps.iter().filter(|c| **c != missing) {
            let other = format!("CAP_{}", other.to_uppercase());
            assert!(!lacks.contains(&other), "without {missing}, {other} is named too: {line}");
        }
    }
}

/// Not root, as the DaemonSet runs it (file capabilities on the binary): tracefs is
/// root's only here, so CAP_DAC_READ_SEARCH is needed too, and the pin directory must be
/// the agent's user's. Each lack is one sentence naming it.
#[test]
fn not_root_it_names_dac_read_search_and_the_pin_directory() {
    let user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"];
    let (_image, three) = cellwatch_tests::with_file_caps("cap_bpf,cap_perfmon,cap_net_admin+ep");
    let pins = Pins::new();
    let (code, stderr) = run_fails_as(AgentOpts {
        wrapper: &user,
        bin: Some(&three),
        pins: Some(&pins),
        ..AgentOpts::default()
    });
    assert_eq!(code, 1, "{stderr}");
    let line = assert_one_sentence(&stderr);
    assert!(line.contains("uid 65534 without CAP_DAC_READ_SEARCH"), "{line}");

    let (_image, four) =
        cellwatch_tests::with_file_caps("cap_bpf,cap_perfmon,cap_net_admin,cap_dac_read_search+ep");
    let made = Command::new("install").args(["-d", "-m", "0700", pins.path()]).status();
    assert!(made.is_ok_and(|s| s.success()));
    let (code, stderr) = run_fails_as(AgentOpts {
        wrapper: &user,
        bin: Some(&four),
        pins: Some(&pins),
        ..AgentOpts::default()
    });
    assert_eq!(code, 1, "{stderr}");
    let line = assert_one_sentence(&stderr);
    assert!(line.contains(&format!("cannot create the pin directory {}", pins.path())), "{line}");
    assert!(line.contains("as uid 65534") && line.contains("init container"), "{line}");
}

#[test]
fn without_btf_it_says_so() {
    let w = in_mount_ns("mount -t tmpfs none /sys/kernel/btf");
    let (code, stderr) = run_fails(&refs(&w));
    assert_eq!(code, 1, "{stderr}");
    let line = assert_one_sentence(&stderr);
    assert!(line.contains("no BTF") && line.contains("CONFIG_DEBUG_INFO_BTF"), "{line}");
}

#[test]
fn an_unmounted_tracefs_is_mounted() {
    let w = in_mount_ns(
        "(umount /sys/kernel/tracing 2>/dev/null; true) && ! mountpoint -q /sys/kernel/tracing",
    );
    let mut agent = Agent::start(AgentOpts { wrapper: &refs(&w), ..AgentOpts::default() });
    assert!(agent.stderr().contains("mounted tracefs"), "{}", agent.stderr());
    assert!(agent.stop().success());
}

#[test]
fn tracefs_that_cannot_be_mounted_is_one_sentence() {
    // Root without CAP_SYS_ADMIN: may load eBPF, may not mount.
    let w = in_mount_ns(
        "(umount /sys/kernel/tracing 2>/dev/null; true) && exec setpriv --bounding-set=-sys_admin --inh-caps=-sys_admin \"$0\" \"$@\" ; false",
    );
    let (code, stderr) = run_fails(&refs(&w));
    assert_eq!(code, 1, "{stderr}");
    let line = assert_one_sentence(&stderr);
    assert!(line.contains("tracefs is not mounted at /sys/kernel/tracing"), "{line}");
    assert!(line.contains("mount -t tracefs"), "{line}");
}

#[test]
fn without_cgroup2_it_says_so() {
    let w = in_mount_ns(
        "for m in $(awk '$3==\"cgroup2\"{print $2}' /proc/self/mounts); do umount \"$m\"; done; true",
    );
    let (code, stderr) = run_fails(&refs(&w));
    assert_eq!(code, 1, "{stderr}");
    let line = assert_one_sentence(&stderr);
    assert!(line.contains("no cgroup v2 hierarchy is mounted"), "{line}");
}

#[test]
fn an_unmounted_bpffs_is_mounted() {
    // Every bpffs at /sys/fs/bpf goes (some hosts stack one over a sysfs there); what is
    // left is no bpffs.
    let w = in_mount_ns(
        "while [ \"$(stat -f -c %T /sys/fs/bpf)\" = bpf_fs ]; do umount /sys/fs/bpf || exit 1; done",
    );
    let mut agent = Agent::start(AgentOpts { wrapper: &refs(&w), ..AgentOpts::default() });
    assert!(agent.stderr().contains("mounted the bpf filesystem"), "{}", agent.stderr());
    assert!(agent.stop().success());
}

#[test]
fn a_port_in_use_is_one_sentence() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let pins = Pins::new();
    let (status, _, stderr) = cellwatch(&[], &["run", "--listen", &addr, "--bpffs", pins.path()]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    let line = assert_one_sentence(&stderr);
    assert!(line.contains(&format!("{addr} is already in use")), "{line}");
}

/// Ids of the eBPF programs process `pid` holds, from its fdinfo.
fn bpftool(args: &[&str]) -> (bool, String) {
    let out =
        Command::new("bpftool").args(args).output().expect("bpftool (run `cargo xtask setup`)");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn sigterm_exits_zero_leaves_the_programs_pinned_and_uninstall_removes_them() {
    let pins = Pins::new();
    let mut agent = Agent::start(AgentOpts { pins: Some(&pins), ..AgentOpts::default() });
    for path in ["/healthz", "/readyz"] {
        assert_eq!(http_get(agent.port, path).unwrap().0, 200, "{path}");
    }
    assert_eq!(http_get(agent.port, "/nope").unwrap().0, 404);
    let ids = prog_ids_of(agent.pid());
    let sockops = |ids: &[u32]| -> Vec<u32> {
        let (_, attached) = bpftool(&["cgroup", "show", &cgroup2_root()]);
        ids.iter()
            .copied()
            .filter(|id| {
                attached.lines().any(|l| {
                    l.split_whitespace().next() == Some(&id.to_string()) && l.contains("sock_ops")
                })
            })
            .collect()
    };
    assert_eq!(sockops(&ids).len(), 1, "one sock_ops program of the agent on the cgroup root");
    let m = agent.metrics();
    let udp = m.get("cellwatch_kernel_feature", &[("feature", "udp")]) == 1.0;
    assert_eq!(m.0.keys().filter(|k| k.starts_with("cellwatch_build_info{")).count(), 1);
    assert_eq!(m.get("cellwatch_start_info", &[("pinned_state", "fresh")]), 1.0);
    let status = agent.stop();
    assert!(status.success(), "exit status {status}:\n{}", agent.stderr());
    assert!(agent.stderr().contains("its programs stay attached"), "{}", agent.stderr());
    let links = std::fs::read_dir(pins.0.join("links")).unwrap().count();
    // connect4, connect6 and sock_ops, and the two UDP programs where the kernel takes
    // them; the destroy tracepoint only while connections older than the agent are open
    // (none here).
    assert_eq!(links, 3 + 2 * usize::from(udp), "a pinned link per program on a hook");
    assert_eq!(sockops(&ids).len(), 1, "sock_ops stays on the cgroup root with no agent");

    let (status, out, err) = cellwatch(&[], &["uninstall", "--bpffs", pins.path()]);
    assert!(status.success(), "{err}");
    assert!(out.starts_with("removed ") && out.contains("pinned objects"), "{out}");
    assert!(!pins.0.exists(), "the pin directory is gone");
    cellwatch_tests::assert_unloaded(&ids, "uninstall");
    let (status, out, _) = cellwatch(&[], &["uninstall", "--bpffs", pins.path()]);
    assert!(status.success() && out.contains("nothing to uninstall"), "{out}");
}

#[test]
fn uninstall_with_nothing_pinned_exits_zero() {
    let dir = format!("/sys/fs/bpf/cellwatch-test-{}", std::process::id());
    let (status, out, err) = cellwatch(&[], &["uninstall", "--bpffs", &dir]);
    assert!(status.success(), "{err}");
    assert!(out.contains("nothing to uninstall"), "{out}");
}

#[test]
fn uninstall_refuses_a_directory_that_is_not_bpffs_and_removes_nothing() {
    let dir = TempDir::new("not-bpffs");
    let kept = dir.write("precious.txt", "keep me");
    let (status, _, err) = cellwatch(&[], &["uninstall", "--bpffs", dir.0.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert_one_sentence(&err);
    assert!(err.contains("not a bpf filesystem"), "{err}");
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "keep me");
}

/// A pin directory the agent made and left (SIGTERM): its maps and links.
fn left_pins() -> (Pins, Vec<u32>) {
    let pins = Pins::new();
    let mut agent = Agent::start(AgentOpts { pins: Some(&pins), ..AgentOpts::default() });
    let ids = prog_ids_of(agent.pid());
    assert!(agent.stop().success(), "{}", agent.stderr());
    (pins, ids)
}

/// The pins under a directory, by relative path.
fn pinned(dir: &std::path::Path) -> Vec<String> {
    let mut all = Vec::new();
    for sub in ["maps", "links"] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap().flatten() {
            all.push(format!("{sub}/{}", e.file_name().to_string_lossy()));
        }
    }
    all.sort();
    all
}

/// A symbolic link planted among the pins (the pin directory is the agent's user's, so a
/// compromised agent could plant one) is never followed: uninstall refuses in one
/// sentence and removes nothing, neither the link's target nor the pins; without the
/// link it removes everything.
#[test]
fn uninstall_follows_no_symlink_and_removes_nothing_beside_one() {
    let (pins, ids) = left_pins();
    let scratch = TempDir::new("symlink-target");
    let precious = scratch.write("precious.txt", "keep me");
    for planted in ["maps/x", "links/cellwatch_sockops_next", "x"] {
        let link = pins.0.join(planted);
        std::os::unix::fs::symlink(&scratch.0, &link).unwrap();
        let before = pinned(&pins.0);
        let (status, out, err) = cellwatch(&[], &["uninstall", "--bpffs", pins.path()]);
        assert_eq!(status.code(), Some(1), "{planted}: {out}{err}");
        assert_one_sentence(&err);
        assert!(err.contains("symbolic link") && err.contains("nothing was removed"), "{err}");
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me", "{planted}");
        assert_eq!(pinned(&pins.0), before, "{planted}: the pins are all there");
        std::fs::remove_file(&link).unwrap();
    }
    // The pin directory itself given as a link to it: refused too.
    let alias = std::path::PathBuf::from(format!("{}-alias", pins.path()));
    std::os::unix::fs::symlink(&pins.0, &alias).unwrap();
    let (status, _, err) = cellwatch(&[], &["uninstall", "--bpffs", alias.to_str().unwrap()]);
    std::fs::remove_file(&alias).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    let (status, out, err) = cellwatch(&[], &["uninstall", "--bpffs", pins.path()]);
    assert!(status.success(), "{err}");
    assert!(out.starts_with("removed "), "{out}");
    assert!(!pins.0.exists());
    cellwatch_tests::assert_unloaded(&ids, "uninstall");
}

/// What is not the agent's is never removed: another tool's entry in the pin directory
/// (here a directory, as bpftool makes them), the bpf filesystem's root (where other
/// tools pin), or that root reached through `..`.
#[test]
fn uninstall_removes_only_what_cellwatch_pins() {
    let (pins, ids) = left_pins();
    let other = pins.0.join("links/other-tool");
    std::fs::create_dir(&other).unwrap();
    let before = pinned(&pins.0);
    let (status, _, err) = cellwatch(&[], &["uninstall", "--bpffs", pins.path()]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert_one_sentence(&err);
    assert!(err.contains("other-tool") && err.contains("not something cellwatch pins"), "{err}");
    assert_eq!(pinned(&pins.0), before);
    std::fs::remove_dir(&other).unwrap();
    // Its layout record must be the BPF map it keeps: a link pinned under that name
    // (renamed there, as a compromised agent could) makes the directory not cellwatch's.
    // (META waits under a name of an earlier layout, which uninstall accepts.)
    let (meta, kept) = (pins.0.join("maps/META"), pins.0.join("maps/CONNS"));
    std::fs::rename(&meta, &kept).unwrap_or_else(|e| panic!("rename META: {e}"));
    std::fs::rename(pins.0.join("links/cellwatch_connect4"), &meta).unwrap();
    let (status, _, err) = cellwatch(&[], &["uninstall", "--bpffs", pins.path()]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("not the BPF map cellwatch keeps its layout in"), "{err}");
    std::fs::rename(&meta, pins.0.join("links/cellwatch_connect4")).unwrap();
    std::fs::rename(&kept, &meta).unwrap();
    let before = pinned(&pins.0);
    for root in ["/sys/fs/bpf".to_owned(), format!("{}/..", pins.path())] {
        let (status, _, err) = cellwatch(&[], &["uninstall", "--bpffs", &root]);
        assert_eq!(status.code(), Some(1), "{root}: {err}");
        assert_one_sentence(&err);
        assert!(err.contains("root of a bpf filesystem"), "{root}: {err}");
        assert_eq!(pinned(&pins.0), before, "{root}");
    }
    let (status, _, err) = cellwatch(&[], &["uninstall", "--bpffs", pins.path()]);
    assert!(status.success(), "{err}");
    cellwatch_tests::assert_unloaded(&ids, "uninstall");
}

#[test]
fn check_config_summarises_or_locates() {
    let dir = TempDir::new("check");
    let good = dir.write(
        "good.yaml",
        "cells:\n  - name: global\n    global: true\n    cidrs: [10.0.0.0/16]\n  - name: c1\n    cidrs: [10.1.0.0/16, \"fd00:1::/48\"]\nallow:\n  - { from: c1, to: global, ports: [443] }\n",
    );
    let (status, out, err) = cellwatch(&[], &["check-config", good.to_str().unwrap()]);
    assert!(status.success(), "{err}");
    assert!(
        out.contains("ok: 2 cells (global: global), 3 prefixes (2 IPv4, 1 IPv6), 1 allow rules"),
        "{out}"
    );
    let bad = dir.write("bad.yaml", "cells:\n  - name: c1\n    cidrs: [10.1.0.0/16]\n  - name: c2\n    cidrs: [10.1.0.0/16]\nmode: loud\n");
    let (status, _, err) = cellwatch(&[], &["check-config", bad.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "{err}");
    let p = bad.display();
    assert!(err.contains(&format!("{p}:5:13: prefix 10.1.0.0/16 is in two cells")), "{err}");
    assert!(err.contains(&format!("{p}:6:7: unknown `mode` value `loud`")), "{err}");
    // Every line is FILE:LINE:COL: problem, the first one too.
    assert!(err.lines().all(|l| l.starts_with(&format!("{p}:"))), "{err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn a_bad_config_stops_run_before_loading() {
    let dir = TempDir::new("badrun");
    let bad = dir.write("bad.yaml", "cells:\n  - name: Bad_Name\n");
    let listen = format!("127.0.0.1:{}", free_port());
    let (status, _, err) =
        cellwatch(&[], &["run", "--config", bad.to_str().unwrap(), "--listen", &listen]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains(":2:11: invalid cell name `Bad_Name`"), "{err}");
}

#[test]
fn a_50_mb_config_is_refused_located() {
    let dir = TempDir::new("huge");
    let path = dir.0.join("huge.yaml");
    let line = "  - name: cell\n    cidrs: [10.0.0.0/8]\n";
    let mut text = String::from("cells:\n");
    while text.len() < 50 * 1024 * 1024 {
        text.push_str(line);
    }
    std::fs::write(&path, &text).unwrap();
    let (status, _, err) = cellwatch(&[], &["check-config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.starts_with(&format!(
            "{}:1:1: the config file is {} bytes",
            path.display(),
            text.len()
        )),
        "{err}"
    );
    assert!(!err.contains("panicked"));
}

/// A config path that is a FIFO (or a device) is refused at once, never read until a
/// writer comes: `check-config` and `run` say so in one sentence and exit 2.
#[test]
fn a_config_that_is_not_a_regular_file_is_refused_at_once() {
    let dir = TempDir::new("fifo");
    let fifo = dir.0.join("cells.yaml");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let t = std::time::Instant::now();
    let (status, _, err) = cellwatch(&[], &["check-config", fifo.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "{err}");
    // check-config's lines name the file first.
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with(&format!("{}: ", fifo.display())), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    let (status, _, err) = cellwatch(&[], &["run", "--config", fifo.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert_one_sentence(&err);
    assert!(err.contains("not a regular file"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
}
