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
