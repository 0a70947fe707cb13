use super::*;
use crate::config::PayloadSigning;
use crate::s3server::{LocalS3, LocalS3Options};
use tokio::io::AsyncReadExt;

/// A destination on `server` with `payload_signing = signing`. (Validation refuses
/// `unsigned` over plain http://; the local server is plain http, so the test sets it on
/// the typed config to exercise the unsigned requests.)
fn dest(server: &LocalS3, signing: &str) -> DestinationConfig {
    let toml = format!(
        "[kafka]\nbrokers = \"x:9092\"\ngroup_id = \"g\"\ntopics = [\"t\"]\n\n\
         [[destinations]]\nname = \"d\"\nbucket = \"bkt\"\nendpoint = \"{}\"\n\
         force_path_style = true\npayload_signing = \"{}\"\n\
         [destinations.credentials]\naccess_key_id = \"local-access-key\"\n\
         secret_access_key = \"local-secret-key\"\n",
        server.endpoint(),
        if signing == "unsigned" {
            "auto"
        } else {
            signing
        }
    );
    let mut d = crate::config::parse(&toml, &|_| None)
        .expect("valid test config")
        .destinations
        .remove(0);
    if signing == "unsigned" {
        d.payload_signing = PayloadSigning::Unsigned;
    }
    d
}

/// What the signature of each body-carrying request (PUT) covered, and its CRC32 header.
fn body_checks(server: &LocalS3) -> Vec<(String, Option<String>)> {
    server
        .requests()
        .iter()
        .filter(|r| r.method == "PUT")
        .map(|r| {
            let sha = r.header("x-amz-content-sha256").unwrap_or("-").to_string();
            (sha, r.header("x-amz-checksum-crc32").map(str::to_string))
        })
        .collect()
}

async fn read_back(sink: &S3Sink, key: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let mut body = sink.get(key).await.unwrap().expect("object exists").body;
    body.read_to_end(&mut got).await.unwrap();
    got
}

/// Unsigned and signed payloads both reach a real S3 server (s3s checks SigV4) intact, by
/// PutObject and by multipart upload; only the signed ones carry the body's SHA-256.
#[tokio::test]
async fn payload_signing_on_and_off_against_a_sigv4_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalS3::start(LocalS3Options::new(dir.path().join("s3")))
        .await
        .unwrap();
    std::fs::create_dir_all(server.root().join("bkt")).unwrap();
    let body: Vec<u8> = (0..6u32 << 20).map(|i| (i % 251) as u8).collect();
    let part = Bytes::from(body[..5 << 20].to_vec());
    let rest = Bytes::from(body[5 << 20..].to_vec());
    let meta = ObjectMeta {
        content_type: "application/x-ndjson".into(),
        ..ObjectMeta::default()
    };
    for (signing, signed) in [("unsigned", false), ("signed", true), ("auto", true)] {
        let d = dest(&server, signing);
        let sink = S3Sink::connect(&d, Duration::from_secs(30)).await;
        assert_eq!(sink.sign_payload, signed, "{signing} over http://");
        server.clear_requests();
        let key = format!("{signing}/put.ndjson");
        sink.put(
            &key,
            Bytes::from(body.clone()),
            &meta,
            &WriteCondition::IfAbsent,
        )
        .await
        .unwrap();
        assert_eq!(read_back(&sink, &key).await, body);
        let key = format!("{signing}/multipart.ndjson");
        let id = sink.create_multipart(&key, &meta).await.unwrap();
        let mut parts = Vec::new();
        for (n, b) in [(1, part.clone()), (2, rest.clone())] {
            let etag = sink.upload_part(&key, &id, n, b).await.unwrap();
            parts.push(CompletedPart { number: n, etag });
        }
        sink.complete_multipart(&key, &id, &parts, &WriteCondition::IfAbsent)
            .await
            .unwrap();
        assert_eq!(read_back(&sink, &key).await, body);
        let checks = body_checks(&server);
        assert_eq!(checks.len(), 3, "{signing}: one PutObject, two UploadParts");
        for (sha, crc) in checks {
            if signed {
                assert!(sha.len() == 64 && sha.bytes().all(|c| c.is_ascii_hexdigit()));
            } else {
                assert_eq!(sha, "UNSIGNED-PAYLOAD");
            }
            // Either way S3 can check the body: by the signed hash or by the CRC32.
            assert!(crc.is_some_and(|c| !c.is_empty()), "{signing}: no CRC32");
        }
    }
}

