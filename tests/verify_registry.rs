//! `verify` on a destination that reads the Confluent wire format: the pipeline writes Avro
//! records (two schema versions, one whose union branch only the window reader reads, and one
//! record for each decoding quarantine: `not_framed`, `unknown_schema`, `undecodable`) through the mock cluster, the test kit's Schema Registry and
//! the in-process S3 server; `verify` must find every record as its decoded line or its
//! envelope, fetching each schema once, must notice a deleted data object and a deleted
//! `undecodable` envelope, and must stop with exit 4 (no verdict) while the registry is down. A
//! Parquet destination of decoded records is matched by its rows' offsets and raw column.

// The in-process S3 server and the registry server are the test kit.
#![cfg(feature = "test-kit")]

mod support;

use std::time::Duration;

use kafka_s3_sink::config::Config;
use kafka_s3_sink::schema_server::SchemaServer;
use kafka_s3_sink::verify::{self, VerifyError, VerifyOptions, VerifyReport};
use serde_json::json;
use support::{
    framed, order, servers, start_pipeline, unique_group, verify_binary, Kafka, Msg, OffsetReader,
    Produced, TestConfig, TestS3, BUCKET, GROUP_DEADLINE, ORDER_V1, ORDER_V2,
};

const PARTITIONS: i32 = 2;
const ERRORS: &str = "_errors/";

/// A topic of Avro orders written to S3 by the real pipeline.
struct Written {
    /// Kept alive: the mock cluster stops when dropped.
    _kafka: Kafka,
    s3: TestS3,
    registry: SchemaServer,
    cfg: TestConfig,
    /// Where the orders landed, then the three records the decoding quarantines.
    produced: Vec<Produced>,
}

impl Written {
    fn config(&self) -> Config {
        self.cfg.build()
    }

    fn total(&self) -> u64 {
        self.produced.len() as u64
    }

    /// Keys of the error objects holding envelopes of `reason`.
    fn error_keys(&self, reason: &str) -> Vec<String> {
        self.s3
            .objects(BUCKET)
            .into_iter()
            .filter(|o| o.key.starts_with(ERRORS))
            .filter(|o| {
                o.lines().iter().any(|l| {
                    serde_json::from_slice::<serde_json::Value>(l).unwrap()["reason"] == reason
                })
            })
            .map(|o| o.key)
            .collect()
    }

    fn remove(&self, key: &str) {
        std::fs::remove_file(self.s3.server.object_path(BUCKET, key)).unwrap();
    }
}

/// `orders` Avro orders (v1 then v2) round-robin over the partitions, then a value that is not
/// framed, one framed for an id the registry does not know and one cut short, drained by the
/// pipeline into files of at most 20 records.
async fn written(name: &str, orders: usize) -> Written {
    written_with(name, orders, |_| {}).await
}

