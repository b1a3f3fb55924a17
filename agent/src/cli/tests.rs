//! Unit tests of `cli`.

use super::*;

#[test]
fn udp_idles() {
    assert_eq!(udp_idle("60s"), Ok(Duration::from_secs(60)));
    assert_eq!(udp_idle("5m"), Ok(Duration::from_secs(300)));
    assert!(udp_idle("500ms").unwrap_err().contains("whole number"));
    assert!(udp_idle("2h").unwrap_err().contains("1s to 1h"));
    assert!(udp_idle("soon").unwrap_err().contains("not a duration"));
}

#[test]
fn live_intervals() {
    assert_eq!(live_interval("5s"), Ok(Duration::from_secs(5)));
    assert_eq!(live_interval("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(live_interval("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(live_interval("7"), Ok(Duration::from_secs(7)));
    assert!(live_interval("50ms").unwrap_err().contains("outside"));
    assert_eq!(live_interval("1h"), Ok(Duration::from_secs(3600)));
    assert!(live_interval("2h").unwrap_err().contains("outside"));
    assert!(live_interval("2d").unwrap_err().contains("unknown unit"));
    assert!(live_interval("fast").unwrap_err().contains("not a duration"));
}

#[test]
fn drain_status_takes_a_cell_name_and_a_window() {
    let parse = |args: &[&str]| {
        let mut all = vec!["cellwatch", "drain-status"];
        all.extend(args);
        Cli::try_parse_from(all)
    };
    let cli = parse(&["cell-b", "--prometheus", "http://p:9090"]).unwrap();
    let Command::DrainStatus(a) = cli.command else { panic!("{cli:?}") };
    assert_eq!((a.cell.as_str(), a.prometheus.as_str()), ("cell-b", "http://p:9090"));
    assert_eq!((a.window.seconds(), a.format), (300, DrainFormat::Text));
    let cli = parse(&["b", "--prometheus", "p", "--window", "1h", "--format", "json"]).unwrap();
    let Command::DrainStatus(a) = cli.command else { panic!("{cli:?}") };
    assert_eq!((a.window.seconds(), a.format), (3600, DrainFormat::Json));
    // A name that could break out of the PromQL string, a bad window, no URL: usage errors
    // (exit 2).
    for bad in [
        &["cell-b\"} or vector(1) #", "--prometheus", "p"][..],
        &["cell-b", "--prometheus", "p", "--window", "30"],
        &["cell-b"],
    ] {
        let e = parse(bad).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
    }
}
