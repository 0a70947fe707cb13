use super::*;
use crate::config::parse;
use crate::sink::memory::MemorySink;
use crate::sink::ObjectSink;
use crate::source::{Control, Offsets};
use crate::upload::Target;
use std::sync::mpsc as std_mpsc;

impl Pipeline {
    /// The offset the worker could commit for `tp` now.
    fn safe_offset(&self, tp: &TopicPartition) -> Option<i64> {
        self.offsets.safe_offset(tp)
    }
}

struct Harness {
    p: Pipeline,
    sink: Arc<MemorySink>,
    commands: std_mpsc::Receiver<Command>,
    _data: tokio::sync::mpsc::Sender<Vec<Record>>,
    _control: tokio::sync::mpsc::UnboundedSender<Control>,
}

fn harness(extra: &str) -> Harness {
    harness_with("", extra)
}

/// A worker with `pipeline` settings in its `[pipeline]` table and `extra` after its
/// destination.
fn harness_with(pipeline: &str, extra: &str) -> Harness {
    let text = format!(
        "[kafka]\nbrokers = \"x\"\ngroup_id = \"g\"\ntopics = [\"t\"]\n[pipeline]\nmemory_budget_bytes = 16777216\n{pipeline}\n[[destinations]]\nname = \"d\"\nbucket = \"b\"\n{extra}"
    );
    let cfg = parse(&text, &|_| None).unwrap();
    let sink = Arc::new(MemorySink::new());
    let targets = vec![Target {
        name: "d".into(),
        sink: sink.clone() as Arc<dyn ObjectSink>,
        meta: crate::app::object_meta(&cfg.destinations[0]),
        conditional: true,
        compression: crate::config::Compression::Gzip { level: 6 },
        max_stored_raw_bytes: 1 << 30,
    }];
    let metrics = Metrics::unregistered();
    let (uploader, done) = Uploader::new(
        targets,
        4,
        cfg.upload.retry,
        cfg.upload.part_size_bytes,
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
    let mut p = Pipeline::new(&cfg, &Default::default(), uploader, done, io, metrics);
    p.assign(vec![TopicPartition::new("t", 0)]);
    Harness {
        p,
        sink,
        commands,
        _data: data_tx,
        _control: control_tx,
    }
}

fn rec(offset: i64, ts: &str) -> Record {
    Record {
        tp: TopicPartition::new("t", 0),
        offset,
        timestamp_ms: Some(0),
        key: None,
        value: Some(
            format!(r#"{{"timestamp":"{ts}","n":{offset}}}"#)
                .into_bytes()
                .into(),
        ),
        headers: None,
    }
}

fn hour(h: u32) -> String {
    format!("2026-11-{:02}T{:02}:15:00Z", 1 + h / 24, h % 24)
}

async fn settle(h: &mut Harness) {
    while !h.p.uploads.is_empty() {
        let done = h.p.uploads.recv().await.unwrap();
        h.p.on_done(done).unwrap();
    }
}

fn commits(h: &Harness) -> Vec<Offsets> {
    h.commands
        .try_iter()
        .filter_map(|c| match c {
            Command::Commit(o) => Some(o),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn records_go_to_their_hour_folders_and_commit_after_upload() {
    let mut h = harness("");
    h.p.ingest(vec![rec(0, &hour(0)), rec(1, &hour(1)), rec(2, &hour(0))])
        .unwrap();
    assert_eq!(h.p.files.len(), 2);
    assert!(commits(&h).is_empty(), "nothing is in S3 yet");
    let keys: Vec<FileKey> = h.p.files.keys().cloned().collect();
    // Seal hour 1 first (starts at offset 1): the watermark stays at 0, held by hour 0.
    let k1 = keys
        .iter()
        .find(|k| h.p.files.get(k).unwrap().batch.first_offset == 1)
        .unwrap()
        .clone();
    h.p.seal(&k1, FlushReason::Size);
    settle(&mut h).await;
    assert_eq!(commits(&h), vec![vec![(TopicPartition::new("t", 0), 0)]]);
    let k0 = keys
        .iter()
        .find(|k| h.p.files.get(k).is_some())
        .unwrap()
        .clone();
    h.p.seal(&k0, FlushReason::Size);
    settle(&mut h).await;
    assert_eq!(commits(&h), vec![vec![(TopicPartition::new("t", 0), 3)]]);
    let objects = h.sink.objects();
    let keys: Vec<&String> = objects.keys().collect();
    assert_eq!(
        keys,
        vec![
            "2026/11/01/00/t+0+00000000000000000000.ndjson.gz",
            "2026/11/01/01/t+0+00000000000000000001.ndjson.gz"
        ]
    );
}

#[tokio::test]
async fn quarantined_records_commit_like_any_other() {
    let mut h = harness("");
    let mut bad = rec(0, "x");
    bad.value = Some(bytes::Bytes::from_static(b"not json"));
    h.p.ingest(vec![bad, rec(1, &hour(0))]).unwrap();
    let keys: Vec<FileKey> = h.p.files.keys().cloned().collect();
    for k in keys {
        h.p.seal(&k, FlushReason::Idle);
    }
    settle(&mut h).await;
    assert_eq!(
        commits(&h).last().unwrap(),
        &vec![(TopicPartition::new("t", 0), 2)]
    );
    assert!(h
        .sink
        .objects()
        .contains_key("_errors/not_json/t+0+00000000000000000000.ndjson.gz"));
    assert_eq!(h.p.stats.records_quarantined, 1);
}

/// Feeds 100 rounds of one record into each of 200 hour folders (`pad(offset)` in each
/// record), enforcing the budget after each round (and letting uploads complete first when
/// `drain`, as the worker takes no chunk while open files and queued uploads are at the
/// budget); asserts the open files stay within the budget and returns their peak memory.
async fn fill_hour_folders(h: &mut Harness, pad: impl Fn(i64) -> String, drain: bool) -> usize {
    let mut offset = 0;
    let mut peak = 0;
    for round in 0..100 {
        let recs: Vec<Record> = (0..200u32)
            .map(|folder| {
                offset += 1;
                let mut r = rec(offset, &hour(folder));
                r.value = Some(
                    format!(
                        r#"{{"timestamp":"{}","pad":"{}","n":{round}}}"#,
                        hour(folder),
                        pad(offset)
                    )
                    .into_bytes()
                    .into(),
                );
                r
            })
            .collect();
        h.p.ingest(recs).unwrap();
        if drain {
            settle(h).await;
        }
        h.p.enforce_budget();
        peak = peak.max(h.p.files.open_memory());
        assert!(
            h.p.files.open_memory() <= h.p.files.budget(),
            "open files within the budget: {}",
            h.p.files.open_memory()
        );
    }
    assert!(
        peak > h.p.files.budget() / 2,
        "the budget was actually used: {peak}"
    );
    settle(h).await;
    peak
}

/// Records still in open files.
fn open_records(h: &Harness) -> usize {
    h.p.files.files().map(|f| f.batch.records as usize).sum()
}

#[tokio::test]
async fn memory_budget_forces_early_flushes_and_stays_bounded() {
    // 16 MiB budget: 200 hour folders of 100 KiB of raw lines each (20 MiB, below the
    // 256 KiB compression block, so all of it stays staged) cannot all stay open.
    let mut h = harness("");
    let pad = "x".repeat(1000);
    fill_hour_folders(&mut h, |_| pad.clone(), false).await;
    let objects = h.sink.objects().len();
    assert!(
        objects > 100,
        "memory flushes closed files early: {objects} objects"
    );
    let lines: usize = h
        .sink
        .objects()
        .values()
        .map(|o| {
            let mut s = String::new();
            std::io::Read::read_to_string(
                &mut flate2::read::MultiGzDecoder::new(&o.body[..]),
                &mut s,
            )
            .unwrap();
            s.lines().count()
        })
        .sum::<usize>();
    assert_eq!(lines + open_records(&h), 200 * 100, "nothing lost");
}

/// Parquet files are charged their builders, open row group and untaken bytes: 200 hour
/// folders of 1 KB records in a 16 MiB budget flush early, stay within it, and lose no row.
#[tokio::test]
async fn parquet_files_are_charged_to_the_memory_budget() {
    let mut h = harness(
        "[destinations.batch]\nformat = \"parquet\"\n[destinations.parquet]\nraw_column = \"raw\"\n\
         columns = [{ name = \"n\", type = \"int64\" }, { name = \"pad\", type = \"string\" }]\n",
    );
    // Random letters per record: the column neither compresses nor dictionary-encodes away.
    let pad = |offset: i64| -> String {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(offset as u64);
        (0..500)
            .map(|_| char::from(b'a' + rand::Rng::random_range(&mut rng, 0..26u8)))
            .collect()
    };
    fill_hour_folders(&mut h, pad, true).await;
    let objects = h.sink.objects();
    assert!(
        objects.len() > 200,
        "memory flushes: {} objects",
        objects.len()
    );
    let rows: i64 = objects
        .values()
        .map(|o| {
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(o.body.clone())
                .unwrap()
                .metadata()
                .file_metadata()
                .num_rows()
        })
        .sum();
    assert_eq!(rows as usize + open_records(&h), 200 * 100, "nothing lost");
}

#[tokio::test]
async fn many_small_folders_stay_open_without_encoders() {
    // 24 hour folders x 100 partitions of backlog, one small record each: staged raw lines only,
    // far below the budget, so nothing is flushed early.
    let mut h = harness("");
    for p in 0..100 {
        h.p.assign(vec![TopicPartition::new("t", p)]);
    }
    for p in 0..100 {
        let recs: Vec<Record> = (0..24u32)
            .map(|hr| Record {
                tp: TopicPartition::new("t", p),
                ..rec(hr as i64, &hour(hr))
            })
            .collect();
        h.p.ingest(recs).unwrap();
        h.p.enforce_budget();
    }
    assert_eq!(h.p.files.len(), 2400);
    // Each file holds its fixed cost and one staged line (no 256 KiB block, no encoder).
    assert!(
        h.p.files.open_memory() < 2400 * (open::FILE_FIXED_BYTES + 1024),
        "{} bytes",
        h.p.files.open_memory()
    );
    assert!(h.sink.objects().is_empty());
}

#[tokio::test]
async fn rotation_by_record_count_seals_files() {
    let mut h = harness("[destinations.batch]\nmax_records = 10\n");
    let recs: Vec<Record> = (0..25).map(|i| rec(i, &hour(0))).collect();
    h.p.ingest(recs).unwrap();
    settle(&mut h).await;
    assert_eq!(h.sink.objects().len(), 2, "two full files, one still open");
    assert_eq!(h.p.files.len(), 1);
    assert_eq!(
        commits(&h).last().unwrap(),
        &vec![(TopicPartition::new("t", 0), 20)]
    );
}

#[tokio::test(start_paused = true)]
async fn idle_and_age_flushes() {
    let mut h = harness("[destinations.batch]\nidle_secs = 2\nmax_age_secs = 5\n");
    h.p.ingest(vec![rec(0, &hour(0))]).unwrap();
    tokio::time::advance(Duration::from_millis(1900)).await;
    h.p.expire();
    assert_eq!(h.p.files.len(), 1);
    tokio::time::advance(Duration::from_millis(200)).await;
    h.p.expire();
    assert!(h.p.files.is_empty(), "idle flush");
    // Age: keep writing every second (never idle); the file still closes 5 s after it opened.
    h.p.ingest(vec![rec(1, &hour(0))]).unwrap();
    let mut closed_after = None;
    for i in 1..10 {
        tokio::time::advance(Duration::from_secs(1)).await;
        h.p.expire();
        if h.p.files.is_empty() {
            closed_after = Some(i);
            break;
        }
        h.p.ingest(vec![rec(1 + i, &hour(0))]).unwrap();
    }
    assert_eq!(closed_after, Some(5));
    assert!(h.p.files.is_empty(), "age flush");
}

#[tokio::test]
async fn failed_upload_stops_without_commit() {
    let mut h = harness("[upload]\nretry_max_attempts = 1\n");
    h.p.ingest(vec![rec(0, &hour(0))]).unwrap();
    h.sink.fail_next(1);
    let k: Vec<FileKey> = h.p.files.keys().cloned().collect();
    h.p.seal(&k[0], FlushReason::Size);
    let done = h.p.uploads.recv().await.unwrap();
    assert!(matches!(h.p.on_done(done), Err(PipelineError::Upload(_))));
    assert!(commits(&h).is_empty());
}

#[tokio::test]
async fn first_event_dating_names_the_folder_at_seal() {
    let mut h = harness(
        "app_name = \"App\"\n[destinations.routing]\ntime_source = \"event_time\"\ngranularity = \"first_event\"\nfolder_template = \"%Y-%m-%d/\"\nfile_template = \"{app}_{upload_time}_{random5}.txt\"\n[destinations.batch]\ncompression = \"none\"\n",
    );
    h.p.ingest(vec![rec(0, &hour(30)), rec(1, &hour(0)), rec(2, &hour(50))])
        .unwrap();
    assert_eq!(
        h.p.files.len(),
        1,
        "one file per partition, whatever the dates"
    );
    let k: Vec<FileKey> = h.p.files.keys().cloned().collect();
    h.p.seal(&k[0], FlushReason::Idle);
    settle(&mut h).await;
    let objects = h.sink.objects();
    let key = objects.keys().next().unwrap();
    assert!(key.starts_with("2026-11-02/App_"), "{key}");
    assert!(key.ends_with(".txt"), "{key}");
}

/// A record whose topic feeds no destination (validation prevents it; a subscription pattern
/// matching a topic no destination lists would cause it) stops the worker without committing
/// it or anything after it.
#[tokio::test]
async fn a_record_without_destination_is_never_committed() {
    let mut h = harness("");
    h.p.ingest(vec![rec(0, &hour(0)), rec(1, &hour(0))])
        .unwrap();
    let stray = TopicPartition::new("unlisted", 0);
    h.p.assign(vec![stray.clone()]);
    let mut r = rec(5, &hour(0));
    r.tp = stray.clone();
    let err = h.p.ingest(vec![r, rec(2, &hour(0))]).unwrap_err();
    assert!(
        matches!(&err, PipelineError::Unroutable { topic, offset: 5, .. } if topic == "unlisted"),
        "{err}"
    );
    let open: Vec<FileKey> = h.p.files.keys().cloned().collect();
    for k in open {
        h.p.seal(&k, FlushReason::Shutdown);
    }
    settle(&mut h).await;
    assert_eq!(h.p.safe_offset(&stray), None, "nothing of it is safe");
    for c in commits(&h) {
        assert!(c.iter().all(|(tp, _)| *tp != stray), "{c:?}");
    }
    let t0 = TopicPartition::new("t", 0);
    assert_eq!(
        h.p.safe_offset(&t0),
        Some(2),
        "records before it still commit"
    );
}

/// Records each in an hour of their own (a backfill spread over years) never hold more than
/// `max_open_files` files open: the least recently written closes first (reason
/// `open_files`), every record reaches S3, and the indexes stay consistent throughout.
#[tokio::test]
async fn open_files_are_bounded_and_the_least_recently_written_closes_first() {
    let mut h = harness_with("max_open_files = 50", "");
    let mut offset = 0;
    for chunk in 0..20 {
        let recs: Vec<Record> = (0..50)
            .map(|i| {
                offset += 1;
                rec(offset, &year_hour(chunk * 50 + i))
            })
            .collect();
        h.p.ingest(recs).unwrap();
        h.p.files.check();
        assert!(h.p.files.len() <= 50, "{} open", h.p.files.len());
    }
    // The bound closed files as it went; the rest close at shutdown.
    let flushed_early = h.p.uploads.len() + h.sink.objects().len();
    assert!(flushed_early >= 1000 - 50, "{flushed_early}");
    let open: Vec<FileKey> = h.p.files.keys().cloned().collect();
    for k in open {
        h.p.seal(&k, FlushReason::Shutdown);
    }
    settle(&mut h).await;
    h.p.files.check();
    assert_eq!(
        h.sink.objects().len(),
        1000,
        "one object per hour, every record"
    );
    assert_eq!(h.p.safe_offset(&TopicPartition::new("t", 0)), Some(1001));

    // Least recently written: of three open files, the one not written again closes.
    let mut h = harness_with("max_open_files = 3", "");
    h.p.ingest(vec![rec(0, &hour(0)), rec(1, &hour(1)), rec(2, &hour(2))])
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    h.p.ingest(vec![rec(3, &hour(0)), rec(4, &hour(2))])
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    h.p.ingest(vec![rec(5, &hour(3))]).unwrap();
    h.p.files.check();
    let firsts: Vec<i64> = h.p.files.files().map(|f| f.batch.first_offset).collect();
    assert_eq!(h.p.files.len(), 3);
    assert!(
        !firsts.contains(&1),
        "hour 1 was written least recently: {firsts:?}"
    );
}

/// Each open file's fixed cost is charged to the budget: many one-record files hit the
/// memory bound even though their lines are tiny, instead of growing without one.
#[tokio::test]
async fn each_open_file_is_charged_its_fixed_cost() {
    let mut h = harness("");
    let recs: Vec<Record> = (0..2_000).map(|i| rec(i, &year_hour(i as u32))).collect();
    h.p.ingest(recs).unwrap();
    h.p.files.check();
    assert!(
        h.p.files.open_memory() >= h.p.files.len() * open::FILE_FIXED_BYTES,
        "{} bytes for {} files",
        h.p.files.open_memory(),
        h.p.files.len()
    );
    const { assert!(open::FILE_FIXED_BYTES >= 512) };
}

/// `2019-01-01` plus `n` hours: one distinct hour folder per `n`, over years.
fn year_hour(n: u32) -> String {
    let t = chrono::DateTime::parse_from_rfc3339("2019-01-01T00:15:00Z").unwrap()
        + chrono::Duration::hours(i64::from(n));
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A shutdown with thousands of small files open hands them to the uploader in waves: the
/// uploads queued (bodies and each task's fixed cost) never pass half the budget by more than
/// one file, and every record still reaches S3.
#[tokio::test]
async fn sealing_many_files_keeps_queued_uploads_within_the_budget() {
    let mut h = harness_with("max_open_files = 100000", "");
    let n = 6_000;
    let recs: Vec<Record> = (0..n).map(|i| rec(i, &year_hour(i as u32))).collect();
    h.p.ingest(recs).unwrap();
    assert_eq!(h.p.files.len() as i64, n);
    assert!(
        n as usize * crate::upload::OBJECT_TASK_BYTES > h.p.files.budget() / 2,
        "the test needs more task memory than half the budget"
    );
    let keys: Vec<FileKey> = h.p.files.keys().cloned().collect();
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    h.p.seal_within_budget(keys, FlushReason::Shutdown, deadline)
        .await
        .unwrap();
    assert!(
        h.p.uploads.queued_bytes()
            <= h.p.files.budget() / 2 + crate::upload::OBJECT_TASK_BYTES + 4096,
        "{} queued",
        h.p.uploads.queued_bytes()
    );
    settle(&mut h).await;
    assert_eq!(h.sink.objects().len() as i64, n);
}

/// Upload-time folders and keys read the injected clock: a fixed time names the folder, with
/// no sleep and whatever the system's time.
#[tokio::test]
async fn upload_time_folders_read_the_injected_clock() {
    let mut h = harness("[destinations.routing]\ntime_source = \"upload_time\"\n");
    let at = chrono::DateTime::parse_from_rfc3339("2030-01-02T03:04:05Z")
        .unwrap()
        .with_timezone(&Utc);
    h.p.clock = Arc::new(move || at);
    h.p.ingest(vec![rec(0, &hour(0)), rec(1, &hour(5))])
        .unwrap();
    let keys: Vec<FileKey> = h.p.files.keys().cloned().collect();
    assert_eq!(keys.len(), 1, "one folder, decided at the seal");
    h.p.seal(&keys[0], FlushReason::Size);
    settle(&mut h).await;
    let objects = h.sink.objects();
    let key = objects.keys().next().unwrap();
    assert!(key.starts_with("2030/01/02/03/"), "{key}");
}
