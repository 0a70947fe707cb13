use super::faults::xml_escape;
use super::*;
use bytes::Bytes;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{BehaviorVersion, Builder, Credentials, Region};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;

const MIB: usize = 1024 * 1024;

async fn start(dir: &tempfile::TempDir) -> LocalS3 {
    LocalS3::start(LocalS3Options::new(dir.path().join("s3")))
        .await
        .unwrap()
}

fn client(server: &LocalS3, retry: RetryConfig) -> Client {
    let config = Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(server.endpoint())
        .force_path_style(true)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "local-access-key",
            "local-secret-key",
            None,
            None,
            "test",
        ))
        .retry_config(retry)
        .build();
    Client::from_conf(config)
}

#[tokio::test]
async fn put_get_nested_key_and_record_headers() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    let s3 = client(&server, RetryConfig::disabled());
    s3.create_bucket().bucket("bkt").send().await.unwrap();
    assert!(server.root().join("bkt").is_dir());

    let put = s3
        .put_object()
        .bucket("bkt")
        .key("a/b/c.txt")
        .content_type("application/x-ndjson")
        .content_encoding("gzip")
        .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
        .body(ByteStream::from_static(b"hello"))
        .send()
        .await
        .unwrap();
    // MD5("hello"), quoted.
    assert_eq!(put.e_tag(), Some("\"5d41402abc4b2a76b9719d911017c592\""));
    let file = server.object_path("bkt", "a/b/c.txt");
    assert_eq!(file, server.root().join("bkt/a/b/c.txt"));
    assert_eq!(std::fs::read(&file).unwrap(), b"hello");

    let got = s3
        .get_object()
        .bucket("bkt")
        .key("a/b/c.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(got.content_type(), Some("application/x-ndjson"));
    assert_eq!(got.content_encoding(), Some("gzip"));
    assert_eq!(got.server_side_encryption(), None, "s3s-fs ignores SSE");
    let body = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(&body[..], b"hello");

    let requests = server.requests();
    let put = requests
        .iter()
        .find(|r| r.target().is_put_object())
        .unwrap();
    assert_eq!(put.path, "/bkt/a/b/c.txt");
    assert_eq!(put.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(put.header("x-amz-server-side-encryption"), Some("AES256"));
    assert_eq!(put.header("content-encoding"), Some("gzip"));
    assert_eq!(put.status, Some(200));
    assert!(requests.iter().all(|r| r
        .headers
        .iter()
        .all(|(n, _)| RECORDED_HEADERS.contains(&n.as_str()))));
    server.shutdown().await;
}

#[tokio::test]
async fn multipart_upload_and_bucket_quirks() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    server.create_bucket_dir("bkt").unwrap();
    server.create_bucket_dir("bkt").unwrap();
    assert!(matches!(
        server.create_bucket_dir("../x"),
        Err(LocalS3Error::InvalidBucket { .. })
    ));
    let s3 = client(&server, RetryConfig::disabled());
    let again = s3.create_bucket().bucket("bkt").send().await.unwrap_err();
    assert_eq!(again.code(), Some("BucketAlreadyExists"));

    let key = "t/2024/01/02/big.ndjson.gz";
    let up = s3
        .create_multipart_upload()
        .bucket("bkt")
        .key(key)
        .content_type("application/x-ndjson")
        .send()
        .await
        .unwrap();
    let upload_id = up.upload_id().unwrap();
    let parts = [vec![b'a'; 5 * MIB], vec![b'b'; 5 * MIB], b"tail".to_vec()];
    let mut done = Vec::new();
    for (i, data) in parts.iter().enumerate() {
        let n = i32::try_from(i + 1).unwrap();
        let out = s3
            .upload_part()
            .bucket("bkt")
            .key(key)
            .upload_id(upload_id)
            .part_number(n)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
        let part = CompletedPart::builder().part_number(n);
        done.push(part.e_tag(out.e_tag().unwrap()).build());
    }
    let complete = s3
        .complete_multipart_upload()
        .bucket("bkt")
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(done))
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(complete.e_tag().unwrap().ends_with("-3\""));
    let stored = std::fs::read(server.object_path("bkt", key)).unwrap();
    assert_eq!(stored.len(), 10 * MIB + 4);
    assert!(stored.ends_with(b"tail"));
    let leftovers: Vec<_> = std::fs::read_dir(server.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("upload"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let head = s3
        .head_object()
        .bucket("bkt")
        .key(key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("application/x-ndjson"));

    // After Complete the upload id is gone: AccessDenied, not NoSuchUpload.
    let abort = s3
        .abort_multipart_upload()
        .bucket("bkt")
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(abort.code(), Some("AccessDenied"));

    let cond = s3
        .put_object()
        .bucket("bkt")
        .key(key)
        .if_none_match("*")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(cond.raw_response().unwrap().status().as_u16(), 412);

    let class = s3
        .put_object()
        .bucket("bkt")
        .key("ia")
        .storage_class(aws_sdk_s3::types::StorageClass::StandardIa)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(class.code(), Some("InvalidStorageClass"));
    server.shutdown().await;
}

/// A conditional write refused before its body is read gets its 412, and the connection
/// stays usable: before the server read bodies first, the HEAD after it on the same pool
/// failed with a dispatch failure (`IncompleteMessage`, the connection closed under it).
/// Retries are off so that such a failure shows. Two runtime threads: client and server
/// must run at once, as they do across processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_conditional_writes_of_large_bodies_get_their_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    let s3 = client(&server, RetryConfig::disabled());
    s3.create_bucket().bucket("bkt").send().await.unwrap();
    // About the size of a benchmark object.
    let body = Bytes::from(vec![b'x'; 512 * 1024]);
    s3.put_object()
        .bucket("bkt")
        .key("k")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    // Eight at a time, as the uploader does, each followed by a HEAD on the same pool.
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..8 {
        let (s3, body) = (s3.clone(), body.clone());
        tasks.spawn(async move {
            for attempt in 0..10 {
                let err = s3
                    .put_object()
                    .bucket("bkt")
                    .key("k")
                    .if_none_match("*")
                    .body(ByteStream::from(body.clone()))
                    .send()
                    .await
                    .unwrap_err();
                let status = err.raw_response().map(|r| r.status().as_u16());
                assert_eq!(status, Some(412), "task {task} attempt {attempt}: {err:?}");
                let head = s3.head_object().bucket("bkt").key("k").send().await;
                assert!(head.is_ok(), "task {task} attempt {attempt}: {head:?}");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    server.shutdown().await;
}

#[tokio::test]
async fn fail_next_answers_slow_down_without_touching_disk() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    server.create_bucket_dir("bkt").unwrap();
    let s3 = client(&server, RetryConfig::disabled());
    let faults = server.faults();
    faults.fail_next(2);
    for _ in 0..2 {
        let err = s3
            .put_object()
            .bucket("bkt")
            .key("k")
            .body(ByteStream::from(vec![7u8; 100_000]))
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.raw_response().unwrap().status().as_u16(), 503);
        assert_eq!(err.code(), Some("SlowDown"));
        assert_eq!(err.message(), Some("Please reduce your request rate."));
        assert!(!server.object_path("bkt", "k").exists());
    }
    assert_eq!(faults.injected(), 2);
    assert_eq!(faults.pending(), 0);
    s3.put_object()
        .bucket("bkt")
        .key("k")
        .body(ByteStream::from_static(b"ok"))
        .send()
        .await
        .unwrap();
    let statuses: Vec<_> = server
        .requests()
        .iter()
        .map(|r| (r.fault_injected, r.status))
        .collect();
    assert_eq!(
        statuses,
        [(true, Some(503)), (true, Some(503)), (false, Some(200))]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn fail_matching_hits_only_upload_parts_and_sdk_retries() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    server.create_bucket_dir("bkt").unwrap();
    let retry = RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(1));
    let s3 = client(&server, retry);
    let faults = server.faults();
    faults.fail_matching_with(1, Fault::internal_error(), |r| r.is_upload_part());
    faults.fail_matching(1, |r| r.is_complete_multipart());

    let up = s3
        .create_multipart_upload()
        .bucket("bkt")
        .key("k")
        .send()
        .await
        .unwrap();
    let upload_id = up.upload_id().unwrap();
    let out = s3
        .upload_part()
        .bucket("bkt")
        .key("k")
        .upload_id(upload_id)
        .part_number(1)
        .body(ByteStream::from_static(b"only part"))
        .send()
        .await
        .unwrap();
    let part = CompletedPart::builder()
        .part_number(1)
        .e_tag(out.e_tag().unwrap())
        .build();
    s3.complete_multipart_upload()
        .bucket("bkt")
        .key("k")
        .upload_id(upload_id)
        .multipart_upload(CompletedMultipartUpload::builder().parts(part).build())
        .send()
        .await
        .unwrap();
    assert_eq!(faults.injected(), 2);
    assert_eq!(
        std::fs::read(server.object_path("bkt", "k")).unwrap(),
        b"only part"
    );
    let kinds: Vec<_> = server
        .requests()
        .iter()
        .map(|r| (r.method.clone(), r.fault_injected, r.status))
        .collect();
    let expected = [
        ("POST", false, Some(200)),
        ("PUT", true, Some(500)),
        ("PUT", false, Some(200)),
        ("POST", true, Some(503)),
        ("POST", false, Some(200)),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(m, f, s)| ((*m).to_owned(), *f, *s))
        .collect();
    assert_eq!(kinds, expected);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    let addr = server.local_addr();
    let s3 = client(&server, RetryConfig::disabled());
    s3.list_buckets().send().await.unwrap();
    server.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[test]
fn request_target_predicates() {
    let t = |method, path, query| RequestTarget {
        method,
        path,
        query,
    };
    assert!(t("PUT", "/b/k", "partNumber=2&uploadId=x").is_upload_part());
    assert!(!t("PUT", "/b/k", "partNumber=2&uploadId=x").is_put_object());
    assert!(t("PUT", "/b/a/k", "x-id=PutObject").is_put_object());
    assert!(!t("PUT", "/b", "").is_put_object());
    assert!(t("POST", "/b/k", "uploads&x-id=CreateMultipartUpload").is_create_multipart());
    assert!(t("POST", "/b/k", "uploadId=x").is_complete_multipart());
    assert!(t("DELETE", "/b/k", "uploadId=x").is_abort_multipart());
    assert!(!t("POST", "/b/k", "uploadIdx=1").has_query_param("uploadId"));
    assert_eq!(xml_escape("a<&>'\""), "a&lt;&amp;&gt;&apos;&quot;");
}

/// A key with a `..` segment would be a file outside the bucket's folder (s3s-fs joins it to
/// the path as is): the server refuses it and writes nothing.
#[tokio::test]
async fn a_key_that_leaves_the_bucket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    let s3 = client(&server, RetryConfig::disabled());
    s3.create_bucket().bucket("bkt").send().await.unwrap();
    for key in ["../../escaped/x", "a/../../escaped/y", "./z"] {
        let e = s3
            .put_object()
            .bucket("bkt")
            .key(key)
            .body(ByteStream::from_static(b"hello"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("InvalidArgument"), "{key}: {e:?}");
    }
    assert!(!dir.path().join("escaped").exists());
    assert!(super::faults::escapes_root("/bkt/a/%2e%2E/b"));
    assert!(!super::faults::escapes_root("/bkt/a/..b/c.d"));
    server.shutdown().await;
}
