//! Topic subscriptions by pattern against librdkafka's mock cluster and the in-process S3
//! server: `kafka.topics = ["^ev-.*"]` subscribes to every matching topic, each record lands in
//! S3 under its own topic, and a topic the pattern does not match is never read.

// The in-process S3 server (tests/support) and `demo` are the test kit (Cargo.toml).
#![cfg(feature = "test-kit")]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::{
    gen_events, round_robin, start_pipeline, unique_group, GenOptions, Kafka, TestConfig, TestS3,
    BUCKET,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_subscribes_to_every_matching_topic() {
    let kafka = Kafka::start();
    kafka.create_topic("ev-a", 2);
    kafka.create_topic("ev-b", 1);
    kafka.create_topic("other", 1);
    let s3 = TestS3::start().await;
    let events = gen_events(&GenOptions::new(900));
    let mut chunks = events.chunks(300).map(<[Vec<u8>]>::to_vec);
    let (a, b, other) = (
        chunks.next().unwrap(),
        chunks.next().unwrap(),
        chunks.next().unwrap(),
    );
    kafka.produce("ev-a", round_robin(a, 2)).await;
    kafka.produce("ev-b", round_robin(b, 1)).await;
    kafka.produce("other", round_robin(other, 1)).await;

    let group = unique_group("pattern");
    let mut cfg = TestConfig::new(&kafka.brokers(), &group, &["^ev-.*"], &s3.endpoint());
    cfg.dest(0, "batch.max_age_secs", 1)
        .dest(0, "batch.idle_secs", 1);
    let mut run = start_pipeline(cfg.build()).await;
    run.wait_committed_total(600, Duration::from_secs(60)).await;

    let mut per_topic: BTreeMap<String, usize> = BTreeMap::new();
    for o in s3.objects(BUCKET) {
        let name = o.key.rsplit('/').next().unwrap();
        let topic = name.split('+').next().unwrap().to_string();
        *per_topic.entry(topic).or_default() += o.lines().len();
    }
    assert_eq!(
        per_topic,
        BTreeMap::from([("ev-a".to_string(), 300), ("ev-b".to_string(), 300)]),
        "every record of the matching topics, none of `other`"
    );
    let stats = run.stop().await;
    assert_eq!(stats.records_in, 600);
    assert!(stats.committed.keys().all(|tp| tp.topic.starts_with("ev-")));
    s3.stop().await;
}
