//! Alerts delivered for real: a real Prometheus (Debian's `prometheus`) evaluating a rule
//! file every second and sending its alerts to a real Alertmanager (Debian's
//! `prometheus-alertmanager`), which notifies the webhook the harness serves on loopback.
//! The harness's own check needs no agent: a rule that fires for 10 s of every 20 s
//! arrives firing, with its labels and annotations, then resolved.
use std::time::Duration;

use cellwatch_tests::{
    TempDir,
    alertmanager::{Alertmanager, alerts_in},
    prometheus::{PromOpts, Prometheus},
};

/// An alert of its own, on Prometheus' clock alone: firing in the first 10 s of every
/// 20 s.
const RULES: &str = "groups:
  - name: harness
    rules:
      - alert: HarnessBlink
        expr: (vector(time()) % 20) < 10
        labels:
          severity: info
        annotations:
          summary: \"The harness blinks\"
          runbook: docs/alerts.md#harnessblink
";

#[test]
fn an_alert_reaches_the_webhook_firing_then_resolved() {
    let am = Alertmanager::start();
    let dir = TempDir::new("alerting");
    let rules = dir.write("rules.yaml", RULES);
    let prom =
        Prometheus::start_alerting(PromOpts { rules: Some(&rules), ..PromOpts::default() }, &am);
    let (i, firing) = am.wait_for_alert(0, "HarnessBlink", "firing", Duration::from_secs(60));
    assert_eq!(firing["labels"]["severity"], "info", "{firing}");
    assert_eq!(firing["annotations"]["summary"], "The harness blinks", "{firing}");
    assert_eq!(firing["annotations"]["runbook"], "docs/alerts.md#harnessblink", "{firing}");
    // Its resolution follows, for the same alert (the same start).
    let (j, resolved) =
        am.wait_for_alert(i + 1, "HarnessBlink", "resolved", Duration::from_secs(60));
    assert_eq!(resolved["labels"], firing["labels"], "{resolved}");
    assert_eq!(resolved["startsAt"], firing["startsAt"], "{resolved}");
    // Each notification is one alert's (every label set a group of its own), to the
    // test's receiver.
    let got = am.notifications();
    for n in &got[..=j] {
        assert_eq!(n["receiver"], "webhook", "{n}");
        assert_eq!(n["alerts"].as_array().map(Vec::len), Some(1), "{n}");
    }
    assert!(alerts_in(&got[j], "HarnessBlink", "firing").is_empty());
    drop(prom);
}
