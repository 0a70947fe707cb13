//! Object-store conflicts against the real parts (aws-sdk-s3 and the in-process S3 server):
//! a zombie worker's late upload can never remove the new owner's records, a lost answer is
//! recognised as our own write, and abandoned multipart uploads are aborted at start-up.

// The in-process S3 server (tests/support) and `demo` are the test kit (Cargo.toml).
#![cfg(feature = "test-kit")]

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kafka_s3_sink::app;
use kafka_s3_sink::batch::{Batch, EncoderPool};
use kafka_s3_sink::config::{Compression, Config, RetryPolicy};
use kafka_s3_sink::metrics::Metrics;
use kafka_s3_sink::model::TopicPartition;
use kafka_s3_sink::upload::orphans::{abort_orphans, OrphanReport};
use kafka_s3_sink::upload::Resolution;
use kafka_s3_sink::upload::{FileStats, ObjectInfo, UploadDone, Uploader};
use support::{
    counter_sum, start_pipeline_with_metrics, unique_group, Kafka, TestConfig, TestS3, BUCKET,
};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const KEY: &str = "2026/11/01/10/events+0+00000000000000000100.ndjson";

fn config(s3: &TestS3, conditional: bool) -> Config {
    let mut cfg = TestConfig::new("127.0.0.1:1", "g", &["events"], &s3.endpoint());
    cfg.dest(0, "conditional_writes", conditional);
    cfg.dest(0, "batch.compression", "none");
    cfg.set("upload.part_size_bytes", 5 * 1024 * 1024);
    cfg.build()
}

async fn uploader(cfg: &Config) -> (Uploader, UnboundedReceiver<UploadDone>) {
    let targets = app::targets(cfg, app::s3_sinks(cfg).await);
    let targets = Arc::try_unwrap(targets).unwrap_or_else(|_| unreachable!());
    let policy = RetryPolicy {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        max_attempts: Some(20),
    };
    Uploader::new(
        targets,
        4,
        policy,
        cfg.upload.part_size_bytes,
        Metrics::unregistered(),
    )
}

/// Uploads records `first..=last` of partition 0 as one object at [`KEY`], as the pipeline
/// would: parts streamed while the file fills when `pad` makes it larger than a part.
async fn write(
    up: &Uploader,
    done: &mut UnboundedReceiver<UploadDone>,
    first: i64,
    last: i64,
    pad: usize,
    fill: char,
) -> UploadDone {
    let tp = TopicPartition::new("events", 0);
    let now = Instant::now();
    let mut batch = Batch::new(tp.clone(), first, Compression::None, now);
    let info = ObjectInfo {
        id: first as u64 * 1000 + last as u64,
        dest: 0,
        tp,
        first_offset: first,
        parquet: false,
    };
    let mut w = up.open(info, Some(KEY.into()), CancellationToken::new());
    let mut encoders = EncoderPool::default();
    for off in first..=last {
        let line = format!(
            "{{\"offset\":{off},\"pad\":\"{}\"}}",
            fill.to_string().repeat(pad)
        );
        batch.append(off, line.as_bytes(), now, &mut encoders);
        if batch.buffered_bytes() >= up.part_size() {
            w.part(batch.take_part());
        }
    }
    let (records, raw_bytes) = (batch.records, batch.raw_bytes);
    let (body, content_hash) = batch.finish(&mut encoders);
    let stats = FileStats {
        records,
        raw_bytes,
        stored_bytes: raw_bytes,
        content_hash,
    };
    w.finish(body, KEY.into(), stats);
    done.recv().await.expect("an upload report")
}

/// Offsets of every record stored in the bucket, and how many lines there are.
fn stored_offsets(s3: &TestS3) -> (BTreeSet<i64>, usize) {
    let mut offsets = BTreeSet::new();
    let mut lines = 0;
    for obj in s3.objects(BUCKET) {
        for line in obj.lines() {
            let v: serde_json::Value = serde_json::from_slice(&line).expect("json line");
            offsets.insert(v["offset"].as_i64().expect("offset"));
            lines += 1;
        }
    }
    (offsets, lines)
}

