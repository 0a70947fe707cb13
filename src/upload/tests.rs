use super::*;
use crate::sink::memory::MemorySink;
use crate::sink::meta_keys;
use std::time::Duration;

pub(crate) fn uploader(
    sink: Arc<MemorySink>,
    max_attempts: Option<u32>,
) -> (Uploader, mpsc::UnboundedReceiver<UploadDone>) {
    uploader_with(sink, max_attempts, true)
}

fn uploader_with(
    sink: Arc<MemorySink>,
    max_attempts: Option<u32>,
    conditional: bool,
) -> (Uploader, mpsc::UnboundedReceiver<UploadDone>) {
    let targets = vec![Target {
        name: "d".into(),
        sink,
        meta: ObjectMeta {
            content_type: "application/x-ndjson".into(),
            ..Default::default()
        },
        conditional,
        compression: crate::config::Compression::None,
        max_stored_raw_bytes: 1 << 30,
    }];
    let policy = RetryPolicy {
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        max_attempts,
    };
    Uploader::new(targets, 2, policy, 8, Metrics::unregistered())
}

pub(crate) fn info(id: u64) -> ObjectInfo {
    ObjectInfo {
        id,
        dest: 0,
        tp: TopicPartition::new("t", 0),
        first_offset: 0,
        parquet: false,
    }
}

pub(crate) fn stats() -> FileStats {
    FileStats {
        records: 1,
        raw_bytes: 1,
        stored_bytes: 1,
        content_hash: 0,
    }
}

/// Stats of a plain (uncompressed) object: its content hash is the hash of its bytes.
fn stats_of(body: &[u8]) -> FileStats {
    FileStats {
        content_hash: xxhash_rust::xxh3::xxh3_128(body),
        raw_bytes: body.len() as u64,
        ..stats()
    }
}

fn other_writer() -> ObjectMeta {
    let mut m = ObjectMeta::default();
    m.user.insert(meta_keys::WRITER.into(), "0ther".into());
    m
}

/// Uploads `body` at `key`, streamed as parts of 8 bytes when `multipart`.
async fn upload(up: &Uploader, id: u64, key: &str, body: &'static [u8], multipart: bool) {
    let mut w = up.open(info(id), Some(key.into()), CancellationToken::new());
    let mut rest = body;
    while multipart && rest.len() > 8 {
        w.part(Bytes::from_static(&rest[..8]));
        rest = &rest[8..];
    }
    w.finish(Bytes::from_static(rest), key.into(), stats_of(body));
}

#[tokio::test]
async fn objects_carry_their_partition_offset_and_writer() {
    let sink = Arc::new(MemorySink::new());
    let (up, mut done) = uploader(sink.clone(), None);
    upload(&up, 1, "k", b"abc", false).await;
    assert_eq!(
        done.recv().await.unwrap().result.unwrap(),
        Resolution::Written
    );
    let user = &sink.objects()["k"].meta.user;
    assert_eq!(user[meta_keys::TOPIC], "t");
    assert_eq!(user[meta_keys::PARTITION], "0");
    assert_eq!(user[meta_keys::FIRST_OFFSET], "0");
    assert_eq!(user[meta_keys::WRITER].len(), 16);
}

#[tokio::test]
async fn a_lost_answer_is_recognised_as_our_own_write() {
    for multipart in [false, true] {
        let sink = Arc::new(MemorySink::new());
        sink.lose_answers(1);
        let (up, mut done) = uploader(sink.clone(), None);
        upload(&up, 1, "k", b"0123456789abcdefghij", multipart).await;
        let d = done.recv().await.unwrap();
        assert_eq!(
            d.result.unwrap(),
            Resolution::OwnEarlierAttempt,
            "{multipart}"
        );
        assert_eq!(sink.objects().len(), 1, "no second copy");
        assert_eq!(sink.open_uploads(), 0);
    }
}