#[test]
fn payload_signing_auto_signs_only_over_plain_http() {
    let parse = |extra: &str| {
        let toml = format!(
            "[kafka]\nbrokers = \"x:9092\"\ngroup_id = \"g\"\ntopics = [\"t\"]\n\n\
             [[destinations]]\nname = \"d\"\nbucket = \"b\"\n{extra}"
        );
        crate::config::parse(&toml, &|_| None).map(|mut c| c.destinations.remove(0))
    };
    let mode = |extra: &str| parse(extra).unwrap().payload_signing;
    assert_eq!(mode(""), PayloadSigning::Auto);
    assert_eq!(
        mode("payload_signing = \"signed\"\n"),
        PayloadSigning::Signed
    );
    assert_eq!(
        mode("payload_signing = \"unsigned\"\n"),
        PayloadSigning::Unsigned
    );
    let e = parse("payload_signing = \"off\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("payload_signing") && e.contains("auto, signed or unsigned"),
        "{e}"
    );

    assert!(
        !PayloadSigning::Auto.signs(None),
        "AWS's own endpoints are https"
    );
    assert!(!PayloadSigning::Auto.signs(Some("https://minio.example:9000")));
    assert!(PayloadSigning::Auto.signs(Some("http://127.0.0.1:9000")));
    assert!(PayloadSigning::Signed.signs(None));
    assert!(!PayloadSigning::Unsigned.signs(Some("http://127.0.0.1:9000")));

    // An endpoint from the AWS configuration (here the shared config's `endpoint_url`)
    // counts when the destination names none; the destination's own wins.
    let d = parse("").unwrap();
    let sdk = aws_config::SdkConfig::builder()
        .endpoint_url("http://minio.internal:9000")
        .build();
    assert_eq!(
        effective_endpoint(&d, &sdk).as_deref(),
        Some("http://minio.internal:9000")
    );
    assert!(d
        .payload_signing
        .signs(effective_endpoint(&d, &sdk).as_deref()));
    let own = parse("endpoint = \"https://s3.example\"\n").unwrap();
    assert_eq!(
        effective_endpoint(&own, &sdk).as_deref(),
        Some("https://s3.example")
    );
    let none = aws_config::SdkConfig::builder().build();
    assert_eq!(effective_endpoint(&d, &none), None);
}

#[test]
fn status_classification() {
    assert_eq!(status_kind(503, Some("SlowDown")), ErrorKind::Throttle);
    assert_eq!(status_kind(429, None), ErrorKind::Throttle);
    assert_eq!(status_kind(500, Some("InternalError")), ErrorKind::Server);
    assert_eq!(status_kind(400, Some("RequestTimeout")), ErrorKind::Timeout);
    assert_eq!(status_kind(404, Some("NoSuchUpload")), ErrorKind::Permanent);
    assert_eq!(status_kind(403, Some("AccessDenied")), ErrorKind::Other);
    assert_eq!(
        status_kind(412, Some("PreconditionFailed")),
        ErrorKind::Conflict
    );
    assert_eq!(
        status_kind(409, Some("ConditionalRequestConflict")),
        ErrorKind::Conflict
    );
    assert!(!ErrorKind::Conflict.retryable());
    assert!(ErrorKind::Other.retryable());
    assert!(!ErrorKind::Permanent.retryable());
    assert_eq!(
        status_kind(400, Some("KeyTooLongError")),
        ErrorKind::Invalid
    );
    assert_eq!(
        status_kind(400, Some("InvalidArgument")),
        ErrorKind::Invalid
    );
    assert!(!ErrorKind::Invalid.retryable());
}

/// A self-signed CA (P-256), for the CA-bundle checks only: nothing connects with it.
const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBgjCCASmgAwIBAgIUV7iJfwGiiz5Ju4P5jLXXOQs5kkYwCgYIKoZIzj0EAwIw
FjEUMBIGA1UEAwwLa3NzLXRlc3QtY2EwIBcNMjYxMjAyMTcyNzI5WhgPMjEyNjEx
MDgxNzI3MjlaMBYxFDASBgNVBAMMC2tzcy10ZXN0LWNhMFkwEwYHKoZIzj0CAQYI
KoZIzj0DAQcDQgAEUlCbfTExIdP2M7cilwW6nnSudgW4M41yRyytveK9Y4hGtNbW
RSSKMx2gQ+zMqf0/trqQhwFKSLrP1Pcp63PxUqNTMFEwHQYDVR0OBBYEFIaNk7jW
uY4b+QhjtXthJVrQC45eMB8GA1UdIwQYMBaAFIaNk7jWuY4b+QhjtXthJVrQC45e
MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgeFHgCsGmkI4l/Yqv
cUO3jtJ+xPesEQ/ql/9HUlMrDg8CIDcKYJ8REwE9rA4nHzFR03KnUErjbx8HbzKf
QQY3aG9f
-----END CERTIFICATE-----
";

