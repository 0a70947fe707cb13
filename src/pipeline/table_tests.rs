//! A worker writing an Iceberg table: the real pipeline, uploader and table kind, the data files
//! uploaded to a bucket of the in-process S3 server through the connector's S3 sink, the
//! catalog iceberg-catalog-sql on sqlite in a temp dir, and the table read back with the
//! iceberg crate's scan. Each test ends by checking every offset is in the table exactly once.

use std::collections::BTreeMap;

use chrono::DateTime;
use futures::TryStreamExt;
use iceberg::expr::Reference;
use iceberg::spec::Datum;

use super::*;
use crate::s3server::{LocalS3, LocalS3Options};
use crate::sink::s3::S3Sink;
use crate::sink::ObjectSink;
use crate::source::{Control, Offsets};
use crate::table::offsets::{committed_offsets, row_coordinates};
use crate::table::open::{open_tables, Tables};
use std::sync::mpsc as std_mpsc;

const BUCKET: &str = "lake";

/// A bucket and a catalog shared by the workers of one test.
struct Lake {
    config: Config,
    tables: Tables,
    sink: Arc<dyn ObjectSink>,
    _server: LocalS3,
    _dir: tempfile::TempDir,
}

impl Lake {
    async fn new() -> Self {
        Self::with("").await
    }

    /// A lake whose table takes `extra` lines in `[destinations.iceberg]`.
    async fn with(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = LocalS3::start(LocalS3Options::new(dir.path().join("s3")))
            .await
            .unwrap();
        server.create_bucket_dir(BUCKET).unwrap();
        let text = format!(
            "[kafka]\nbrokers = \"x\"\ngroup_id = \"g\"\ntopics = [\"t\"]\n\
             [pipeline]\nmemory_budget_bytes = 16777216\n\
             [[destinations]]\nname = \"d\"\nbucket = \"{BUCKET}\"\nendpoint = \"{endpoint}\"\n\
             force_path_style = true\nkafka_metadata_field = \"_kafka\"\n\
             [destinations.credentials]\naccess_key_id = \"local-access-key\"\n\
             secret_access_key = \"local-secret-key\"\n\
             [destinations.routing]\ntime_field = \"ts\"\n\
             [destinations.batch]\nformat = \"parquet\"\n\
             [[destinations.parquet.columns]]\nname = \"event\"\npath = \"type\"\ntype = \"string\"\n\
             [[destinations.parquet.columns]]\nname = \"ts\"\npath = \"ts\"\ntype = \"timestamp\"\nrequired = true\n\
             [destinations.iceberg]\nnamespace = \"analytics\"\ntable = \"events\"\n\
             partition_time = \"hour\"\npartition_fields = [\"type\"]\n{extra}\n\
             [destinations.iceberg.catalog]\nkind = \"sql\"\n\
             uri = \"sqlite://{db}?mode=rwc\"\nwarehouse = \"s3://{BUCKET}/warehouse\"\n",
            endpoint = server.endpoint(),
            db = dir.path().join("catalog.db").display(),
        );
        let config = crate::config::parse(&text, &|_| None).unwrap();
        let sink: Arc<dyn ObjectSink> =
            Arc::new(S3Sink::connect(&config.destinations[0], Duration::from_secs(30)).await);
        let metas = vec![crate::app::object_meta(&config.destinations[0])];
        let (config, tables) = open_tables(&config, std::slice::from_ref(&sink), &metas)
            .await
            .unwrap();
        Self {
            config,
            tables,
            sink,
            _server: server,
            _dir: dir,
        }
    }

    /// A worker of this lake owning partition 0 of `t`.
    async fn worker(&self) -> Worker {
        self.worker_of(&[0]).await
    }