/// [`written`] with the destination's settings changed by `settings`.
async fn written_with(
    name: &str,
    orders: usize,
    settings: impl FnOnce(&mut TestConfig),
) -> Written {
    let topic = format!("orders-{name}");
    let (kafka, s3, registry) = servers(&topic, PARTITIONS).await;
    let subject = format!("{topic}-value");
    let v1 = registry.register(&subject, "AVRO", ORDER_V1, json!([]));
    let v2 = registry.register(&subject, "AVRO", ORDER_V2, json!([]));
    let mut msgs: Vec<Msg> = (0..orders)
        .map(|i| {
            let late = i >= orders / 2;
            let value = order(i, if late { v2 } else { v1 }, late).0;
            Msg::new(i as i32 % PARTITIONS, value)
        })
        .collect();
    // A v1 order whose `note` union says branch 2 of 2, which apache-avro refuses and the
    // pipeline's window reader reads as the string: written, and verify must agree.
    let (mut lenient, _) = order(501, v1, false);
    let at = lenient.len() - "note 501".len() - 2;
    assert_eq!(lenient[at], 0x02, "the union's branch index");
    lenient[at] = 0x04;
    msgs.push(Msg::new(1, lenient));
    msgs.push(Msg::new(0, br#"{"messageId":"plain"}"#.to_vec()));
    msgs.push(Msg::new(1, framed(9999, b"\x02a")));
    let (whole, _) = order(500, v1, false);
    msgs.push(Msg::new(0, whole[..whole.len() - 4].to_vec()));
    let produced = kafka.produce(&topic, msgs).await;
    let ends = kafka.end_offsets(&topic, PARTITIONS).await;

    let group = unique_group(name);
    let mut cfg = TestConfig::new(&kafka.brokers(), &group, &[&topic], &s3.endpoint());
    cfg.set("kafka.schema_registry.url", registry.url())
        .dest(0, "value_format", "avro")
        .dest(0, "batch.max_records", 20);
    settings(&mut cfg);
    let mut run = start_pipeline(cfg.build()).await;
    run.wait_committed_total(produced.len() as i64, Duration::from_secs(60))
        .await;
    let reader = OffsetReader::new(&kafka.brokers(), &group, &topic, PARTITIONS);
    reader.wait_committed(&ends, GROUP_DEADLINE).await;
    let stats = run.stop().await;
    reader.close().await;
    assert_eq!(stats.records_written, orders as u64 + 1, "{stats:?}");
    assert_eq!(stats.records_quarantined, 3, "{stats:?}");
    Written {
        _kafka: kafka,
        s3,
        registry,
        cfg,
        produced,
    }
}

fn opts() -> VerifyOptions {
    VerifyOptions {
        max_memory_mb: 4,
        ..VerifyOptions::default()
    }
}

async fn verify_with(w: &Written, opts: VerifyOptions) -> VerifyReport {
    let report = verify::run(&w.config(), &opts)
        .await
        .unwrap_or_else(|e| panic!("verify failed: {e}"));
    eprintln!("{}", report.to_text());
    report
}

/// After a clean run every record is found once, the orders as their decoded lines and the
/// three quarantined records as their envelopes; each schema id is fetched once; the binary
/// agrees and exits 0. Then a deleted `undecodable` envelope and a deleted data object are
/// missing, with their offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_avro_destination_verifies_clean_and_deleted_records_are_missing() {
    let w = written("verify-avro", 80).await;
    let before = w.registry.requests();
    let r = verify_with(&w, opts()).await;
    assert_eq!(r.records, w.total());
    assert_eq!((r.expected, r.found, r.filtered), (w.total(), w.total(), 0));
    assert_eq!(
        (r.missing, r.duplicated, r.outside_range),
        (0, 0, 0),
        "{r:#?}"
    );
    assert_eq!(r.quarantined, 3);
    assert_eq!(r.unattributed + r.bad_envelopes + r.other_topics, 0);
    assert_eq!(
        w.registry.requests() - before,
        3,
        "v1, v2 and the unknown id, once each"
    );

    let (code, stdout, stderr, _) = verify_binary(&w.cfg.toml(), &[]).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert_eq!(stdout.lines().last().unwrap(), r.summary());

    // The record cut short was quarantined as undecodable; its envelope is its copy.
    let undecodable = w.error_keys("undecodable");
    assert_eq!(undecodable.len(), 1, "{undecodable:?}");
    w.remove(&undecodable[0]);
    let r = verify_with(&w, opts()).await;
    assert_eq!((r.missing, r.quarantined), (1, 2), "{r:#?}");
    let cut = w.produced.last().unwrap();
    assert_eq!(
        (
            r.missing_examples[0].partition,
            r.missing_examples[0].offset
        ),
        (cut.partition, cut.offset)
    );

    let data: Vec<_> =
        w.s3.objects(BUCKET)
            .into_iter()
            .filter(|o| !o.key.starts_with(ERRORS))
            .collect();
    let victim = &data[data.len() / 2];
    let lines = victim.lines().len() as u64;
    assert!(lines > 1);
    w.remove(&victim.key);
    let r = verify_with(&w, opts()).await;
    assert_eq!(r.missing, 1 + lines, "{r:#?}");
    assert_eq!(r.found, w.total() - 1 - lines);
    w.s3.stop().await;
}

/// With the registry down, `verify` retries each schema a bounded number of times, then stops
/// with the registry error (exit 4, one line, no report) instead of reporting records missing;
/// once the registry answers again the same bucket verifies clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_stops_verify_with_exit_4() {
    let w = written("verify-outage", 20).await;
    w.registry.set_down(true);
    let before = w.registry.requests();
    let attempts = 3;
    let err = verify::run(
        &w.config(),
        &VerifyOptions {
            registry_attempts: attempts,
            ..opts()
        },
    )
    .await
    .expect_err("verify passed with the registry down");
    assert!(
        matches!(err, VerifyError::Registry { attempts: 3, .. }),
        "{err}"
    );
    assert_eq!(err.exit_code(), 4);
    assert!(err.to_string().contains("HTTP 503"), "{err}");
    // One lookup retries at a time; once it gives up, the others fail without asking.
    assert_eq!(w.registry.requests() - before, u64::from(attempts));

    let (code, stdout, stderr, _) = verify_binary(&w.cfg.toml(), &[]).await;
    assert_eq!(code, Some(4), "{stdout}\n{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("Schema Registry"), "{stderr}");

    w.registry.set_down(false);
    let r = verify_with(&w, opts()).await;
    assert_eq!((r.found, r.missing), (w.total(), 0), "{r:#?}");
    w.s3.stop().await;
}

/// Parquet of decoded records: each row is matched by its offset and its raw column (the
/// decoded line), the quarantined records by their envelopes; a deleted file's rows are missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parquet_destination_of_decoded_records_verifies_by_its_rows() {
    let w = written_with("verify-parquet", 40, |cfg| {
        cfg.dest(0, "batch.format", "parquet")
            .dest(0, "parquet.raw_column", "raw")
            .dest(0, "kafka_metadata_field", "_kafka");
        let columns: toml::Value = toml::from_str::<toml::Table>(
            r#"c = [{ name = "message_id", path = "messageId", type = "string" }]"#,
        )
        .unwrap()["c"]
            .clone();
        cfg.dest(0, "parquet.columns", columns);
    })
    .await;
    let r = verify_with(&w, opts()).await;
    assert_eq!((r.expected, r.found), (w.total(), w.total()), "{r:#?}");
    assert_eq!((r.missing, r.duplicated, r.outside_range), (0, 0, 0));
    assert_eq!(r.quarantined, 3);
    assert!(r.unreadable.is_empty(), "{:?}", r.unreadable);

    let file =
        w.s3.keys(BUCKET)
            .into_iter()
            .find(|k| k.ends_with(".parquet"))
            .expect("a Parquet file");
    w.remove(&file);
    let r = verify_with(&w, opts()).await;
    assert!(r.missing > 0 && r.found + r.missing == w.total(), "{r:#?}");
    w.s3.stop().await;
}