/// The zombie scenario: the partition's new owner re-read from the last commit (100) and
/// uploaded records 100..=180; the old owner, whose session expired while it held 100..=150,
/// uploads afterwards under the same deterministic key (or the other way round). The two files
/// start at the same record of the same folder, so one holds the start of the other: the
/// longer one ends up at the key and nothing is lost or doubled — except a multipart upload
/// that must replace a shorter object, which keeps that object aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_upload_never_removes_the_new_owners_records() {
    for (pad, kind) in [(100, "put"), (150_000, "multipart")] {
        for owner_first in [true, false] {
            let s3 = TestS3::start().await;
            let cfg = config(&s3, true);
            let (up, mut done) = uploader(&cfg).await;
            let (a, b) = if owner_first {
                ((100, 180), (100, 150))
            } else {
                ((100, 150), (100, 180))
            };
            let first = write(&up, &mut done, a.0, a.1, pad, 'x').await;
            assert_eq!(first.result.unwrap(), Resolution::Written);
            let second = write(&up, &mut done, b.0, b.1, pad, 'x').await;
            let resolution = second.result.unwrap();
            let case = format!("{kind} owner_first={owner_first}: {resolution:?}");
            let (keys, lines) = match (kind, owner_first) {
                (_, true) => {
                    assert_eq!(resolution, Resolution::Covered, "{case}");
                    (1, 81)
                }
                ("put", false) => {
                    assert_eq!(resolution, Resolution::Superseded, "{case}");
                    (1, 81)
                }
                _ => {
                    assert!(
                        matches!(&resolution, Resolution::MovedAside(k) if k.contains('~')),
                        "{case}"
                    );
                    (2, 81 + 51)
                }
            };
            let (offsets, n) = stored_offsets(&s3);
            assert_eq!(
                offsets,
                (100..=180).collect::<BTreeSet<i64>>(),
                "{case}: no record lost"
            );
            assert_eq!((s3.keys(BUCKET).len(), n), (keys, lines), "{case}");
            assert!(
                s3.upload_leftovers().is_empty(),
                "{:?}",
                s3.upload_leftovers()
            );
            s3.stop().await;
        }
    }
}

/// Two writers with different content at one key (e.g. a config change between them): both
/// objects are kept, whichever comes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_records_at_one_key_are_both_kept() {
    for (pad, kind) in [(100, "put"), (150_000, "multipart")] {
        let s3 = TestS3::start().await;
        let cfg = config(&s3, true);
        let (up, mut done) = uploader(&cfg).await;
        write(&up, &mut done, 100, 180, pad, 'x')
            .await
            .result
            .unwrap();
        let second = write(&up, &mut done, 100, 150, pad, 'y').await;
        let resolution = second.result.unwrap();
        match kind {
            "put" => assert!(
                matches!(&resolution, Resolution::WrittenAside(k) if k.contains('~')),
                "{resolution:?}"
            ),
            _ => assert!(
                matches!(&resolution, Resolution::MovedAside(k) if k.contains('~')),
                "{resolution:?}"
            ),
        }
        let (offsets, lines) = stored_offsets(&s3);
        assert_eq!(offsets, (100..=180).collect::<BTreeSet<i64>>());
        assert_eq!((s3.keys(BUCKET).len(), lines), (2, 81 + 51), "{kind}");
        assert!(s3.upload_leftovers().is_empty());
        s3.stop().await;
    }
}

