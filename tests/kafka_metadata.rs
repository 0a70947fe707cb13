//! Kafka metadata in the output (`kafka_metadata_field`), against librdkafka's mock cluster and
//! the in-process S3 server: every line carries its record's topic, partition, offset,
//! timestamp, key and headers in one added member, the rest of the line byte for byte as
//! produced, and `verify` recognises the lines as the records they hold.

// The in-process S3 server (tests/support) and `demo` are the test kit (Cargo.toml).
#![cfg(feature = "test-kit")]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use kafka_s3_sink::verify::{self, VerifyOptions};
use support::{
    gen_events, json_str, start_pipeline, unique_group, GenOptions, Kafka, Msg, TestConfig, TestS3,
    BUCKET,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_carry_their_kafka_coordinates_and_verify_matches_them() {
    const TOPIC: &str = "meta";
    const PARTITIONS: i32 = 2;
    let kafka = Kafka::start();
    kafka.create_topic(TOPIC, PARTITIONS);
    let s3 = TestS3::start().await;
    let group = unique_group("meta");
    let events = gen_events(&GenOptions::new(300));
    let msgs: Vec<Msg> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut m = Msg::new(i as i32 % PARTITIONS, e.clone());
            m.key = (i % 3 != 0).then(|| format!("user-{i}").into_bytes());
            m.timestamp_ms = Some(1_793_500_000_000 + i as i64);
            if i % 2 == 0 {
                m.headers = vec![
                    ("trace-id".into(), Some(format!("t{i}").into_bytes())),
                    ("bin".into(), Some(vec![0xff, i as u8])),
                    ("empty".into(), None),
                ];
            }
            m
        })
        .collect();
    let produced = kafka.produce(TOPIC, msgs.clone()).await;
    let by_id: HashMap<String, (&Msg, support::Produced)> = msgs
        .iter()
        .zip(produced.iter())
        .map(|(m, p)| {
            let id = json_str(m.value.as_deref().unwrap(), "messageId").unwrap();
            (id, (m, *p))
        })
        .collect();

    let mut cfg = TestConfig::new(&kafka.brokers(), &group, &[TOPIC], &s3.endpoint());
    cfg.dest(0, "kafka_metadata_field", "_kafka")
        .dest(0, "batch.max_records", 50);
    let mut run = start_pipeline(cfg.build()).await;
    run.wait_committed_total(300, Duration::from_secs(60)).await;
    run.stop().await;

    let mut lines = 0;
    for o in s3.objects(BUCKET) {
        for line in o.lines() {
            lines += 1;
            let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
            let id = v["messageId"].as_str().unwrap();
            let (m, p) = by_id[id];
            let k = &v["_kafka"];
            assert_eq!(k["topic"], TOPIC);
            assert_eq!(k["partition"].as_i64(), Some(i64::from(p.partition)));
            assert_eq!(k["offset"].as_i64(), Some(p.offset));
            assert_eq!(k["timestamp"].as_i64(), m.timestamp_ms);
            match &m.key {
                Some(key) => assert_eq!(k["key"].as_str().unwrap().as_bytes(), &key[..]),
                None => assert!(k["key"].is_null()),
            }
            let headers = k["headers"].as_array().unwrap();
            assert_eq!(headers.len(), m.headers.len(), "{k}");
            if !m.headers.is_empty() {
                assert_eq!(headers[0]["key"], "trace-id");
                assert_eq!(
                    headers[0]["value"].as_str().unwrap().as_bytes(),
                    &m.headers[0].1.as_ref().unwrap()[..]
                );
                assert!(headers[1]["value_base64"].is_string(), "{k}");
                assert!(headers[2]["value"].is_null());
            }
            // The rest of the line is the record as produced, byte for byte.
            let cut = line
                .windows(10)
                .rposition(|w| w == b",\"_kafka\":")
                .expect("the member is added last");
            let original = m.value.as_deref().unwrap();
            assert_eq!(&line[..cut], &original[..original.len() - 1]);
        }
    }
    assert_eq!(lines, 300);

    let report = verify::run(&cfg.build(), &VerifyOptions::default())
        .await
        .expect("verify runs");
    eprintln!("{}", report.to_text());
    assert_eq!(
        (
            report.expected,
            report.found,
            report.missing,
            report.duplicated
        ),
        (300, 300, 0, 0)
    );
    s3.stop().await;
}
