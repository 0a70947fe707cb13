//! Secrets never leave the process: known secret values go in through the config (`${VAR}` and
//! `${file:…}`, the S3 secret key and librdkafka's sensitive properties), and every place that
//! can print them is read back: `check-config`'s printout, a run's logs at debug level, its
//! `/metrics`, and the one-line errors of a misspelt property and of an unreachable broker
//! (`run` and `verify`). None may contain a secret.

// The in-process S3 server (tests/support) and `demo` are the test kit (Cargo.toml).
#![cfg(feature = "test-kit")]

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{gen_events, round_robin, GenOptions, Kafka, TestS3, ACCESS_KEY, BUCKET, SECRET_KEY};

const SASL_USER: &str = "u53r-4c5a91-not-for-logs";
const SASL_PASSWORD: &str = "pa55-7d2e0c-not-for-logs";
const OAUTH_CONFIG: &str = "principal=0auth-93bb1e-not-for-logs";

/// Every secret this test puts in, and the S3 secret key.
fn secrets() -> [&'static str; 4] {
    [SASL_USER, SASL_PASSWORD, OAUTH_CONFIG, SECRET_KEY]
}

fn assert_clean(what: &str, text: &str) {
    for s in secrets() {
        assert!(!text.contains(s), "{what} shows a secret ({s}):\n{text}");
    }
}

/// A config for the broker and S3 server given, its secrets from the environment and a file.
fn config(dir: &std::path::Path, brokers: &str, endpoint: &str, http: u16, extra: &str) -> String {
    let pw = dir.join("kafka-password");
    std::fs::write(&pw, format!("{SASL_PASSWORD}\n")).unwrap();
    format!(
        r#"
[kafka]
brokers = "{brokers}"
group_id = "secrets-{http}"
topics = ["events"]
session_timeout_ms = 6000

[kafka.properties]
"sasl.username" = "${{TEST_SASL_USER}}"
"sasl.password" = "${{file:{pw}}}"
"sasl.oauthbearer.config" = "{OAUTH_CONFIG}"
{extra}

[pipeline]
drain_deadline_secs = 5
shutdown_deadline_secs = 20

[http]
listen = "127.0.0.1:{http}"

[[destinations]]
name = "s3"
bucket = "{BUCKET}"
endpoint = "{endpoint}"
force_path_style = true

[destinations.credentials]
access_key_id = "{ACCESS_KEY}"
secret_access_key = "${{TEST_S3_SECRET}}"
"#,
        pw = pw.display()
    )
}

