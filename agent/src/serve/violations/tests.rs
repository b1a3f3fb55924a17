//! Unit tests of `violations`.

use super::*;

#[test]
fn the_log_bucket_lets_a_burst_through_then_its_rate_and_counts_the_rest() {
    let t0 = Instant::now();
    let mut b = LogBucket::new(t0);
    let burst = (0..1000).filter(|_| b.take(t0).is_some()).count();
    assert_eq!(burst, 100);
    // One second later: 20 more, the first of which says what was held back.
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(b.take(t1), Some(900));
    let more = (0..100).filter(|_| b.take(t1).is_some()).count();
    assert_eq!(more, 19);
}

#[test]
fn recent_keeps_the_newest() {
    let r = Recent::default();
    let v = |port| Violation {
        time: 0.0,
        src: End { cell: "a".into(), addr: IpAddr::from([127, 0, 0, 1]), port },
        dst: End { cell: "b".into(), addr: IpAddr::from([127, 0, 0, 1]), port: 1 },
        direction: "egress",
        pid: None,
        comm: None,
        cgroup_id: None,
        cgroup: None,
        container_id: None,
        pod_uid: None,
        cookie: 0,
        denied: false,
    };
    for p in 0..1034 {
        r.push(v(p));
    }
    let latest = r.latest(3);
    assert_eq!(latest.iter().map(|v| v.src.port).collect::<Vec<_>>(), vec![1033, 1032, 1031]);
    assert_eq!(r.latest(usize::MAX).len(), RECENT);
    assert_eq!(RECENT, 1024, "the ports above count on it");
}

#[test]
fn undecodable_records_are_counted_and_good_ones_kept() {
    use agent_common::ViolationEvent;
    let r = Recent::default();
    let ids = RwLock::new(CellIds::default());
    let cgroups = Workloads::new("/nonexistent".into());
    r.ingest(&[0u8; 95], &ids, &cgroups);
    r.ingest(&[], &ids, &cgroups);
    assert_eq!((r.undecodable(), r.latest(10).len()), (2, 0));
    r.ingest(&[0u8; size_of::<ViolationEvent>()], &ids, &cgroups);
    assert_eq!((r.undecodable(), r.latest(10).len()), (2, 1));
}