#[tokio::test]
async fn the_same_content_at_the_key_is_not_written_again() {
    for multipart in [false, true] {
        let sink = Arc::new(MemorySink::new());
        let body: &'static [u8] = b"{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n";
        sink.insert("k", Bytes::from_static(body), other_writer());
        let (up, mut done) = uploader(sink.clone(), None);
        upload(&up, 1, "k", body, multipart).await;
        let d = done.recv().await.unwrap();
        assert_eq!(d.result.unwrap(), Resolution::Identical, "{multipart}");
        assert_eq!(sink.objects().len(), 1);
        assert_eq!(sink.objects()["k"].meta.user[meta_keys::WRITER], "0ther");
        assert_eq!(
            sink.open_uploads(),
            0,
            "the unneeded multipart upload is aborted"
        );
    }
}

#[tokio::test]
async fn a_put_never_replaces_other_records() {
    let sink = Arc::new(MemorySink::new());
    sink.insert(
        "p/t+0+1.ndjson",
        Bytes::from_static(b"old\n"),
        other_writer(),
    );
    let (up, mut done) = uploader(sink.clone(), None);
    upload(&up, 1, "p/t+0+1.ndjson", b"new\n", false).await;
    let d = done.recv().await.unwrap();
    let Resolution::WrittenAside(aside) = d.result.unwrap() else {
        panic!("expected WrittenAside")
    };
    assert!(
        aside.starts_with("p/t+0+1~") && aside.ends_with(".ndjson"),
        "{aside}"
    );
    assert_eq!(
        d.key, aside,
        "the report names the key that holds the records"
    );
    let objects = sink.objects();
    assert_eq!(&objects["p/t+0+1.ndjson"].body[..], b"old\n");
    assert_eq!(&objects[&aside].body[..], b"new\n");
}

#[tokio::test]
async fn a_multipart_upload_moves_other_records_aside_first() {
    let sink = Arc::new(MemorySink::new());
    sink.insert("k.ndjson", Bytes::from_static(b"old\n"), other_writer());
    let (up, mut done) = uploader(sink.clone(), None);
    upload(&up, 1, "k.ndjson", b"0123456789abcdefghij\n", true).await;
    let d = done.recv().await.unwrap();
    assert_eq!(
        d.result.unwrap(),
        Resolution::MovedAside("k~0ther.ndjson".into())
    );
    let objects = sink.objects();
    assert_eq!(&objects["k~0ther.ndjson"].body[..], b"old\n");
    assert_eq!(&objects["k.ndjson"].body[..], b"0123456789abcdefghij\n");
    assert_eq!(sink.open_uploads(), 0);
}

#[tokio::test]
async fn a_longer_file_covers_a_shorter_one_and_replaces_it() {
    // The key holds more lines starting with ours (the new owner kept its file open longer
    // than a zombie did): our records are there.
    let sink = Arc::new(MemorySink::new());
    sink.insert("k", Bytes::from_static(b"a\nb\nc\n"), other_writer());
    let (up, mut done) = uploader(sink.clone(), None);
    upload(&up, 1, "k", b"a\nb\n", false).await;
    assert_eq!(
        done.recv().await.unwrap().result.unwrap(),
        Resolution::Covered
    );
    assert_eq!(&sink.objects()["k"].body[..], b"a\nb\nc\n");
    assert_eq!(sink.objects().len(), 1);
    // The key holds fewer lines, all the start of ours (a file cut by a revoke, rebuilt whole):
    // ours replaces it, nothing is lost.
    let sink = Arc::new(MemorySink::new());
    sink.insert("k", Bytes::from_static(b"a\nb\n"), other_writer());
    let (up, mut done) = uploader(sink.clone(), None);
    upload(&up, 1, "k", b"a\nb\nc\n", false).await;
    assert_eq!(
        done.recv().await.unwrap().result.unwrap(),
        Resolution::Superseded
    );
    assert_eq!(&sink.objects()["k"].body[..], b"a\nb\nc\n");
    assert_eq!(sink.objects().len(), 1);
    // Same length but other lines, or a longer file that does not start with ours: kept aside.
    let sink = Arc::new(MemorySink::new());
    sink.insert("k", Bytes::from_static(b"x\nb\nc\n"), other_writer());
    let (up, mut done) = uploader(sink.clone(), None);
    upload(&up, 1, "k", b"a\nb\n", false).await;
    assert!(matches!(
        done.recv().await.unwrap().result.unwrap(),
        Resolution::WrittenAside(_)
    ));
    assert_eq!(sink.objects().len(), 2);
}