fn binary(args: &[&str], config: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kafka-s3-sink"));
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .env("TEST_SASL_USER", SASL_USER)
        .env("TEST_S3_SECRET", SECRET_KEY)
        .env("KAFKA_S3_SINK_LOG", "debug")
        .env("NO_COLOR", "1");
    cmd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `/metrics` over HTTP/1.0; `None` while nothing listens.
fn scrape(port: u16) -> Option<String> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_output_of_any_command_shows_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start();
    kafka.create_topic("events", 2);
    kafka
        .produce("events", round_robin(gen_events(&GenOptions::new(200)), 2))
        .await;
    let s3 = TestS3::start().await;
    let http = free_port();
    let path = dir.path().join("sink.toml");
    std::fs::write(
        &path,
        config(dir.path(), &kafka.brokers(), &s3.endpoint(), http, ""),
    )
    .unwrap();

    // check-config: the resolved config, secrets redacted.
    let out = binary(&["check-config"], &path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_clean("check-config", &printed);
    assert_clean(
        "check-config's stderr",
        &String::from_utf8_lossy(&out.stderr),
    );
    assert!(printed.matches("<redacted>").count() >= 4, "{printed}");

    // run at debug level: logs and /metrics while it works, then a clean stop.
    // Logs go to a file: a pipe nobody reads would fill and block the process.
    let log_path = dir.path().join("run.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = binary(&["run"], &path)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let consumed = |m: &str| -> f64 {
        m.lines()
            .filter(|l| l.starts_with("kafka_s3_sink_records_consumed_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let metrics = loop {
        if let Some(m) = scrape(http) {
            if consumed(&m) >= 200.0 {
                break m;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the run never consumed the records"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_clean("/metrics", &metrics);
    // SAFETY: signalling our own child by its PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let status = (status, std::fs::read_to_string(&log_path).unwrap());
    assert!(status.0.success(), "run failed:\n{}", status.1);
    assert!(
        status.1.contains("flush"),
        "debug logs were written:\n{}",
        status.1
    );
    assert_clean("run's logs", &status.1);

    // A misspelt property whose value is a secret: one line naming the key, no value.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        config(
            dir.path(),
            &kafka.brokers(),
            &s3.endpoint(),
            http,
            &format!("\"sasl.pasword\" = \"{SASL_PASSWORD}\""),
        ),
    )
    .unwrap();
    for cmd in [&["run"][..], &["check-config"], &["verify"]] {
        let out = binary(cmd, &bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd:?}");
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("sasl.pasword"), "{cmd:?}: {text}");
        assert_clean(&format!("{cmd:?} with a misspelt property"), &text);
    }

    // An unreachable broker: verify fails (exit 3) without a secret in its error.
    let gone = dir.path().join("gone.toml");
    std::fs::write(
        &gone,
        config(dir.path(), "127.0.0.1:1", &s3.endpoint(), http, ""),
    )
    .unwrap();
    let out = binary(&["verify"], &gone)
        .env("KAFKA_S3_SINK_LOG", "info")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_clean("verify against an unreachable broker", &text);
    s3.stop().await;
}

/// `[kafka.security]` with its secrets from the environment and a file: `check-config` prints
/// the mapping with the secrets redacted and warns about SASL without TLS; each misconfiguration
/// fails with one line naming the key, and no line shows a secret.
#[test]
fn typed_security_settings_never_show_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("kafka-password");
    std::fs::write(&pw, format!("{SASL_PASSWORD}\n")).unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let write = |name: &str, security: &str| {
        let path = dir.path().join(name);
        let text = format!(
            r#"
[kafka]
brokers = "127.0.0.1:9092"
group_id = "secrets-typed"
topics = ["events"]

[kafka.security]
{security}

[[destinations]]
name = "s3"
bucket = "{BUCKET}"
"#
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let creds = format!(
        "username = \"${{TEST_SASL_USER}}\"\npassword = \"${{file:{}}}\"",
        pw.display()
    );

    let good = write(
        "good.toml",
        &format!("protocol = \"sasl_plaintext\"\nsasl_mechanism = \"SCRAM-SHA-512\"\n{creds}"),
    );
    let out = binary(&["check-config"], &good).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_clean("check-config with [kafka.security]", &printed);
    assert_clean("check-config's warnings", &stderr);
    assert!(printed.contains("[kafka.security]"), "{printed}");
    assert!(printed.matches("<redacted>").count() >= 2, "{printed}");
    assert!(
        stderr.contains("warning: kafka.security.protocol") && stderr.contains("without TLS"),
        "{stderr}"
    );

    let missing = dir.path().join("no-such-ca.pem");
    let cases = [
        (
            format!(
                "ca_file = {:?}\nsasl_mechanism = \"PLAIN\"\n{creds}",
                missing.display().to_string()
            ),
            "kafka.security.ca_file",
        ),
        (
            format!("sasl_mechanism = \"GSSAPI\"\n{creds}"),
            "kafka.security.sasl_mechanism",
        ),
        (
            format!(
                "protocol = \"ssl\"\nca_file = {:?}\nsasl_mechanism = \"PLAIN\"\n{creds}",
                ca.display().to_string()
            ),
            "kafka.security.sasl_mechanism",
        ),
        (
            format!(
                "sasl_mechanism = \"PLAIN\"\npassword = \"${{file:{}}}\"",
                pw.display()
            ),
            "kafka.security.username",
        ),
    ];
    for (i, (security, key)) in cases.iter().enumerate() {
        let path = write(&format!("bad-{i}.toml"), security);
        let out = binary(&["check-config"], &path).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{security}");
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(key), "{security}: {text}");
        assert_eq!(text.trim().lines().count(), 1, "one line: {text}");
        assert_clean(&format!("check-config with {security}"), &text);
    }
}

/// Whoever words the message, a secret does not leave the process: librdkafka quotes the
/// `sasl.oauthbearer.config` it cannot build a token from ("beginning at: <the rest>"), which
/// `check-config` and `run` refuse in one scrubbed line; a secret of the wrong type is not
/// quoted; a refused value does not garble librdkafka's reason; `${file:}` reads small regular files only; and
/// what librdkafka refuses when it creates the client (`run` exited 1 after starting)
/// `check-config` refuses in one line, exit 2, like `run`.
#[test]
fn whoever_words_the_message_no_secret_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, kafka: &str| {
        let path = dir.path().join(name);
        let text = format!(
            r#"
[kafka]
brokers = "127.0.0.1:1"
group_id = "secrets-words"
topics = ["events"]
{kafka}

[http]
enabled = false

[[destinations]]
name = "s3"
bucket = "{BUCKET}"
endpoint = "http://127.0.0.1:1"
"#
        );
        std::fs::write(&path, text).unwrap();
        path
    };

    let one_line = |name: &str, kafka: &str, key: &str| -> String {
        let path = write(name, kafka);
        for cmd in ["check-config", "run"] {
            let out = binary(&[cmd], &path).output().unwrap();
            let text = String::from_utf8_lossy(&out.stderr).to_string();
            assert_eq!(out.status.code(), Some(2), "{cmd} {kafka}: {text}");
            assert_eq!(text.trim().lines().count(), 1, "{cmd}: one line: {text}");
            assert!(text.contains(key), "{cmd} names {key}: {text}");
            assert_clean(&format!("{cmd} with {kafka}"), &text);
        }
        let out = binary(&["check-config"], &path).output().unwrap();
        String::from_utf8_lossy(&out.stderr).to_string()
    };

    // librdkafka's own words: the unsecured OAUTHBEARER token it cannot build from the config
    // (it quotes "the config beginning at" a word) is refused before anything connects.
    let tail = OAUTH_CONFIG.trim_start_matches("principal=");
    let unsecured = |config: &str| {
        format!(
            "[kafka.properties]\n\"security.protocol\" = \"sasl_plaintext\"\n\"sasl.mechanism\" = \"OAUTHBEARER\"\n\"enable.sasl.oauthbearer.unsecure.jwt\" = true\n\"sasl.oauthbearer.config\" = {config:?}"
        )
    };
    let text = one_line(
        "oauth.toml",
        &unsecured(&format!("principal=admin {tail}")),
        "kafka.properties.\"sasl.oauthbearer.config\"",
    );
    assert!(
        text.contains("Unrecognized sasl.oauthbearer.config beginning at: <redacted>"),
        "librdkafka's reason, scrubbed: {text}"
    );
    assert!(!text.contains(tail), "{text}");
    // A config it can build a token from passes.
    let path = write("oauth-ok.toml", &unsecured(OAUTH_CONFIG));
    let out = binary(&["check-config"], &path).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert_clean("check-config with a valid unsecured token config", &said);

    // serde's type error would quote the value.
    let text = one_line(
        "typed.toml",
        "[kafka.security]\nsasl_mechanism = \"PLAIN\"\nusername = \"u\"\npassword = 123456789",
        "kafka.security.password",
    );
    assert!(
        !text.contains("123456789") && text.contains("an integer"),
        "{text}"
    );

    // A value cut out of librdkafka's reason leaves the rest of it whole.
    let text = one_line(
        "poll.toml",
        "max_poll_interval_ms = 0",
        "kafka.max_poll_interval_ms",
    );
    assert!(text.contains("range 1..86400000"), "{text}");

    // `${file:}` of a device or a directory: refused at once, naming key and path.
    let text = one_line(
        "zero.toml",
        "[kafka.properties]\n\"sasl.password\" = \"${file:/dev/zero}\"",
        "sasl.password",
    );
    assert!(
        text.contains("/dev/zero") && text.contains("regular file"),
        "{text}"
    );

    // What librdkafka refuses when it creates the client.
    let pem = dir.path().join("garbage.pem");
    std::fs::write(&pem, format!("{SASL_PASSWORD}\n")).unwrap();
    for (i, (kafka, key)) in [
        (
            format!("[kafka.properties]\n\"security.protocol\" = \"sasl_plaintext\"\n\"sasl.mechanism\" = \"SCRAM-SHA-999\"\n\"sasl.username\" = \"${{TEST_SASL_USER}}\"\n\"sasl.password\" = \"{SASL_PASSWORD}\""),
            "kafka.properties.\"sasl.mechanism\"",
        ),
        (
            format!("[kafka.properties]\n\"security.protocol\" = \"ssl\"\n\"ssl.ca.pem\" = \"{SASL_PASSWORD}\""),
            "kafka.properties.\"ssl.ca.pem\"",
        ),
        (
            format!("[kafka.security]\nprotocol = \"ssl\"\nca_file = {:?}", pem.display().to_string()),
            "kafka.security.ca_file",
        ),
    ]
    .iter()
    .enumerate()
    {
        one_line(&format!("client-{i}.toml"), kafka, key);
    }
}
