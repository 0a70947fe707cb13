//! The binary's `ddl` and `check-config` on a config whose Kafka settings come from the
//! environment: `ddl` reads only the destinations, so `[kafka]`'s variables need not be set;
//! `check-config` resolves and validates every value as `run` does (it is `run`'s gate), and
//! prints each destination's resolved topics.

use std::process::{Command, Output};

fn binary(cmd: &str, text: &str, env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sink.toml");
    std::fs::write(&path, text).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_kafka-s3-sink"));
    c.arg(cmd).arg("--config").arg(&path);
    c.env_remove("KSS_TEST_UNSET_BROKERS");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

const CONFIG: &str = r#"
[kafka]
brokers = "${KSS_TEST_UNSET_BROKERS}"
group_id = "g"
topics = ["events", "clicks", "^audit-.*"]

[kafka.security]
protocol = "sasl_ssl"
sasl_mechanism = "SCRAM-SHA-512"
username = "u"
password = "${file:/nonexistent/kafka-password}"

[[destinations]]
name = "all"
bucket = "b"
prefix = "events/"

[destinations.routing]
folder_template = "dt=%Y-%m-%d/"

[[destinations]]
name = "clicks"
bucket = "b"
prefix = "clicks/"
topics = ["clicks"]
"#;

#[test]
fn ddl_needs_no_kafka_variables() {
    let out = binary("ddl", CONFIG, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let ddl = String::from_utf8(out.stdout).unwrap();
    assert!(ddl.contains("CREATE EXTERNAL TABLE"), "{ddl}");
    assert!(ddl.contains("s3://b/events/"), "{ddl}");
}

#[test]
fn check_config_resolves_everything_run_would() {
    let out = binary("check-config", CONFIG, &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("KSS_TEST_UNSET_BROKERS"), "{stderr}");
}

#[test]
fn check_config_prints_each_destinations_resolved_topics() {
    let text = CONFIG
        .replace("${KSS_TEST_UNSET_BROKERS}", "b1:9092")
        .replace("${file:/nonexistent/kafka-password}", "pw");
    let out = binary("check-config", &text, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: toml::Table = String::from_utf8(out.stdout).unwrap().parse().unwrap();
    let topics = |i: usize| printed["destinations"][i]["topics"].clone();
    let want = |t: &[&str]| toml::Value::Array(t.iter().map(|&s| s.into()).collect());
    assert_eq!(topics(0), want(&["events", "clicks", "^audit-.*"]));
    assert_eq!(topics(1), want(&["clicks"]));
}
