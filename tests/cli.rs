//! The binary's `check-config`: one-line errors naming the key, redacted output.

use std::process::Command;

fn check_config(text: &str, env: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sink.toml");
    std::fs::write(&path, text).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kafka-s3-sink"));
    cmd.arg("check-config").arg("--config").arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

const GOOD: &str = r#"
[kafka]
brokers = "localhost:9092"
group_id = "g"
topics = ["events"]

[[destinations]]
name = "s3"
bucket = "b"

[destinations.credentials]
access_key_id = "AKIAEXAMPLE"
secret_access_key = "${TEST_SECRET_KEY}"
"#;

#[test]
fn good_config_prints_resolved_and_redacted() {
    let out = check_config(GOOD, &[("TEST_SECRET_KEY", "very-secret-value")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!stdout.contains("very-secret-value"), "{stdout}");
    assert!(stdout.contains("<redacted>"), "{stdout}");
    assert!(
        stdout.contains("max_records = 1000000"),
        "defaults are shown: {stdout}"
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("very-secret-value"));
}

#[test]
fn bad_config_fails_with_one_line_naming_the_key() {
    let bad = GOOD.replace(
        "bucket = \"b\"",
        "bucket = \"b\"\n[destinations.encryption]\nmode = \"AES-512\"",
    );
    let out = check_config(&bad, &[("TEST_SECRET_KEY", "x")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("destinations[0].encryption.mode"),
        "{stderr}"
    );
    assert!(stderr.contains("AES256"), "names the fix: {stderr}");
}

#[test]
fn missing_secret_variable_is_reported() {
    let out = check_config(GOOD, &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("TEST_SECRET_KEY"), "{stderr}");
    assert!(
        stderr.contains("destinations[0].credentials.secret_access_key"),
        "{stderr}"
    );
}

/// librdkafka properties are checked by librdkafka itself at `check-config` (nothing connects):
/// a misspelt or invalid property fails with one line naming the key and librdkafka's reason,
/// never the value (which may be a password); sensitive values are redacted in the printout.
#[test]
fn kafka_properties_are_checked_and_never_printed() {
    let with_props = |props: &str| {
        GOOD.replace(
            "topics = [\"events\"]",
            &format!("topics = [\"events\"]\n\n[kafka.properties]\n{props}"),
        )
    };
    let secret = "pa55-w0rd-do-not-print";
    let out = check_config(
        &with_props(&format!("\"sasl.pasword\" = \"{secret}\"")),
        &[("TEST_SECRET_KEY", "x")],
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(r#"kafka.properties."sasl.pasword""#),
        "{stderr}"
    );
    assert!(stderr.contains("no such property"), "{stderr}");
    assert!(!stderr.contains(secret), "{stderr}");
    assert!(out.stdout.is_empty());

    let out = check_config(
        &with_props(&format!("\"enable.idempotence\" = \"{secret}\"")),
        &[("TEST_SECRET_KEY", "x")],
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("enable.idempotence") && stderr.contains("invalid value"),
        "{stderr}"
    );
    assert!(!stderr.contains(secret), "{stderr}");

    // Valid sensitive properties pass and are redacted, librdkafka's own list included.
    let out = check_config(
        &with_props(&format!(
            "\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"PLAIN\"\n\"sasl.username\" = \"{secret}-user\"\n\"sasl.password\" = \"{secret}\"\n\"sasl.oauthbearer.config\" = \"{secret}-cfg\""
        )),
        &[("TEST_SECRET_KEY", "x")],
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stdout.contains(secret) && !stderr.contains(secret),
        "{stdout}"
    );
    assert_eq!(stdout.matches("<redacted>").count(), 4, "{stdout}");
}