    /// A worker of this lake, assigned `partitions` of `t` as the Kafka thread assigns them.
    async fn worker_of(&self, partitions: &[i32]) -> Worker {
        let targets = crate::app::targets(&self.config, vec![self.sink.clone()]);
        let registry = prometheus::Registry::new();
        let metrics = Metrics::new(&registry).unwrap();
        let (uploader, done) = Uploader::shared(
            targets,
            Arc::new(tokio::sync::Semaphore::new(4)),
            self.config.upload.retry,
            self.config.upload.part_size_bytes,
            metrics.clone(),
        );
        let (data_tx, data) = tokio::sync::mpsc::channel(4);
        let (control_tx, control) = tokio::sync::mpsc::unbounded_channel();
        let (cmd_tx, commands) = std_mpsc::channel();
        let io = SourceIo {
            data,
            control,
            commands: cmd_tx,
        };
        let mut p = Pipeline::new(&self.config, &self.tables, uploader, done, io, metrics);
        let parts: Vec<TopicPartition> = partitions
            .iter()
            .map(|&n| TopicPartition::new("t", n))
            .collect();
        p.on_control(Control::Assigned(parts)).await.unwrap();
        Worker {
            p,
            registry,
            commands,
            _data: data_tx,
            _control: control_tx,
        }
    }

    /// (partition, offset) → times present, read through the table's current snapshot.
    async fn scan(&self) -> BTreeMap<(i32, i64), usize> {
        let t = &self.tables["d"];
        let table = t.catalog.load_table(&t.ident).await.unwrap();
        row_coordinates(&table, "_kafka").await.unwrap()
    }

    /// The table's committed offset of partition 0.
    async fn table_offset(&self) -> Option<i64> {
        self.table_offset_of(0).await
    }

    /// The table's committed offset of partition `p`.
    async fn table_offset_of(&self, p: i32) -> Option<i64> {
        let t = &self.tables["d"];
        let table = t.catalog.load_table(&t.ident).await.unwrap();
        let tp = TopicPartition::new("t", p);
        committed_offsets(table.metadata(), "g", std::slice::from_ref(&tp))
            .get(&tp)
            .map(|c| c.next)
    }
}

struct Worker {
    p: Pipeline,
    registry: prometheus::Registry,
    commands: std_mpsc::Receiver<Command>,
    _data: tokio::sync::mpsc::Sender<Vec<Record>>,
    _control: tokio::sync::mpsc::UnboundedSender<Control>,
}

impl Worker {
    /// Closes the open files that `which` picks and waits for their uploads.
    async fn close(&mut self, which: impl Fn(&FileKey) -> bool) {
        let keys: Vec<FileKey> = self.p.files.keys().filter(|k| which(k)).cloned().collect();
        for k in keys {
            self.p.seal(&k, FlushReason::Shutdown);
        }
        while !self.p.uploads.is_empty() {
            let done = self.p.uploads.recv().await.unwrap();
            self.p.on_done(done).unwrap();
        }
    }

