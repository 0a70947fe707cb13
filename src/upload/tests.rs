use super::*;
use crate::sink::memory::MemorySink;
use std::time::Duration;

fn uploader(
    sink: Arc<MemorySink>,
    max_attempts: Option<u32>,
) -> (Uploader, mpsc::UnboundedReceiver<UploadDone>) {
    let targets = vec![Target {
        name: "d".into(),
        sink,
        meta: ObjectMeta {
            content_type: "application/x-ndjson".into(),
            ..Default::default()
        },
    }];
    let policy = RetryPolicy {
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        max_attempts,
    };
    Uploader::new(targets, 2, policy, 8, Metrics::unregistered())
}

fn info(id: u64) -> ObjectInfo {
    ObjectInfo {
        id,
        dest: 0,
        tp: TopicPartition::new("t", 0),
        first_offset: 0,
    }
}

fn stats() -> FileStats {
    FileStats {
        records: 1,
        raw_bytes: 1,
        stored_bytes: 1,
    }
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