#[tokio::test]
async fn without_conditional_writes_the_last_writer_wins() {
    // The hazard conditional writes remove (documented for stores that lack them).
    let sink = Arc::new(MemorySink::new());
    sink.insert("k", Bytes::from_static(b"old\n"), other_writer());
    let (up, mut done) = uploader_with(sink.clone(), None, false);
    upload(&up, 1, "k", b"new\n", false).await;
    assert_eq!(
        done.recv().await.unwrap().result.unwrap(),
        Resolution::Written
    );
    assert_eq!(&sink.objects()["k"].body[..], b"new\n");
    assert_eq!(sink.objects().len(), 1);
}

#[tokio::test]
async fn small_objects_use_put_object() {
    let sink = Arc::new(MemorySink::new());
    let (up, mut done) = uploader(sink.clone(), None);
    let w = up.open(info(1), None, CancellationToken::new());
    w.finish(Bytes::from_static(b"abc"), "k1".into(), stats());
    let d = done.recv().await.unwrap();
    assert!(d.result.is_ok());
    assert_eq!(d.parts, 0);
    assert_eq!(&sink.objects()["k1"].body[..], b"abc");
    assert_eq!(up.queued_bytes(), 0);
}

#[tokio::test]
async fn streamed_parts_complete_as_one_object() {
    let sink = Arc::new(MemorySink::new());
    let (up, mut done) = uploader(sink.clone(), None);
    let mut w = up.open(info(2), Some("k2".into()), CancellationToken::new());
    w.part(Bytes::from_static(b"0123456789"));
    w.part(Bytes::from_static(b"abcdefghij"));
    w.finish(Bytes::from_static(b"XY"), "k2".into(), stats());
    let d = done.recv().await.unwrap();
    assert!(d.result.is_ok(), "{:?}", d.result);
    assert_eq!(d.parts, 3);
    assert_eq!(&sink.objects()["k2"].body[..], b"0123456789abcdefghijXY");
    assert_eq!(sink.open_uploads(), 0);
    assert_eq!(up.queued_bytes(), 0);
}

#[tokio::test]
async fn large_final_body_is_split_into_parts() {
    let sink = Arc::new(MemorySink::new());
    let (up, mut done) = uploader(sink.clone(), None);
    let w = up.open(info(3), None, CancellationToken::new());
    w.finish(
        Bytes::from_static(b"0123456789abcdefghij"),
        "k3".into(),
        stats(),
    );
    let d = done.recv().await.unwrap();
    assert!(d.result.is_ok());
    assert_eq!(d.parts, 3, "8 + 8 + 4 bytes");
    assert_eq!(sink.objects()["k3"].body.len(), 20);
}

#[tokio::test]
async fn transient_failures_are_retried() {
    let sink = Arc::new(MemorySink::new());
    sink.fail_next(5);
    let (up, mut done) = uploader(sink.clone(), None);
    let w = up.open(info(4), None, CancellationToken::new());
    w.finish(Bytes::from_static(b"abc"), "k4".into(), stats());
    let d = done.recv().await.unwrap();
    assert!(d.result.is_ok());
    assert!(sink.objects().contains_key("k4"));
}