    /// The value of the series `name{labels}` (labels as exported, e.g.
    /// `destination="d",outcome="committed"`), 0 if absent.
    fn metric(&self, series: &str) -> f64 {
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// The Kafka commits the worker sent since the last call.
    fn commits(&self) -> Vec<Offsets> {
        self.commands
            .try_iter()
            .filter_map(|c| match c {
                Command::Commit(o) => Some(o),
                _ => None,
            })
            .collect()
    }
}

/// Record `offset` of partition 0: event `kind` at hour `hour` of 2026-03-01.
fn rec(offset: i64, kind: &str, hour: u32) -> Record {
    rec_of(0, offset, kind, hour)
}

/// Record `offset` of partition `p`.
fn rec_of(p: i32, offset: i64, kind: &str, hour: u32) -> Record {
    Record {
        tp: TopicPartition::new("t", p),
        offset,
        timestamp_ms: Some(1_772_000_000_000),
        key: None,
        value: Some(
            format!(r#"{{"type":"{kind}","ts":"2026-03-01T{hour:02}:30:00Z","n":{offset}}}"#)
                .into_bytes()
                .into(),
        ),
        headers: None,
    }
}

fn last_commit(w: &Worker) -> Option<i64> {
    w.commits()
        .into_iter()
        .flatten()
        .filter(|(tp, _)| tp.partition == 0)
        .map(|(_, o)| o)
        .max()
}

/// Data files wait for the table commit; Kafka is committed only after it; bad records go to
/// the error folder and count as done; every offset is in the table once, in its partition.
#[tokio::test]
async fn a_table_commit_comes_before_the_kafka_commit_and_holds_every_record_once() {
    let lake = Lake::new().await;
    let mut w = lake.worker().await;
    let mut records: Vec<Record> = (0..20)
        .map(|o| rec(o, if o % 2 == 0 { "a" } else { "b" }, 3 + (o as u32 % 3)))
        .collect();
    records[7].value = Some(bytes::Bytes::from_static(b"not json"));
    w.p.ingest(records).unwrap();
    w.close(|_| true).await;
    // Uploaded, not yet in the table: nothing past offset 0 committed to Kafka.
    assert_eq!(last_commit(&w).unwrap_or(0), 0);
    assert!(lake.scan().await.is_empty());
    let errors = lake.sink.list("_errors/", None).await.unwrap();
    assert_eq!(errors.objects.len(), 1, "the bad record's error file");

    // The landed files' footers count against the budget until the commit.
    assert!(w.p.queued_bytes() > 6 * 1000, "{}", w.p.queued_bytes());
    w.p.settle(true).await.unwrap();
    assert_eq!(w.p.queued_bytes(), 0);
    assert_eq!(lake.table_offset().await, Some(20));
    let commits = r#"kafka_s3_sink_table_commits_total{destination="d",outcome="committed"}"#;
    assert_eq!(w.metric(commits), 1.0);
    assert_eq!(
        w.metric(r#"kafka_s3_sink_table_commit_data_files_sum{destination="d"}"#),
        6.0
    );
    assert_eq!(last_commit(&w), Some(20));
    let seen = lake.scan().await;
    let want: BTreeMap<(i32, i64), usize> =
        (0..20).filter(|&o| o != 7).map(|o| ((0, o), 1)).collect();
    assert_eq!(seen, want);
    // One data file per (hour, type) partition: 6 of them, none holding two partitions.
    let t = &lake.tables["d"];
    let table = t.catalog.load_table(&t.ident).await.unwrap();
    let snapshot = table.metadata().current_snapshot().unwrap();
    assert_eq!(
        snapshot
            .summary()
            .additional_properties
            .get("added-data-files"),
        Some(&"6".to_string())
    );
    // Each file's partition values are its rows' (engines prune by them): a scan for one
    // type in one hour plans exactly that partition's file.
    let hour_4 = "2026-03-01T04:00:00Z".parse::<DateTime<Utc>>().unwrap();
    let filter = Reference::new("event")
        .equal_to(Datum::string("b"))
        .and(
            Reference::new("ts")
                .greater_than_or_equal_to(Datum::timestamptz_micros(hour_4.timestamp_micros())),
        )
        .and(Reference::new("ts").less_than(Datum::timestamptz_micros(
            hour_4.timestamp_micros() + 3_600_000_000,
        )));
    let tasks: Vec<_> = table
        .scan()
        .with_filter(filter)
        .build()
        .unwrap()
        .plan_files()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
}

/// A file still open below a landed one holds the commit: committing the landed file alone
/// would record an offset past records not in the table yet (lost on a crash) or re-read
/// records it holds (duplicated). Both go in once the open file lands.
#[tokio::test]
async fn a_file_still_open_holds_back_the_files_above_it() {
    let lake = Lake::new().await;
    let mut w = lake.worker().await;
    // Offsets 0 and 2 are `a`, 1 is `b`: the `a` file spans the `b` file's offset.
    w.p.ingest(vec![rec(0, "a", 1), rec(1, "b", 1), rec(2, "a", 1)])
        .unwrap();
    // Close the `a` file only (the one whose first record is offset 0).
    let a_key =
        w.p.files
            .keys()
            .find(|k| w.p.files.get(k).unwrap().batch.first_offset == 0)
            .cloned()
            .unwrap();
    w.close(|k| *k == a_key).await;
    w.p.settle(true).await.unwrap();
    assert!(lake.scan().await.is_empty(), "nothing committable yet");
    assert_eq!(last_commit(&w).unwrap_or(0), 0);
    w.close(|_| true).await;
    w.p.settle(true).await.unwrap();
    assert_eq!(lake.table_offset().await, Some(3));
    assert_eq!(last_commit(&w), Some(3));
    let want: BTreeMap<(i32, i64), usize> = (0..3).map(|o| ((0, o), 1)).collect();
    assert_eq!(lake.scan().await, want);
}

/// A worker whose partition moved (a zombie) cannot commit over the new owner: its commit is
/// refused, it stops, and the table holds every offset once.
#[tokio::test]
async fn a_zombie_workers_commit_is_refused_after_the_new_owner_committed() {
    let lake = Lake::new().await;
    let mut zombie = lake.worker().await;
    let mut owner = lake.worker().await;
    zombie
        .p
        .ingest((0..5).map(|o| rec(o, "a", 2)).collect())
        .unwrap();
    zombie.close(|_| true).await;
    owner
        .p
        .ingest((0..10).map(|o| rec(o, "a", 2)).collect())
        .unwrap();
    owner.close(|_| true).await;
    owner.p.settle(true).await.unwrap();
    assert_eq!(lake.table_offset().await, Some(10));
    let e = zombie.p.settle(true).await.unwrap_err();
    assert!(e.to_string().contains("refused"), "{e}");
    let refused = r#"kafka_s3_sink_table_commits_total{destination="d",outcome="refused"}"#;
    assert_eq!(zombie.metric(refused), 1.0);
    assert_eq!(last_commit(&zombie).unwrap_or(0), 0);
    let want: BTreeMap<(i32, i64), usize> = (0..10).map(|o| ((0, o), 1)).collect();
    assert_eq!(lake.scan().await, want);
}

/// A crash after the upload and before the table commit: the files are in S3 but in no
/// snapshot, Kafka is at the old offset; the next worker writes them again under new names and
/// the table holds each record once (the first files are orphans no engine reads).
#[tokio::test]
async fn a_crash_between_upload_and_table_commit_loses_and_duplicates_nothing() {
    let lake = Lake::new().await;
    let mut crashed = lake.worker().await;
    crashed
        .p
        .ingest((0..10).map(|o| rec(o, "a", 1)).collect())
        .unwrap();
    crashed.close(|_| true).await;
    drop(crashed);
    assert!(lake.scan().await.is_empty());
    let mut next = lake.worker().await;
    next.p
        .ingest((0..12).map(|o| rec(o, "a", 1)).collect())
        .unwrap();
    next.close(|_| true).await;
    next.p.settle(true).await.unwrap();
    assert_eq!(next.p.stats.records_already_held, 0);
    assert_eq!(last_commit(&next), Some(12));
    let want: BTreeMap<(i32, i64), usize> = (0..12).map(|o| ((0, o), 1)).collect();
    assert_eq!(lake.scan().await, want);
}

/// A crash after the table commit and before the Kafka commit: Kafka is behind the table. The
/// next worker reads the table's offset on assignment and skips the records it holds.
#[tokio::test]
async fn a_crash_between_table_commit_and_kafka_commit_loses_and_duplicates_nothing() {
    let lake = Lake::new().await;
    let mut crashed = lake.worker().await;
    crashed
        .p
        .ingest((0..10).map(|o| rec(o, "a", 1)).collect())
        .unwrap();
    crashed.close(|_| true).await;
    crashed.p.settle(true).await.unwrap();
    assert_eq!(lake.table_offset().await, Some(10));
    // Its Kafka commit is lost with it: the next worker re-reads from offset 0.
    drop(crashed);
    let mut next = lake.worker().await;
    next.p
        .ingest((0..15).map(|o| rec(o, "b", 2)).collect())
        .unwrap();
    next.close(|_| true).await;
    next.p.settle(true).await.unwrap();
    assert_eq!(next.p.stats.records_already_held, 10);
    assert_eq!(
        next.metric(r#"kafka_s3_sink_records_already_held_total{destination="d"}"#),
        10.0
    );
    assert_eq!(lake.table_offset().await, Some(15));
    assert_eq!(last_commit(&next), Some(15));
    let want: BTreeMap<(i32, i64), usize> = (0..15).map(|o| ((0, o), 1)).collect();
    assert_eq!(lake.scan().await, want);
}

/// Two workers committing their partitions at the same moment: one swap wins, the other is
/// retried on the refreshed table; both land, each record once.
#[tokio::test]
async fn two_workers_committing_at_once_both_land_once() {
    let lake = Lake::new().await;
    let mut w0 = lake.worker_of(&[0]).await;
    let mut w1 = lake.worker_of(&[1]).await;
    w0.p.ingest((0..20).map(|o| rec_of(0, o, "a", 1)).collect())
        .unwrap();
    w1.p.ingest((0..30).map(|o| rec_of(1, o, "a", 1)).collect())
        .unwrap();
    w0.close(|_| true).await;
    w1.close(|_| true).await;
    let (r0, r1) = tokio::join!(w0.p.settle(true), w1.p.settle(true));
    r0.unwrap();
    r1.unwrap();
    assert_eq!(lake.table_offset_of(0).await, Some(20));
    assert_eq!(lake.table_offset_of(1).await, Some(30));
    let want: BTreeMap<(i32, i64), usize> = (0..20)
        .map(|o| ((0, o), 1))
        .chain((0..30).map(|o| ((1, o), 1)))
        .collect();
    assert_eq!(lake.scan().await, want);
}

/// A revoke commits the partition's landed files to the table before it answers, and answers
/// with the table's offset: the next owner starts there and adds nothing twice.
#[tokio::test]
async fn a_revoke_commits_the_table_before_it_answers() {
    let lake = Lake::new().await;
    let mut old = lake.worker().await;
    // The default 60 s interval: only the revoke commits.
    old.p
        .ingest((0..8).map(|o| rec(o, "a", o as u32 % 2)).collect())
        .unwrap();
    let (reply, answer) = std_mpsc::sync_channel(1);
    old.p
        .on_control(Control::Revoke {
            partitions: vec![TopicPartition::new("t", 0)],
            reply,
        })
        .await
        .unwrap();
    let offsets = answer.try_recv().unwrap();
    assert_eq!(offsets, vec![(TopicPartition::new("t", 0), 8)]);
    assert_eq!(lake.table_offset().await, Some(8));
    assert!(
        !old.p.dests[0].kind.unsettled(),
        "nothing waits for a revoked partition"
    );
    let mut next = lake.worker().await;
    next.p
        .ingest((8..12).map(|o| rec(o, "b", 3)).collect())
        .unwrap();
    next.close(|_| true).await;
    next.p.settle(true).await.unwrap();
    let want: BTreeMap<(i32, i64), usize> = (0..12).map(|o| ((0, o), 1)).collect();
    assert_eq!(lake.scan().await, want);
}

/// Files of other hours interleave their offsets (a late event's file opens at a recent offset
/// and stays open): every `commit_interval_secs` the worker closes the table's data files, so
/// the commit takes every record read before it instead of waiting for traffic to stop.
#[tokio::test]
async fn every_interval_the_open_files_are_closed_and_committed() {
    let lake = Lake::with("commit_interval_secs = 1").await;
    let mut w = lake.worker().await;
    // Hour 5, a late event of hour 1 at offset 2, more of hour 5: two files, both open.
    let mut records: Vec<Record> = (0..6).map(|o| rec(o, "a", 5)).collect();
    records[2] = rec(2, "a", 1);
    w.p.ingest(records).unwrap();
    assert_eq!(w.p.files.len(), 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    while lake.table_offset().await.is_none() {
        assert!(Instant::now() < deadline, "no commit within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
        w.p.on_tick().await.unwrap();
    }
    assert_eq!(lake.table_offset().await, Some(6));
    assert_eq!(last_commit(&w), Some(6));
    assert_eq!(w.p.files.len(), 0, "both files closed for the commit");
    let commit = r#"kafka_s3_sink_flushes_total{destination="d",reason="commit"}"#;
    assert_eq!(w.metric(commit), 2.0);
    let want: BTreeMap<(i32, i64), usize> = (0..6).map(|o| ((0, o), 1)).collect();
    assert_eq!(lake.scan().await, want);
}