/// `ca_file` is read and parsed at start-up: a missing file, a file without a certificate,
/// a broken certificate and a plain http:// endpoint each fail naming the key; a valid bundle
/// passes and gives the client a trust store (connecting through it is tests/e2e/tls.sh).
#[tokio::test]
async fn ca_file_is_checked_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let good = write("ca.pem", TEST_CA);
    let empty = write("empty.pem", "not a certificate\n");
    let broken = write(
        "broken.pem",
        &TEST_CA.replace("MIIBgjCCASmgAwIBAgIU", "MIIBgjCCASmgAwIBAgIA"),
    );
    let parse = |endpoint: &str, ca: &str| {
        let toml = format!(
            "[kafka]\nbrokers = \"x:9092\"\ngroup_id = \"g\"\ntopics = [\"t\"]\n\n\
             [[destinations]]\nname = \"d\"\nbucket = \"bkt\"\nendpoint = \"{endpoint}\"\n\
             ca_file = \"{ca}\"\n"
        );
        crate::config::parse(&toml, &|_| None).map(|mut c| c.destinations.remove(0))
    };
    let d = parse("https://s3.internal.example", &good).unwrap();
    assert_eq!(d.ca_file.as_deref(), Some(good.as_str()));
    S3Sink::connect(&d, Duration::from_secs(5)).await;
    for (endpoint, ca, says) in [
        (
            "https://s3.internal.example",
            "/nonexistent/ca.pem",
            "cannot read",
        ),
        (
            "https://s3.internal.example",
            empty.as_str(),
            "no PEM certificate",
        ),
        (
            "https://s3.internal.example",
            broken.as_str(),
            "trust anchor",
        ),
        ("http://127.0.0.1:9000", good.as_str(), "https://"),
    ] {
        let e = parse(endpoint, ca).unwrap_err().to_string();
        assert!(
            e.contains("destinations[0].ca_file") && e.contains(says),
            "{ca}: {e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}

/// A request never sent because the credential chain found nothing is named as such, on one
/// short line, without the chain's story or the SDK's debug dump.
#[test]
fn no_credentials_is_one_short_line() {
    use aws_credential_types::provider::error::CredentialsError;
    use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error;
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_runtime_api::client::result::ConnectorError;
    let cause = CredentialsError::not_loaded(format!(
        "failed to load IMDS session token: {}",
        "IMDS is disabled ".repeat(100)
    ));
    let e: SdkError<ListObjectsV2Error, HttpResponse> =
        SdkError::dispatch_failure(ConnectorError::other(Box::new(cause), None));
    let (kind, message, answer) = classify(&e);
    assert_eq!(kind, ErrorKind::Other);
    assert!(answer.no_credentials);
    assert_eq!(message, "no AWS credentials found");
}

/// A connection failure says its causes once each, without `ConnectorError { … }` dumps.
#[test]
fn a_dispatch_failure_has_no_debug_dump() {
    use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error;
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_runtime_api::client::result::ConnectorError;
    let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
    let e: SdkError<ListObjectsV2Error, HttpResponse> =
        SdkError::dispatch_failure(ConnectorError::io(Box::new(io)));
    let (kind, message, _) = classify(&e);
    assert_eq!(kind, ErrorKind::Network);
    assert!(message.contains("Connection refused"), "{message}");
    assert!(!message.contains("ConnectorError {"), "{message}");
    assert!(!message.contains('\n'), "{message}");
}

/// [`S3_CALLS`] names exactly the SDK calls this sink's code makes (each `.client` followed by
/// `.<operation>()`), so the deployment checks see every call the connector can make.
#[test]
fn the_call_list_is_the_calls_made() {
    let src = include_str!("../s3.rs");
    let code = src.split("#[cfg(test)]").next().unwrap_or(src);
    let call = regex::Regex::new(r"\.client\s*\.\s*([a-z0-9_]+)\s*\(\s*\)").unwrap();
    let made: std::collections::BTreeSet<&str> = call
        .captures_iter(code)
        .map(|c| c.get(1).unwrap().as_str())
        .collect();
    let listed: std::collections::BTreeSet<&str> = S3_CALLS.iter().map(|(c, _)| *c).collect();
    assert_eq!(made, listed);
    assert_eq!(listed.len(), S3_CALLS.len(), "each call listed once");
    assert!(S3_CALLS.iter().all(|(_, actions)| !actions.is_empty()));
}