#[tokio::test]
async fn exhausted_attempts_fail_and_abort_the_multipart_upload() {
    let sink = Arc::new(MemorySink::new());
    let (up, mut done) = uploader(sink.clone(), Some(2));
    let mut w = up.open(info(5), Some("k5".into()), CancellationToken::new());
    w.part(Bytes::from_static(b"0123456789"));
    // Let the part land, then make the rest fail.
    tokio::time::sleep(Duration::from_millis(50)).await;
    sink.fail_next(2);
    w.finish(Bytes::from_static(b"XY"), "k5".into(), stats());
    let d = done.recv().await.unwrap();
    assert!(
        matches!(d.result, Err(UploadError::Sink(_))),
        "{:?}",
        d.result
    );
    assert!(!sink.objects().contains_key("k5"));
    assert_eq!(sink.open_uploads(), 0, "aborted, no orphan parts");
    assert_eq!(sink.aborted_uploads(), 1);
}

#[tokio::test]
async fn cancel_aborts_and_reports() {
    let sink = Arc::new(MemorySink::new());
    let (up, mut done) = uploader(sink.clone(), None);
    let cancel = CancellationToken::new();
    let mut w = up.open(info(6), Some("k6".into()), cancel.clone());
    w.part(Bytes::from_static(b"0123456789"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    w.cancel();
    let d = done.recv().await.unwrap();
    assert!(matches!(d.result, Err(UploadError::Cancelled)));
    assert_eq!(sink.open_uploads(), 0);
    drop(w);
}

#[tokio::test]
async fn a_waiting_object_task_is_small() {
    // Thousands of files can be closed at once (1,000 partitions × 24 folders at shutdown): each
    // waits as one task, so its future must not carry the retry and conflict machinery inline
    // (about 10 KB before it was boxed behind admission).
    let (up, _done) = uploader(Arc::new(MemorySink::new()), Some(1));
    let (_tx, rx) = mpsc::unbounded_channel();
    for chunks in [Chunks::Channel(rx), Chunks::Closed(None)] {
        let task = up.task(CancellationToken::new());
        let charge = Charge::new(Arc::new(AtomicUsize::new(0)), OBJECT_TASK_BYTES);
        let fut = task.run(info(1), None, chunks, charge);
        let size = std::mem::size_of_val(&fut);
        assert!(
            size <= OBJECT_TASK_BYTES / 2,
            "object task future is {size} bytes"
        );
    }
}

/// A file closed before any part goes up whole, with no channel; its bytes and its task are
/// counted until it reports, and a cancellation before it starts gives both back.
#[tokio::test]
async fn a_closed_file_is_put_whole_and_counted_until_it_reports() {
    let sink = Arc::new(MemorySink::new());
    let (up, mut done) = uploader(sink.clone(), None);
    up.put(
        info(1),
        Bytes::from_static(b"abc"),
        "k1".into(),
        stats(),
        CancellationToken::new(),
    );
    assert_eq!(up.queued_bytes(), OBJECT_TASK_BYTES + 3);
    let d = done.recv().await.unwrap();
    assert_eq!(d.key, "k1");
    assert_eq!(d.result.unwrap(), Resolution::Written);
    assert_eq!(sink.objects()["k1"].body.as_ref(), b"abc");
    assert_eq!(up.queued_bytes(), 0);

    let cancel = CancellationToken::new();
    cancel.cancel();
    up.put(
        info(2),
        Bytes::from_static(b"defg"),
        "k2".into(),
        stats(),
        cancel,
    );
    let d = done.recv().await.unwrap();
    assert!(matches!(d.result, Err(UploadError::Cancelled)));
    assert!(!sink.objects().contains_key("k2"));
    assert_eq!(up.queued_bytes(), 0);
}

/// Each object's upload task counts against the memory budget while it lives, released when
/// it reports (or is dropped unfinished).
#[tokio::test]
async fn an_upload_task_is_charged_until_it_reports() {
    let sink = Arc::new(MemorySink::new());
    let (up, mut done) = uploader(sink, None);
    let writers: Vec<ObjectWriter> = (0..10)
        .map(|i| up.open(info(i), None, CancellationToken::new()))
        .collect();
    assert_eq!(up.queued_bytes(), 10 * OBJECT_TASK_BYTES);
    for (i, w) in writers.into_iter().enumerate() {
        w.finish(Bytes::from_static(b"x"), format!("k{i}"), stats());
    }
    for _ in 0..10 {
        done.recv().await.unwrap().result.unwrap();
    }
    assert_eq!(up.queued_bytes(), 0);
}

/// A decompression bomb at a taken key (64 MiB of zeros in 64 KiB of gzip) is read only up to
/// the limit, on blocking threads, and counts as other records: nothing blows up (it is not
/// identical to, nor does it contain, ours: both are kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decompression_bomb_at_a_taken_key_is_read_only_to_the_limit() {
    use std::io::Write;
    let sink = Arc::new(MemorySink::new());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        gz.write_all(&zeros).unwrap();
    }
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 1 << 17, "{} bytes", bomb.len());
    sink.insert("p/t+0+1.ndjson.gz", Bytes::from(bomb), other_writer());
    let targets = vec![Target {
        name: "d".into(),
        sink: sink.clone(),
        meta: ObjectMeta::default(),
        conditional: true,
        compression: crate::config::Compression::Gzip { level: 6 },
        max_stored_raw_bytes: 4 << 20,
    }];
    let policy = RetryPolicy {
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        max_attempts: None,
    };
    let (up, mut done) = Uploader::new(targets, 2, policy, 8, Metrics::unregistered());
    let mut ours = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    ours.write_all(b"new\n").unwrap();
    let body = ours.finish().unwrap();
    let w = up.open(info(1), None, CancellationToken::new());
    w.finish(
        Bytes::from(body),
        "p/t+0+1.ndjson.gz".into(),
        FileStats {
            content_hash: xxhash_rust::xxh3::xxh3_128(b"new\n"),
            raw_bytes: 4,
            ..stats()
        },
    );
    let d = tokio::time::timeout(Duration::from_secs(30), done.recv())
        .await
        .expect("resolved")
        .unwrap();
    assert!(
        matches!(
            d.result,
            Ok(Resolution::WrittenAside(_) | Resolution::MovedAside(_))
        ),
        "both kept: {:?}",
        d.result
    );
    assert_eq!(sink.objects().len(), 2);
}

