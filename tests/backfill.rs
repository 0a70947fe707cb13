//! `run --until-drained` for backfills, through the binary against librdkafka's mock cluster and
//! the in-process S3 server: with no signal, the run stops by itself once every partition is
//! committed to its end, exits 0 with every record in S3, and logs its periodic `progress` line.

// The in-process S3 server (tests/support) and `demo` are the test kit (Cargo.toml).
#![cfg(feature = "test-kit")]

mod support;

use std::time::Duration;

use support::{
    gen_events, round_robin, unique_group, GenOptions, Kafka, OffsetReader, TestConfig, TestS3,
    BUCKET,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_drained_exits_once_every_partition_is_committed_to_its_end() {
    const TOPIC: &str = "backfill";
    const PARTITIONS: i32 = 3;
    const N: u64 = 900;
    let kafka = Kafka::start();
    kafka.create_topic(TOPIC, PARTITIONS);
    let s3 = TestS3::start().await;
    kafka
        .produce(
            TOPIC,
            round_robin(gen_events(&GenOptions::new(N)), PARTITIONS),
        )
        .await;
    let ends = kafka.end_offsets(TOPIC, PARTITIONS).await;
    let group = unique_group("backfill");
    let mut cfg = TestConfig::new(&kafka.brokers(), &group, &[TOPIC], &s3.endpoint());
    cfg.set("http.enabled", false)
        .dest(0, "batch.max_records", 200);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sink.toml");
    std::fs::write(&path, cfg.toml()).unwrap();

    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_kafka-s3-sink"))
        .args(["run", "--until-drained", "--progress-secs", "1", "--config"])
        .arg(&path)
        .env("KAFKA_S3_SINK_LOG", "info")
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("run --until-drained stopped by itself")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    for l in stderr
        .lines()
        .filter(|l| l.contains("progress") || l.contains("drained"))
    {
        eprintln!("{l}");
    }
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("drained: every assigned partition is committed to its high watermark"),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(" progress ") && l.contains("committed_lag=")),
        "{stderr}"
    );

    let reader = OffsetReader::new(&kafka.brokers(), &group, TOPIC, PARTITIONS);
    assert_eq!(reader.committed().await, ends);
    reader.close().await;
    let stored: usize = s3.objects(BUCKET).iter().map(|o| o.lines().len()).sum();
    assert_eq!(
        stored as u64, N,
        "every record is in S3, as a line or an envelope"
    );
    s3.stop().await;
}
