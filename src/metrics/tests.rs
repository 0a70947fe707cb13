use super::*;

#[test]
fn lag_follows_watermark_and_commits_and_revokes_clear_it() {
    let r = Registry::new();
    let m = Metrics::new(&r).unwrap();
    let tp = TopicPartition::new("t", 0);
    m.partition_stats(&tp, 100, 40, -1, 0);
    assert_eq!(
        m.lag_committed.with_label_values(&["t", "0"]).get(),
        100,
        "from the log start before any commit"
    );
    assert_eq!(m.lag_consumed.with_label_values(&["t", "0"]).get(), 60);
    m.committed(&[(tp.clone(), 30)]);
    assert_eq!(m.lag_committed.with_label_values(&["t", "0"]).get(), 70);
    m.partition_stats(&tp, 100, 100, 30, 0);
    m.committed(&[(tp.clone(), 100)]);
    assert_eq!(m.lag_committed.with_label_values(&["t", "0"]).get(), 0);
    assert_eq!(m.lag_consumed.with_label_values(&["t", "0"]).get(), 0);
    m.rebalance(false, &[tp]);
    let text = r
        .gather()
        .iter()
        .filter(|f| f.name() == "kafka_s3_sink_consumer_lag_committed")
        .map(|f| f.get_metric().len())
        .sum::<usize>();
    assert_eq!(text, 0, "revoked partitions lose their series");
}

#[test]
fn lag_summary_is_drained_only_when_every_owned_partition_is_committed_to_its_end() {
    let m = Metrics::unregistered();
    assert!(!m.lag_summary().drained(), "owning nothing is not drained");
    let (a, b) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1));
    m.rebalance(true, &[a.clone(), b.clone()]);
    m.partition_stats(&a, 10, -1, -1001, 0);
    let s = m.lag_summary();
    assert_eq!((s.partitions, s.known, s.committed_lag), (2, 1, 10));
    assert!(!s.drained(), "b's watermark is not reported yet");
    // An empty partition is drained without a commit.
    m.partition_stats(&b, 0, -1, -1001, 0);
    assert_eq!(m.lag_summary().committed_lag, 10);
    m.committed(&[(a.clone(), 10)]);
    assert!(m.lag_summary().drained());
    // New records: not drained any more.
    m.partition_stats(&a, 12, 10, 10, 0);
    assert_eq!(m.lag_summary().committed_lag, 2);
    m.rebalance(false, &[a]);
    assert_eq!(
        m.lag_summary(),
        LagSummary {
            partitions: 1,
            known: 1,
            committed_lag: 0
        }
    );
}
