//! Operability: readiness of an idle replica, wrong settings refused at start-up in one line
//! (exit 2), an honest exit code when the shutdown deadline leaves records uncommitted (exit 3),
//! and S3 failures logged once per cause rather than once per retry. The binary runs against
//! librdkafka's mock cluster and the in-process S3 server of this process.

// The in-process S3 server (tests/support) and `demo` are the test kit (Cargo.toml).
#![cfg(feature = "test-kit")]

mod support;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_s3_sink::metrics::Metrics;
use support::*;
use tokio::time::Instant;

/// The binary running `run` on a config file, its stderr collected line by line.
struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Proc {
    /// Starts `run` with `cfg`, an empty environment but for `env` (no AWS variables, no
    /// profile files, IMDS off, HOME in a temp dir), plain logs.
    fn run(cfg: &TestConfig, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sink.toml");
        std::fs::write(&path, cfg.toml()).expect("config");
        // Empty AWS profile files: nothing to read, nothing to warn about.
        for f in ["aws-config", "aws-credentials"] {
            std::fs::write(dir.path().join(f), "").expect("empty AWS file");
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kafka-s3-sink"));
        cmd.env_clear()
            .env("HOME", dir.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", dir.path().join("aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.path().join("aws-credentials"),
            )
            .env("KAFKA_S3_SINK_LOG_FORMAT", "plain")
            .envs(env.iter().copied())
            .args(["run", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn the binary");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            lines,
            reader: Some(reader),
            _dir: dir,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until a stderr line contains `what`.
    async fn wait_line(&mut self, what: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.lines().iter().any(|l| l.contains(what)) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "exited ({status}) before logging {what:?}:\n{}",
                    self.lines().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {what:?} within {within:?}:\n{}",
                self.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the exit; returns its code and every stderr line.
    async fn wait_exit(&mut self, within: Duration) -> (i32, Vec<String>) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // The reader ends with the pipe, after the last line.
                if let Some(r) = self.reader.take() {
                    let _ = tokio::task::spawn_blocking(move || r.join()).await;
                }
                return (status.code().unwrap_or(-1), self.lines());
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "did not exit within {within:?}:\n{}",
                    self.lines().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn terminate(&self) {
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config for the binary: metrics on a free port.
fn binary_config(kafka: &Kafka, s3: &TestS3, topic: &str) -> TestConfig {
    let mut cfg = TestConfig::new(
        &kafka.brokers(),
        &unique_group(topic),
        &[topic],
        &s3.endpoint(),
    );
    cfg.set("http.listen", "127.0.0.1:0");
    cfg
}

/// Lines after start-up's own two (listening, client configured) at most.
const A_HANDFUL: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credentials_exits_2_with_one_line_naming_the_fix() {
    let kafka = Kafka::start();
    kafka.create_topic("ops-creds", 1);
    let s3 = TestS3::start().await;
    let mut cfg = binary_config(&kafka, &s3, "ops-creds");
    cfg.destination(0).remove("credentials");
    let mut p = Proc::run(&cfg, &[]);
    let (code, lines) = p.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(code, 2, "{}", lines.join("\n"));
    let fix: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("no AWS credentials found"))
        .collect();
    assert_eq!(fix.len(), 1, "{}", lines.join("\n"));
    assert!(fix[0].contains("AWS_ACCESS_KEY_ID"), "{}", fix[0]);
    assert!(
        lines.len() <= A_HANDFUL,
        "{} lines:\n{}",
        lines.len(),
        lines.join("\n")
    );
    assert!(
        lines.iter().all(|l| l.len() < 600),
        "a line runs long:\n{}",
        lines.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_exits_2_with_one_line_naming_the_fix() {
    let kafka = Kafka::start();
    kafka.create_topic("ops-bucket", 1);
    let s3 = TestS3::start().await;
    let mut cfg = binary_config(&kafka, &s3, "ops-bucket");
    cfg.dest(0, "bucket", "no-such-bucket");
    let mut p = Proc::run(&cfg, &[]);
    let (code, lines) = p.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(code, 2, "{}", lines.join("\n"));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("bucket `no-such-bucket` does not exist in us-east-1")),
        "{}",
        lines.join("\n")
    );
    assert!(
        lines.len() <= A_HANDFUL,
        "{} lines:\n{}",
        lines.len(),
        lines.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_on_the_bucket_check_exits_2() {
    let kafka = Kafka::start();
    kafka.create_topic("ops-denied", 1);
    let s3 = TestS3::start().await;
    s3.server.faults().fail_matching_with(
        u32::MAX,
        kafka_s3_sink::s3server::Fault::access_denied(),
        |_| true,
    );
    let cfg = binary_config(&kafka, &s3, "ops-denied");
    let mut p = Proc::run(&cfg, &[]);
    let (code, lines) = p.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(code, 2, "{}", lines.join("\n"));
    assert!(
        lines.iter().any(|l| l.contains("access denied to bucket")),
        "{}",
        lines.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_topic_exits_2_naming_it() {
    let kafka = Kafka::start();
    kafka.create_topic("ops-known", 1);
    let s3 = TestS3::start().await;
    let cfg = binary_config(&kafka, &s3, "ops-unknown");
    let mut p = Proc::run(&cfg, &[]);
    let (code, lines) = p.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(code, 2, "{}", lines.join("\n"));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("topic `ops-unknown` does not exist")),
        "{}",
        lines.join("\n")
    );
}

/// S3 answers 503 to every write; the shutdown deadline cancels the uploads: exit 3, the count
/// of records left uncommitted, no "stopped cleanly", and the failures logged once per cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_that_cancels_uploads_exits_3_and_counts_what_stays_uncommitted() {
    let kafka = Kafka::start();
    kafka.create_topic("ops-cancel", 1);
    let s3 = TestS3::start().await;
    let events = gen_events(&GenOptions::new(300));
    kafka.produce("ops-cancel", round_robin(events, 1)).await;
    s3.server
        .faults()
        .fail_matching(u32::MAX, |r| r.is_put_object());
    let mut cfg = binary_config(&kafka, &s3, "ops-cancel");
    cfg.set("pipeline.drain_deadline_secs", 1)
        .set("pipeline.shutdown_deadline_secs", 2)
        .dest(0, "batch.max_records", 100);
    let mut p = Proc::run(&cfg, &[]);
    p.wait_line("flush", GROUP_DEADLINE).await;
    // Every file of the 300 records is closed and failing.
    p.wait_line("S3 request failed; retrying", GROUP_DEADLINE)
        .await;
    p.terminate();
    let (code, lines) = p.wait_exit(Duration::from_secs(60)).await;
    let all = lines.join("\n");
    assert_eq!(code, 3, "{all}");
    assert!(!all.contains("stopped cleanly"), "{all}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("stopped with 300 records uncommitted")),
        "{all}"
    );
    // One line per distinct cause (PutObject 503), not one per retry.
    let retried = lines
        .iter()
        .filter(|l| l.contains("S3 request failed"))
        .count();
    assert!(retried <= 2, "{retried} S3 failure lines:\n{all}");
    let failure = lines
        .iter()
        .find(|l| l.contains("S3 request failed; retrying"))
        .expect("a failure line");
    for part in ["PutObject", "HTTP 503", "SlowDown", "s3://sink-test/"] {
        assert!(failure.contains(part), "{part} missing in {failure}");
    }
}

/// A replica with nothing to own (the topic has one partition, the other replica holds it) and
/// an idle topic: both become ready once they joined the group and the bucket check answered,
/// and the bucket check counts as an S3 request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_replica_with_no_partitions_becomes_ready() {
    let kafka = Kafka::start();
    kafka.create_topic("ops-idle", 1);
    let s3 = TestS3::start().await;
    let group = unique_group("ops-idle");
    let cfg = TestConfig::new(&kafka.brokers(), &group, &["ops-idle"], &s3.endpoint());
    let registries = [prometheus::Registry::new(), prometheus::Registry::new()];
    let mut running = Vec::new();
    let mut healths = Vec::new();
    for r in &registries {
        let metrics = Metrics::new(r).expect("metrics");
        healths.push(metrics.health());
        running.push(start_pipeline_with_metrics(cfg.build(), metrics).await);
    }
    let deadline = Instant::now() + GROUP_DEADLINE;
    loop {
        let reasons: Vec<Option<String>> = healths.iter().map(|h| h.not_ready_reason()).collect();
        if reasons.iter().all(Option::is_none) {
            break;
        }
        assert!(Instant::now() < deadline, "not ready: {reasons:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for r in &registries {
        assert!(counter_sum(r, "kafka_s3_sink_s3_requests_total", &[]) >= 1);
    }
    for r in running {
        r.stop().await;
    }
}

/// `check-config --connect`: one line per check, ok or the fix, exit 2 when one fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_connect_says_ok_or_the_fix_per_check() {
    let kafka = Kafka::start();
    kafka.create_topic("ops-connect", 3);
    let s3 = TestS3::start().await;
    let run = |cfg: TestConfig| async move {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sink.toml");
        std::fs::write(&path, cfg.toml()).expect("config");
        let out = tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_kafka-s3-sink"))
                .args(["check-config", "--connect", "--config"])
                .arg(&path)
                .output()
                .expect("run check-config")
        })
        .await
        .expect("joined");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let good = binary_config(&kafka, &s3, "ops-connect");
    let (code, text) = run(good.clone()).await;
    assert_eq!(code, 0, "{text}");
    for line in [
        "`test` credentials: ok",
        "`test` bucket: ok",
        "`test` write: ok (wrote `_kafka-s3-sink-probe`; If-None-Match honoured)",
        "kafka brokers: ok",
        "kafka topics: ok (`ops-connect` (3 partitions))",
    ] {
        assert!(text.contains(line), "{line:?} missing in:\n{text}");
    }
    let mut bad = good;
    bad.dest(0, "bucket", "no-such-bucket")
        .set("kafka.topics", toml::Value::Array(vec!["ops-nope".into()]));
    bad.dest(0, "topics", toml::Value::Array(vec!["ops-nope".into()]));
    let (code, text) = run(bad).await;
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains(
            "bucket: FAILED: destinations[0] (`test`): bucket `no-such-bucket` does not exist"
        ),
        "{text}"
    );
    assert!(
        text.contains("kafka topics: FAILED: kafka.topics: topic `ops-nope` does not exist"),
        "{text}"
    );
}