/// A zstd object at a taken key is read back through its frame: the same lines written by
/// another writer (another level, so other bytes) are recognised as identical, not kept twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zstd_object_with_our_lines_is_recognised() {
    let lines = b"{\"a\":1}\n{\"b\":2}\n".repeat(100);
    let theirs = ::zstd::stream::encode_all(&lines[..], 19).unwrap();
    let ours = ::zstd::stream::encode_all(&lines[..], 1).unwrap();
    assert_ne!(theirs, ours);
    let sink = Arc::new(MemorySink::new());
    sink.insert("p/t+0+1.ndjson.zst", Bytes::from(theirs), other_writer());
    let targets = vec![Target {
        name: "d".into(),
        sink: sink.clone(),
        meta: ObjectMeta::default(),
        conditional: true,
        compression: crate::config::Compression::Zstd { level: 3 },
        max_stored_raw_bytes: 1 << 30,
    }];
    let policy = RetryPolicy {
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        max_attempts: None,
    };
    let (up, mut done) = Uploader::new(targets, 2, policy, 1 << 20, Metrics::unregistered());
    let w = up.open(info(1), None, CancellationToken::new());
    w.finish(
        Bytes::from(ours),
        "p/t+0+1.ndjson.zst".into(),
        FileStats {
            content_hash: xxhash_rust::xxh3::xxh3_128(&lines),
            raw_bytes: lines.len() as u64,
            ..stats()
        },
    );
    let d = done.recv().await.unwrap();
    assert_eq!(d.result.unwrap(), Resolution::Identical);
    assert_eq!(sink.objects().len(), 1);
}
