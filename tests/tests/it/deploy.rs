//! The shipped deployment: the kustomize base renders with `kubectl kustomize`, validates
//! strictly against the Kubernetes schemas (`kubernetes-validate`), its PrometheusRule is
//! the plain rule file, and its DaemonSet's arguments, config and capabilities are ones
//! the agent really runs with.
use std::{os::unix::fs::PermissionsExt, process::Command};

use cellwatch_tests::{
    Agent, AgentOpts, Pins, TempDir, cellwatch, cgroup2_root, http_get, prometheus::repo,
};
use serde_json::Value;

/// Runs a tool the test needs; panics (never skips) when it is missing or fails.
fn tool(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} is needed (run `cargo xtask setup`): {e}"));
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd} {args:?} failed: {}\n{stdout}\n{stderr}", out.status);
    format!("{stdout}{stderr}")
}

fn render() -> (String, Vec<Value>) {
    render_dir("deploy/kustomize")
}

/// A kustomize directory of the repository, rendered: the text and each document.
fn render_dir(rel: &str) -> (String, Vec<Value>) {
    let dir = repo().join(rel);
    let text = tool("kubectl", &["kustomize", dir.to_str().unwrap()]);
    let docs = text
        .split("\n---\n")
        .map(|d| serde_saphyr::from_str::<Value>(d).unwrap_or_else(|e| panic!("{e}\n{d}")))
        .collect();
    (text, docs)
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind} rendered"))
}