/// A destination with SSE-KMS (a Bucket Key and an encryption context), a storage class and an
/// expected bucket owner: every write carries them, the CopyObject that moves an object aside
/// included (S3 does not copy encryption or storage class, and a bucket that refuses
/// unencrypted writes would refuse the copy for ever); every request names the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copy_moved_aside_keeps_encryption_and_storage_class() {
    let s3 = TestS3::start().await;
    let mut cfg = TestConfig::new("127.0.0.1:1", "g", &["events"], &s3.endpoint());
    let mut context = toml::Table::new();
    context.insert("tenant".into(), "acme".into());
    cfg.dest(0, "batch.compression", "none")
        .dest(0, "encryption.mode", "aws:kms")
        .dest(0, "encryption.kms_key_id", "alias/sink")
        .dest(0, "encryption.bucket_key", true)
        .dest(0, "encryption.context", context)
        .dest(0, "expected_bucket_owner", "123456789012")
        .dest(0, "storage_class", "STANDARD_IA");
    cfg.set("upload.part_size_bytes", 5 * 1024 * 1024);
    let cfg = cfg.build();
    let (up, mut done) = uploader(&cfg).await;
    write(&up, &mut done, 100, 180, 150_000, 'x')
        .await
        .result
        .unwrap();
    let second = write(&up, &mut done, 100, 150, 150_000, 'y').await;
    assert!(
        matches!(second.result, Ok(Resolution::MovedAside(_))),
        "{:?}",
        second.result
    );
    let requests = s3.server.requests();
    let copies: Vec<_> = requests
        .iter()
        .filter(|r| r.header("x-amz-copy-source").is_some())
        .collect();
    assert_eq!(copies.len(), 1, "{requests:#?}");
    let writes = requests.iter().filter(|r| {
        r.header("x-amz-copy-source").is_some()
            || r.target().is_put_object()
            || r.target().is_create_multipart()
    });
    for w in writes {
        assert_eq!(
            w.header("x-amz-server-side-encryption"),
            Some("aws:kms"),
            "{w:?}"
        );
        assert_eq!(
            w.header("x-amz-server-side-encryption-aws-kms-key-id"),
            Some("alias/sink"),
            "{w:?}"
        );
        assert_eq!(
            w.header("x-amz-storage-class"),
            Some("STANDARD_IA"),
            "{w:?}"
        );
        assert_eq!(
            w.header("x-amz-server-side-encryption-bucket-key-enabled"),
            Some("true"),
            "{w:?}"
        );
        // base64 of {"tenant":"acme"}
        assert_eq!(
            w.header("x-amz-server-side-encryption-context"),
            Some("eyJ0ZW5hbnQiOiJhY21lIn0="),
            "{w:?}"
        );
    }
    for r in &requests {
        assert_eq!(
            r.header("x-amz-expected-bucket-owner"),
            Some("123456789012"),
            "{r:?}"
        );
    }
    s3.stop().await;
}

/// The same scenario without conditional writes (stores that lack them): the zombie's object
/// replaces the owner's and 30 committed records vanish. This is what the default prevents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_conditional_writes_a_zombie_loses_records() {
    let s3 = TestS3::start().await;
    let cfg = config(&s3, false);
    let (up, mut done) = uploader(&cfg).await;
    write(&up, &mut done, 100, 180, 100, 'x')
        .await
        .result
        .unwrap();
    write(&up, &mut done, 100, 150, 100, 'y')
        .await
        .result
        .unwrap();
    let (offsets, _) = stored_offsets(&s3);
    assert_eq!(offsets.len(), 51, "records 151..=180 were overwritten");
    s3.stop().await;
}

/// A replay that rebuilds the same content, or a retry whose first attempt landed, writes
/// nothing new: one object, no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_object_is_recognised_and_not_duplicated() {
    for pad in [100, 150_000] {
        let s3 = TestS3::start().await;
        let cfg = config(&s3, true);
        let (up, mut done) = uploader(&cfg).await;
        write(&up, &mut done, 100, 180, pad, 'x')
            .await
            .result
            .unwrap();
        let again = write(&up, &mut done, 100, 180, pad, 'x').await;
        assert_eq!(again.result.unwrap(), Resolution::Identical, "pad {pad}");
        let (offsets, lines) = stored_offsets(&s3);
        assert_eq!((offsets.len(), lines), (81, 81));
        assert!(
            s3.upload_leftovers().is_empty(),
            "the unneeded upload is aborted"
        );
        s3.stop().await;
    }
}

