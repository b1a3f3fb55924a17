//! The shipped deployment: the kustomize base renders with `kubectl kustomize`, validates
//! strictly against the Kubernetes schemas (`kubernetes-validate`), its PrometheusRule is
//! the plain rule file, and its DaemonSet's arguments, config and capabilities are ones
//! the agent really runs with.
use std::{path::PathBuf, process::Command};

use cellwatch_tests::{Agent, Pins, Start, TempDir, cellwatch, cgroup2_root, http_get};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

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
    let dir = repo().join("deploy/kustomize");
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
    assert_eq!(alerts.len(), 8, "{alerts:?}");
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

    let c = &kind(&docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0];
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
    // Exactly the capabilities the DaemonSet adds, nothing else.
    let caps: Vec<String> = c["securityContext"]["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| format!("+{}", v.as_str().unwrap().to_lowercase()))
        .collect();
    let bounding = format!("--bounding-set=-all,{}", caps.join(","));
    // The pod gets bpffs and tracefs from hostPath mounts; have them here too.
    tool(
        "sh",
        &[
            "-c",
            "mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing; \
             mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf",
        ],
    );
    let wrapper = ["setpriv", bounding.as_str(), "--inh-caps=-all"];
    let arg_refs: Vec<&str> = run_args.iter().map(String::as_str).collect();
    let pins = Pins::new();
    let mut agent = Agent::start(Start {
        wrapper: &wrapper,
        args: &arg_refs,
        pins: Some(&pins),
        ..Start::default()
    });
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let eff = status.lines().find(|l| l.starts_with("CapEff:")).unwrap().to_owned();
    // CAP_NET_ADMIN (12), CAP_PERFMON (38), CAP_BPF (39).
    assert!(eff.ends_with("000000c000001000"), "capabilities: {eff}");
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(http_get(agent.port, probe).unwrap().0, 200, "{probe}");
    }
    let m = agent.metrics();
    assert_eq!(m.get("cellwatch_config_reloads_total", &[("result", "error")]), 0.0);
    assert!(
        agent.stderr().lines().all(|l| l.starts_with('{')),
        "--log-format=json:\n{}",
        agent.stderr()
    );
    assert!(agent.stop().success(), "{}", agent.stderr());
}