#[test]
fn the_base_renders_and_validates_strictly() {
    let (text, docs) = render();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for k in ["Namespace", "ConfigMap", "Service", "DaemonSet", "ServiceMonitor", "PrometheusRule"]
    {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    let dir = TempDir::new("deploy");
    let file = dir.write("rendered.yaml", &text);
    let report = tool("kubernetes-validate", &["--strict", file.to_str().unwrap()]);
    for k in ["namespace", "configmap", "service", "daemonset"] {
        assert!(report.contains(&format!("passed for resource {k}/")), "{k}:\n{report}");
    }
    assert!(!report.contains("ERROR") && !report.contains("FAIL"), "{report}");
    // The CRD kinds have no schema offline: their content is checked by the tests below.
    let ds = kind(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["tolerations"][0]["operator"], "Exists", "tolerates every node");
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    for m in ["/sys/fs/bpf", "/sys/kernel/tracing", "/host/sys/fs/cgroup", "/etc/cellwatch"] {
        assert!(mounts.contains(&m), "{m} not mounted: {mounts:?}");
    }
}

#[test]
fn the_prometheus_rule_is_the_plain_rule_file() {
    let (_, docs) = render();
    let rule = &kind(&docs, "PrometheusRule")["spec"];
    let plain = std::fs::read_to_string(repo().join("deploy/prometheus/cellwatch-rules.yaml"))
        .expect("rule file");
    let plain: Value = serde_saphyr::from_str(&plain).expect("rule file parses");
    assert_eq!(rule, &plain, "deploy/kustomize/prometheusrule.yaml differs from the rule file");
    // And the rule file is what promtool accepts, with its unit tests passing.
    let rules = repo().join("deploy/prometheus/cellwatch-rules.yaml");
    let out = tool("promtool", &["check", "rules", rules.to_str().unwrap()]);
    assert!(out.contains("SUCCESS"), "{out}");
    let tests = repo().join("deploy/prometheus/cellwatch-rules.test.yaml");
    let out = tool("promtool", &["test", "rules", tests.to_str().unwrap()]);
    assert!(out.contains("SUCCESS"), "{out}");
    let alerts = plain["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter_map(|r| r["alert"].as_str())
        .collect::<Vec<_>>();
    let test_text = std::fs::read_to_string(&tests).unwrap();
    let runbooks = std::fs::read_to_string(repo().join("docs/alerts.md")).expect("docs/alerts.md");
    for a in &alerts {
        assert!(test_text.contains(&format!("alertname: {a}")), "{a} has no promtool test");
        assert!(runbooks.contains(&format!("## {a}")), "{a} has no runbook in docs/alerts.md");
    }
    assert_eq!(alerts.len(), 13, "{alerts:?}");
}

/// The DaemonSet's own arguments, config and capability set start a real agent.
#[test]
fn the_daemonset_runs_the_agent_it_ships() {
    let (_, docs) = render();
    let cells =
        kind(&docs, "ConfigMap")["data"]["cells.yaml"].as_str().expect("cells.yaml").to_owned();
    let dir = TempDir::new("ds");
    let cfg = dir.write("cells.yaml", &cells);
    let (status, out, err) = cellwatch(&[], &["check-config", cfg.to_str().unwrap()]);
    assert!(status.success(), "the shipped cells.yaml is rejected: {out}{err}");

    let pod = &kind(&docs, "DaemonSet")["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let args: Vec<String> =
        c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
    assert_eq!(args[0], "run");
    assert!(args.contains(&"--listen=0.0.0.0:9473".to_owned()), "{args:?}");
    let cgroup = cgroup2_root();
    let mut run_args: Vec<String> = Vec::new();
    for a in &args[1..] {
        let (flag, value) = a.split_once('=').unwrap_or((a, ""));
        match flag {
            "--config" => run_args.push(format!("--config={}", cfg.display())),
            // The harness listens on a free loopback port instead.
            "--listen" => {}
            // In the pod the host's cgroup2 root is mounted here; on this machine it is
            // wherever the host has it.
            "--cgroup" => {
                assert_eq!(value, "/host/sys/fs/cgroup");
                run_args.push(format!("--cgroup={cgroup}"));
            }
            // The node's pin directory; the harness gives the test one of its own, so
            // nothing of the test's outlives it.
            "--bpffs" => assert_eq!(value, "/sys/fs/bpf/cellwatch"),
            _ => run_args.push(a.clone()),
        }
    }
    // The image: the binary with the Dockerfile's file capabilities, which are exactly
    // the ones the DaemonSet adds.
    let sc = &c["securityContext"];
    let added = |sc: &Value| -> Vec<String> {
        let list = sc["capabilities"]["add"].as_array().expect("capabilities.add");
        list.iter().map(|v| v.as_str().unwrap().to_lowercase()).collect()
    };
    let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let setcap = dockerfile
        .split_whitespace()
        .skip_while(|w| *w != "setcap")
        .nth(1)
        .expect("a setcap line in deploy/Dockerfile");
    let mut file_caps: Vec<String> = setcap
        .trim_end_matches("+ep")
        .split(',')
        .map(|c| c.trim_start_matches("cap_").to_owned())
        .collect();
    let mut caps = added(sc);
    file_caps.sort();
    caps.sort();
    assert_eq!(file_caps, caps, "the image's file capabilities are the DaemonSet's");
    assert!(dockerfile.contains("USER 10473:10473"), "the image runs as its own uid");
    assert!(
        dockerfile.contains("find / -xdev -type f -perm /6000 -exec chmod a-s {} +"),
        "the image keeps no setuid or setgid binary"
    );
    let (_image, bin) = cellwatch_tests::with_file_caps(setcap);

    // The pod gets bpffs and tracefs from hostPath mounts; have them here too.
    tool(
        "sh",
        &[
            "-c",
            "mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing; \
             mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf",
        ],
    );
    let bounding = |caps: &[String]| {
        let plus: Vec<String> = caps.iter().map(|c| format!("+{c}")).collect();
        format!("--bounding-set=-all,{}", plus.join(","))
    };
    // The init container, as root with its own capabilities only, on the test's pin
    // directory made root's and closed first (as a host's bpffs often is).
    let pins = Pins::new();
    tool("install", &["-d", "-m", "0700", pins.path()]);
    let init = &pod["initContainers"][0];
    assert_eq!(init["securityContext"]["runAsUser"], 0);
    let script = init["command"][2].as_str().expect("sh -c SCRIPT");
    let script = script.replace("/sys/fs/bpf/cellwatch", pins.path());
    let init_caps = bounding(&added(&init["securityContext"]));
    tool("setpriv", &[&init_caps, "--inh-caps=-all", "sh", "-c", &script]);

    // The container: its user and group, its bounding set, the image's binary.
    let (uid, gid) = (sc["runAsUser"].as_u64().unwrap(), sc["runAsGroup"].as_u64().unwrap());
    assert_eq!((uid, gid, &sc["runAsNonRoot"]), (10473, 10473, &Value::Bool(true)));
    // A seccomp profile on every container: the runtime's default.
    for c in
        pod["initContainers"].as_array().into_iter().chain(pod["containers"].as_array()).flatten()
    {
        assert_eq!(
            c["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{}",
            c["name"]
        );
    }
    let (reuid, regid) = (format!("--reuid={uid}"), format!("--regid={gid}"));
    let caps_bounding = bounding(&caps);
    let wrapper = ["setpriv", &reuid, &regid, "--clear-groups", &caps_bounding, "--inh-caps=-all"];
    let arg_refs: Vec<&str> = run_args.iter().map(String::as_str).collect();
    let start = || {
        Agent::start(AgentOpts {
            wrapper: &wrapper,
            args: &arg_refs,
            pins: Some(&pins),
            bin: Some(&bin),
            ..AgentOpts::default()
        })
    };
    let mut agent = start();
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let line = |key: &str| status.lines().find(|l| l.starts_with(key)).unwrap().to_owned();
    assert_eq!(line("Uid:").split_whitespace().nth(1), Some("10473"), "{}", line("Uid:"));
    // CAP_DAC_READ_SEARCH (2), CAP_NET_ADMIN (12), CAP_PERFMON (38), CAP_BPF (39).
    assert!(line("CapEff:").ends_with("000000c000001004"), "capabilities: {}", line("CapEff:"));
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(http_get(agent.port, probe).unwrap().0, 200, "{probe}");
    }
    let m = agent.metrics();
    assert_eq!(m.get("cellwatch_config_reloads_total", &[("result", "error")]), 0.0);
    assert_eq!(m.get("cellwatch_start_info", &[("pinned_state", "fresh")]), 1.0);
    assert!(
        agent.stderr().lines().all(|l| l.starts_with('{')),
        "--log-format=json:\n{}",
        agent.stderr()
    );
    assert!(agent.stop().success(), "{}", agent.stderr());
    // The pod restarted: the same user adopts what it pinned.
    let mut agent = start();
    let m = agent.metrics();
    assert_eq!(m.get("cellwatch_start_info", &[("pinned_state", "adopted")]), 1.0);
    let ids = cellwatch_tests::prog_ids_of(agent.pid());
    assert!(agent.stop().success(), "{}", agent.stderr());

    // The clean-up DaemonSet (deploy/uninstall), its init container's user, bounding set
    // and arguments, with the image's binary: the node is left with nothing of cellwatch.
    let (text, docs) = render_dir("deploy/uninstall");
    let dir = TempDir::new("deploy-uninstall");
    let file = dir.write("rendered.yaml", &text);
    let report = tool("kubernetes-validate", &["--strict", file.to_str().unwrap()]);
    assert!(report.contains("passed for resource daemonset/cellwatch-uninstall"), "{report}");
    let undo = &kind(&docs, "DaemonSet")["spec"]["template"]["spec"]["initContainers"][0];
    let usc = &undo["securityContext"];
    assert_eq!((usc["runAsUser"].as_u64(), usc["runAsGroup"].as_u64()), (Some(uid), Some(gid)));
    let undo_caps = bounding(&added(usc));
    let args: Vec<String> = undo["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().replace("/sys/fs/bpf/cellwatch", pins.path()))
        .collect();
    let mut argv = vec!["setpriv", &reuid, &regid, "--clear-groups", &undo_caps, "--inh-caps=-all"];
    argv.push(bin.to_str().unwrap());
    argv.extend(args.iter().map(String::as_str));
    // Whether the agent's user may remove the directory itself from the host's
    // root-owned bpffs depends on that root's mode (0700 on some hosts, 1777 on others):
    // writable by others, and, when sticky, the directory its own.
    let root_mode = std::fs::metadata(pins.0.parent().unwrap()).unwrap().permissions().mode();
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&pins.0).unwrap());
    let removable = root_mode & 0o002 != 0 && (root_mode & 0o1000 == 0 || u64::from(owner) == uid);
    let out = tool(argv[0], &argv[1..]);
    assert!(out.contains("removed ") && out.contains("pinned objects"), "{out}");
    if removable {
        assert!(!pins.0.exists(), "the pin directory stayed although it could go:\n{out}");
        assert!(!out.contains("the directory itself stays"), "{out}");
    } else {
        // It stays, empty, and says so.
        let left: Vec<_> =
            std::fs::read_dir(&pins.0).map(|d| d.flatten().collect()).unwrap_or_default();
        assert!(left.is_empty(), "left under the pin directory: {left:?}");
        assert!(out.contains("the directory itself stays, empty"), "{out}");
    }
    cellwatch_tests::assert_unloaded(&ids, "the clean-up DaemonSet's uninstall");
}

/// The Localhost seccomp profile shipped for runtimes whose default refuses bpf(): it
/// refuses what CAP_DAC_READ_SEARCH would open up across host mounts
/// (`open_by_handle_at`) and the like, and nothing the agent calls.
#[test]
fn the_seccomp_profile_refuses_handle_opens_and_allows_the_agents_calls() {
    let text = std::fs::read_to_string(repo().join("deploy/seccomp/cellwatch.json")).unwrap();
    let p: Value = serde_json::from_str(&text).expect("the profile is JSON");
    assert_eq!(p["defaultAction"], "SCMP_ACT_ALLOW");
    let rules = p["syscalls"].as_array().expect("syscalls");
    let denied: Vec<&str> = rules
        .iter()
        .filter(|r| r["action"] == "SCMP_ACT_ERRNO" && r["errnoRet"] == 1)
        .flat_map(|r| r["names"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    for call in ["open_by_handle_at", "name_to_handle_at", "init_module", "kexec_load", "ptrace"] {
        assert!(denied.contains(&call), "{call} is not refused");
    }
    for call in ["bpf", "perf_event_open", "setns", "socket", "sendmsg", "recvmsg"] {
        assert!(!denied.contains(&call), "{call}, which the agent needs, is refused");
    }
}