/// Multipart uploads left by a killed worker are aborted by the next start-up once they are
/// older than `orphaned_upload_min_age_secs`; young ones (a live replica's), other prefixes and
/// keys under the prefix that the destination's templates cannot produce (another
/// application's) are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_multipart_uploads_are_aborted_at_start_up() {
    let s3 = TestS3::start().await;
    let kafka = Kafka::start();
    kafka.create_topic("events", 1);
    let mut tc = TestConfig::new(
        &kafka.brokers(),
        &unique_group("orphans"),
        &["events"],
        &s3.endpoint(),
    );
    tc.dest(0, "prefix", "logs");
    let cfg = tc.build();
    let sink = app::s3_sinks(&cfg).await.remove(0);
    let meta = app::object_meta(&cfg.destinations[0]);
    for key in [
        "logs/2026/11/01/10/events+0+00000000000000000000.ndjson.gz",
        "logs/_errors/not_json/events+0+00000000000000000007.ndjson.gz",
        "elsewhere/events+0+00000000000000000000.ndjson.gz",
        "logs/backups/db.tar.gz",
    ] {
        sink.create_multipart(key, &meta).await.unwrap();
    }
    assert_eq!(
        s3.server
            .backdate_uploads(Duration::from_secs(7 * 3600))
            .unwrap(),
        4
    );
    let young = "logs/2026/11/01/11/events+0+00000000000000000500.ndjson.gz";
    sink.create_multipart(young, &meta).await.unwrap();

    let metrics = Metrics::unregistered();
    let min_age = cfg.upload.orphan_min_age.expect("on by default");
    assert_eq!(min_age, Duration::from_secs(6 * 3600));
    // A first look without the pipeline: what the start-up cleanup will do.
    let page = sink.list_uploads("logs/", None).await.unwrap();
    assert_eq!(page.uploads.len(), 4);

    let registry = prometheus::Registry::new();
    let running = start_pipeline_with_metrics(cfg.clone(), Metrics::new(&registry).unwrap()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while counter_sum(
        &registry,
        "kafka_s3_sink_orphaned_uploads_aborted_total",
        &[],
    ) < 2
    {
        assert!(Instant::now() < deadline, "the start-up cleanup never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await;
    let left: Vec<String> = sink
        .list_uploads("", None)
        .await
        .unwrap()
        .uploads
        .into_iter()
        .map(|u| u.key)
        .collect();
    assert_eq!(
        left,
        vec![
            "elsewhere/events+0+00000000000000000000.ndjson.gz".to_string(),
            young.to_string(),
            "logs/backups/db.tar.gz".to_string(),
        ]
    );
    // Run again directly: nothing more to abort.
    let again = abort_orphans(&cfg.destinations[0], &*sink, min_age, &metrics)
        .await
        .unwrap();
    assert_eq!(
        again,
        OrphanReport {
            seen: 1,
            aborted: 0
        },
        "only the young upload is ours"
    );
    s3.stop().await;
}

const PARQUET_KEY: &str = "2026/11/01/10/events+0+00000000000000000100.parquet";

/// Uploads records `first..=last` of partition 0 as one Parquet file (a `n` int64 column and a
/// `pad` string column of `fill`) at [`PARQUET_KEY`], streaming closed row groups as parts once
/// they reach the part size.
async fn write_parquet(
    up: &Uploader,
    done: &mut UnboundedReceiver<UploadDone>,
    cfg: &Config,
    (first, last): (i64, i64),
    pad: usize,
    fill: char,
) -> UploadDone {
    use kafka_s3_sink::model::Record;
    use kafka_s3_sink::router::Cell;
    let tp = TopicPartition::new("events", 0);
    let now = Instant::now();
    let schema = cfg.destinations[0]
        .parquet
        .clone()
        .expect("a Parquet destination");
    let mut batch = Batch::new_parquet(tp.clone(), first, schema, now);
    let info = ObjectInfo {
        id: first as u64 * 1000 + last as u64,
        dest: 0,
        tp: tp.clone(),
        first_offset: first,
        parquet: true,
    };
    let mut w = up.open(info, Some(PARQUET_KEY.into()), CancellationToken::new());
    let mut encoders = EncoderPool::default();
    for off in first..=last {
        // Random letters (seeded by the offset, so a rebuild is the same): the padding neither
        // compresses nor dictionary-encodes away.
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(off as u64);
        let text: String = (0..pad)
            .map(|_| char::from(b'a' + rand::Rng::random_range(&mut rng, 0..26u8)))
            .collect();
        let text = format!("{fill}{text}");
        let line = format!("{{\"n\":{off},\"pad\":\"{text}\"}}");
        let rec = Record {
            tp: tp.clone(),
            offset: off,
            timestamp_ms: None,
            key: None,
            value: None,
            headers: None,
        };
        let row = [Cell::Int(off), Cell::Str(text.into())];
        batch.append_row(&rec, line.as_bytes(), &row, now, &mut encoders);
        if batch.buffered_bytes() >= up.part_size() {
            w.part(batch.take_part());
        }
    }
    let (records, raw_bytes, taken) = (batch.records, batch.raw_bytes, batch.taken_bytes);
    let (body, content_hash) = batch.finish(&mut encoders);
    let stats = FileStats {
        records,
        raw_bytes,
        stored_bytes: taken + body.len() as u64,
        content_hash,
    };
    w.finish(body, PARQUET_KEY.into(), stats);
    done.recv().await.expect("an upload report")
}

/// Parquet files are compared byte for byte: a replay that rebuilds the same rows writes the
/// same bytes and is recognised (one object, no duplicate); a file with other rows at the key
/// is kept beside it, whole, as PutObject and as multipart upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_objects_are_compared_byte_for_byte() {
    for (pad, kind) in [(100, "put"), (200_000, "multipart")] {
        let s3 = TestS3::start().await;
        let mut tc = TestConfig::new("127.0.0.1:1", "g", &["events"], &s3.endpoint());
        tc.dest(0, "batch.format", "parquet")
            .dest(0, "parquet.compression", "none")
            .dest(0, "parquet.row_group_bytes", 1 << 20);
        let columns: toml::Table = toml::from_str(
            r#"c = [{ name = "n", type = "int64" }, { name = "pad", type = "string" }]"#,
        )
        .unwrap();
        tc.dest(0, "parquet.columns", columns["c"].clone());
        tc.set("upload.part_size_bytes", 5 * 1024 * 1024);
        let cfg = tc.build();
        let (up, mut done) = uploader(&cfg).await;
        let first = write_parquet(&up, &mut done, &cfg, (100, 180), pad, 'x').await;
        assert_eq!(first.result.unwrap(), Resolution::Written, "{kind}");
        if kind == "multipart" {
            assert!(first.parts > 1, "{kind}: {} parts", first.parts);
        }
        let again = write_parquet(&up, &mut done, &cfg, (100, 180), pad, 'x').await;
        assert_eq!(again.result.unwrap(), Resolution::Identical, "{kind}");
        assert_eq!(s3.keys(BUCKET), [PARQUET_KEY]);

        let other = write_parquet(&up, &mut done, &cfg, (100, 150), pad, 'x').await;
        let resolution = other.result.unwrap();
        assert!(
            matches!(&resolution, Resolution::WrittenAside(k) | Resolution::MovedAside(k)
                if k.contains('~') && k.ends_with(".parquet")),
            "{kind}: {resolution:?}"
        );
        let mut rows = 0;
        for o in s3.objects(BUCKET) {
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                bytes::Bytes::from(o.data.clone()),
            )
            .unwrap();
            rows += reader.metadata().file_metadata().num_rows();
        }
        assert_eq!(rows, 81 + 51, "{kind}: both files whole");
        assert!(s3.upload_leftovers().is_empty(), "{kind}");
        s3.stop().await;
    }
}
