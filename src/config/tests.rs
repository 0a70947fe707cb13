use super::*;
use std::time::Duration;

const MINIMAL: &str = r#"
[kafka]
brokers = "localhost:9092"
group_id = "g"
topics = ["events"]

[[destinations]]
name = "s3"
bucket = "b"
"#;

fn env(name: &str) -> Option<String> {
    (name == "SECRET").then(|| "hunter2".to_string())
}

fn parse_ok(text: &str) -> Config {
    parse(text, &env).unwrap_or_else(|e| panic!("{e}"))
}

fn parse_err(text: &str) -> ConfigError {
    parse(text, &env).expect_err("config should be rejected")
}

#[test]
fn zstd_defaults_to_level_1_and_prints_its_level() {
    let c = parse_ok(&format!(
        "{MINIMAL}\n[destinations.batch]\ncompression = \"zstd\"\n"
    ));
    let zstd = c.destinations[0].batch.compression;
    assert_eq!(zstd, Compression::Zstd { level: 1 });
    assert_eq!(zstd.to_string(), "zstd level 1");
    assert_eq!(Compression::Gzip { level: 6 }.to_string(), "gzip level 6");
    assert_eq!(Compression::None.to_string(), "none");
    assert_eq!(ParquetCodec::Zstd(1).to_string(), "zstd level 1");
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = parse_ok(MINIMAL);
    let d = &c.destinations[0];
    assert_eq!(d.region, "us-east-1");
    assert_eq!(d.topics.entries(), ["events".to_string()]);
    assert_eq!(d.batch.compression, Compression::Gzip { level: 6 });
    assert_eq!(d.batch.max_age, Duration::from_secs(300));
    assert_eq!(d.encryption, Encryption::None);
    assert_eq!(d.content_type, "application/x-ndjson");
    assert!(!d.content_encoding_header);
    assert!(matches!(
        d.routing.time_source,
        TimeSource::EventTime { .. }
    ));
    assert_eq!(c.pipeline.memory_budget_bytes, 256 * 1024 * 1024);
    assert_eq!(c.upload.part_size_bytes, 8 * 1024 * 1024);
    assert_eq!(c.upload.retry.max_attempts, None);
    assert_eq!(c.kafka.properties["enable.auto.commit"], "false");
    assert_eq!(
        c.kafka.properties["partition.assignment.strategy"],
        "cooperative-sticky"
    );
}

#[test]
fn unknown_keys_are_rejected_with_their_path() {
    let e = parse_err(&format!("{MINIMAL}\n[destinations.batch]\nmax_bytez = 5\n"));
    assert_eq!(e.key, "destinations[0].batch.max_bytez");
    assert!(e.message.contains("unknown field"), "{e}");
    assert!(!e.to_string().contains('\n'), "one line: {e}");
}

#[test]
fn missing_required_key_is_named() {
    let e = parse_err("[kafka]\nbrokers = \"x\"\ntopics = [\"t\"]\n[[destinations]]\nname = \"a\"\nbucket = \"b\"\n");
    assert!(e.to_string().contains("group_id"), "{e}");
}

#[test]
fn toml_syntax_errors_give_a_line() {
    let e = parse_err("[kafka\nbrokers = 1");
    assert!(e.key.starts_with("line "), "{e}");
    assert!(!e.to_string().contains('\n'));
}

#[test]
fn encryption_spellings() {
    let with = |mode: &str| format!("{MINIMAL}\n[destinations.encryption]\nmode = \"{mode}\"\n");
    assert_eq!(
        parse_ok(&with("AES-256")).destinations[0].encryption,
        Encryption::Aes256
    );
    assert_eq!(
        parse_ok(&with("AES256")).destinations[0].encryption,
        Encryption::Aes256
    );
    assert_eq!(
        parse_ok(&format!("{}kms_key_id = \"k1\"\n", with("aws:kms"))).destinations[0].encryption,
        Encryption::Kms {
            key_id: Some("k1".into()),
            bucket_key: false,
            context: None,
        }
    );
    let e = parse_err(&with("AES-512"));
    assert_eq!(e.key, "destinations[0].encryption.mode");
    assert!(e.message.contains("AES256"), "{e}");
}

#[test]
fn secrets_interpolate_and_never_print() {
    let c = parse_ok(&format!(
        "{MINIMAL}\n[destinations.credentials]\naccess_key_id = \"AKIA\"\nsecret_access_key = \"${{SECRET}}\"\n"
    ));
    let (_, sk, _) = c.destinations[0].credentials.static_keys.clone().unwrap();
    assert_eq!(sk.expose(), "hunter2");
    assert!(!format!("{c:?}").contains("hunter2"));
    let rendered = render_redacted(&c.raw);
    assert!(!rendered.contains("hunter2"), "{rendered}");
    assert!(rendered.contains("<redacted>"));
}

#[test]
fn kafka_password_properties_are_redacted() {
    let c = parse_ok(&MINIMAL.replace(
        "topics = [\"events\"]",
        "topics = [\"events\"]\n[kafka.properties]\n\"sasl.password\" = \"${SECRET}\"\n\"fetch.min.bytes\" = 1",
    ));
    assert_eq!(c.kafka.properties["sasl.password"], "hunter2");
    assert_eq!(c.kafka.properties["fetch.min.bytes"], "1");
    assert!(!render_redacted(&c.raw).contains("hunter2"));
}

#[test]
fn missing_env_var_is_an_error() {
    let e = parse_err(&MINIMAL.replace("\"b\"", "\"${NOPE}\""));
    assert_eq!(e.key, "destinations[0].bucket");
    assert!(e.message.contains("NOPE"));
}

#[test]
fn cross_field_rules() {
    let e = parse_err(&format!("{MINIMAL}\n[upload]\npart_size_bytes = 1000\n"));
    assert_eq!(e.key, "upload.part_size_bytes");
    let e = parse_err(&format!(
        "{MINIMAL}\n[pipeline]\ndrain_deadline_secs = 60\n"
    ));
    assert_eq!(e.key, "pipeline.drain_deadline_secs");
    let e = parse_err(&MINIMAL.replace(
        "topics = [\"events\"]",
        "topics = [\"events\"]\n[kafka.properties]\n\"enable.auto.commit\" = true",
    ));
    assert!(e.message.contains("managed"), "{e}");
    let e = parse_err(&format!(
        "{MINIMAL}\n[destinations.routing]\ntime_source = \"none\"\n"
    ));
    assert_eq!(e.key, "destinations[0].routing.folder_template");
    let e = parse_err(&format!(
        "{MINIMAL}\n[destinations.filter]\ninclude = [\"track\"]\n"
    ));
    assert_eq!(e.key, "destinations[0].filter.field");
    let e = parse_err(&MINIMAL.replace("bucket = \"b\"", "bucket = \"b\"\ntopics = [\"other\"]"));
    assert_eq!(e.key, "destinations[0].topics");
    let e = parse_err(&format!(
        "{MINIMAL}\n[destinations.routing]\ntimezone = \"Mars/Olympus\"\n"
    ));
    assert_eq!(e.key, "destinations[0].routing.timezone");
    let e = parse_err(&format!(
        "{MINIMAL}\n[destinations.routing]\nfile_template = \"{{nope}}\"\n"
    ));
    assert_eq!(e.key, "destinations[0].routing.file_template");
}

#[test]
fn several_destinations_and_unique_names() {
    let two = format!("{MINIMAL}\n[[destinations]]\nname = \"s3\"\nbucket = \"c\"\n");
    let e = parse_err(&two);
    assert_eq!(e.key, "destinations[1].name");
    let ok = format!(
        "{MINIMAL}\n[[destinations]]\nname = \"other\"\nbucket = \"c\"\nprefix = \"x/y\"\n"
    );
    let c = parse_ok(&ok);
    assert_eq!(c.destinations.len(), 2);
    assert_eq!(c.destinations[1].prefix, "x/y/");
    // A leading '/' would be an empty folder at the bucket root.
    let e = parse_err(&ok.replace("\"x/y\"", "\"/x/y/\""));
    assert_eq!(e.key, "destinations[1].prefix");
}

#[test]
fn shipped_examples_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            parse(&text, &|_| Some("x".into()))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 4, "one example per seed layout");
}

/// Values too large for any arithmetic on instants and dates fail at start-up with one line
/// naming the key, instead of panicking later.
#[test]
fn overflowing_values_are_refused_with_their_key() {
    let huge = u64::MAX;
    for (section, key) in [
        ("destinations.routing", "max_future_secs"),
        ("destinations.routing", "max_past_secs"),
        ("destinations.batch", "max_age_secs"),
        ("destinations.batch", "idle_secs"),
        ("pipeline", "shutdown_deadline_secs"),
        ("upload", "request_timeout_secs"),
        ("upload", "orphaned_upload_min_age_secs"),
        ("upload", "retry_max_backoff_ms"),
        ("upload", "concurrency"),
        ("http", "unready_after_failing_secs"),
        ("http", "header_read_timeout_ms"),
        ("http", "max_connections"),
    ] {
        let e = parse_err(&format!("{MINIMAL}\n[{section}]\n{key} = {}\n", huge / 2));
        assert!(e.key.ends_with(key), "{key}: {e}");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }
    // A 100-year window is still accepted (backfills of old data).
    let c = parse_ok(&format!(
        "{MINIMAL}\n[destinations.routing]\nmax_past_secs = {}\n",
        100_u64 * 365 * 86_400
    ));
    assert!(c.destinations[0].routing.max_past.is_some());
}

/// Topic patterns (`^…`, as librdkafka subscribes to them): valid regexes only, destinations
/// list subscribed names or the same patterns, and every subscription feeds a destination.
#[test]
fn topic_patterns_are_checked_and_every_topic_feeds_a_destination() {
    let base = |kafka: &str, dest: &str| {
        format!("[kafka]\nbrokers = \"x:9092\"\ngroup_id = \"g\"\ntopics = {kafka}\n\n[[destinations]]\nname = \"s3\"\nbucket = \"b\"\n{dest}")
    };
    let c = parse_ok(&base(r#"["^ev-.*"]"#, ""));
    let t = &c.destinations[0].topics;
    assert!(t.matches("ev-clicks") && !t.matches("other") && t.exact().is_none());
    // A destination may take a name one of the patterns matches.
    let c = parse_ok(&base(
        r#"["^ev-.*", "audit"]"#,
        "topics = [\"^ev-.*\", \"audit\"]\n",
    ));
    assert!(c.destinations[0].topics.matches("audit"));
    let e = parse_err(&base(r#"["^ev-("]"#, ""));
    assert_eq!(e.key, "kafka.topics[0]");
    assert!(e.message.contains("not a valid pattern"), "{e}");
    // A subscribed topic or pattern no destination takes would be committed unwritten.
    let e = parse_err(&base(r#"["^ev-.*", "audit"]"#, "topics = [\"audit\"]\n"));
    assert_eq!(e.key, "kafka.topics[0]");
    assert!(e.message.contains("feeds no destination"), "{e}");
    let e = parse_err(&base(r#"["a", "b"]"#, "topics = [\"a\"]\n"));
    assert_eq!(e.key, "kafka.topics[1]");
    // A destination's topic must be subscribed.
    let e = parse_err(&base(r#"["a"]"#, "topics = [\"a\", \"z\"]\n"));
    assert_eq!(e.key, "destinations[0].topics");
}

/// `Debug` of the whole config (raw and typed) never shows a secret: credentials are
/// `Secret`s, and sensitive librdkafka properties (librdkafka's own list and name patterns) are
/// redacted.
#[test]
fn debug_output_never_shows_secrets() {
    let text = format!(
        "{MINIMAL}\n[destinations.credentials]\naccess_key_id = \"AKIA\"\nsecret_access_key = \"${{SECRET}}\"\n"
    )
    .replace(
        "topics = [\"events\"]",
        "topics = [\"events\"]\n[kafka.properties]\n\"sasl.username\" = \"${SECRET}\"\n\"sasl.password\" = \"${SECRET}\"\n\"sasl.oauthbearer.config\" = \"${SECRET}\"\n\"ssl.keystore.password\" = \"${SECRET}\"\n\"sasl.oauthbearer.client.secret\" = \"${SECRET}\"\n\"fetch.min.bytes\" = \"7\"",
    );
    let c = parse_ok(&text);
    let shown = format!("{c:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        shown.contains("fetch.min.bytes"),
        "non-secrets stay visible"
    );
    assert!(!render_redacted(&c.raw).contains("hunter2"));
    for name in LIBRDKAFKA_SENSITIVE {
        assert!(is_sensitive_property(name), "{name}");
    }
    assert!(!is_sensitive_property("fetch.min.bytes"));
}

#[test]
fn parquet_format_rules() {
    let pq = "\n[destinations.batch]\nformat = \"parquet\"\n[destinations.parquet]\ncolumns = [{ name = \"ip\", path = \"context.ip\", type = \"string\" }]\n";
    let c = parse_ok(&format!("{MINIMAL}{pq}"));
    let d = &c.destinations[0];
    assert_eq!(d.data_suffix(), "");
    assert_eq!(
        d.routing.file,
        crate::template::FileTemplate::parse(crate::template::PARQUET_FILE_TEMPLATE).unwrap()
    );
    let e = parse_err(&format!(
        "{MINIMAL}{pq}[destinations.filter]\ndrop_fields = [\"context\"]\n"
    ));
    assert_eq!(e.key, "destinations[0].parquet.columns[0].path", "{e}");
    let e = parse_err(&format!(
        "{MINIMAL}\n[destinations.parquet]\nraw_column = \"raw\"\n"
    ));
    assert_eq!(e.key, "destinations[0].parquet", "{e}");
    let e = parse_err(&format!(
        "{MINIMAL}\n[destinations.batch]\nformat = \"csv\"\n"
    ));
    assert_eq!(e.key, "destinations[0].batch.format", "{e}");
}

#[test]
fn destinations_only_parsing_tolerates_unresolved_kafka_references() {
    let text = "[kafka]\nbrokers = \"${NOT_SET_BROKERS}\"\ngroup_id = \"g-${GROUP_SUFFIX}\"\ntopics = [\"t\"]\n\
                [[destinations]]\nname = \"d\"\nbucket = \"${BUCKET}\"\n";
    let env = |n: &str| match n {
        "BUCKET" => Some("b".to_string()),
        "GROUP_SUFFIX" => Some("x".to_string()),
        _ => None,
    };
    assert_eq!(parse(text, &env).unwrap_err().key, "kafka.brokers");
    let c = parse_with(text, &env, true).unwrap();
    assert_eq!(c.destinations[0].bucket, "b");
    assert_eq!(c.raw.kafka.brokers, UNRESOLVED);
    assert_eq!(c.raw.kafka.group_id, "g-x", "what resolves is resolved");
    // The destinations stay strict.
    let e = parse_with(text, &|_| None, true).unwrap_err();
    assert!(e.key.contains("bucket"), "{e}");
}

/// A value of the wrong type at a secret key is refused without quoting it (serde's own message
/// did: ``invalid type: integer `123456789` ``).
#[test]
fn a_secret_of_the_wrong_type_is_not_quoted() {
    for (value, kind) in [
        ("123456789", "an integer"),
        ("12345.678", "a float"),
        ("true", "a boolean"),
    ] {
        let text = MINIMAL.replace(
            "topics = [\"events\"]",
            &format!("topics = [\"events\"]\n[kafka.security]\nsasl_mechanism = \"PLAIN\"\nusername = \"u\"\npassword = {value}"),
        );
        let e = parse_err(&text);
        assert_eq!(e.key, "kafka.security.password");
        assert!(e.message.contains(kind), "{e}");
        assert!(!e.to_string().contains(value), "{e}");
    }
}

/// Every secret key's value (inline, `${VAR}` or `${file:}`), every `${file:}` and every
/// `${VAR}` named like a secret is scrubbed; other values stay readable, and so does an error
/// that would quote a secret.
#[test]
fn the_config_knows_its_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "file-secret-7f3a\n").unwrap();
    let env = |name: &str| match name {
        "S3_SECRET_KEY" => Some("env-secret-91bd".to_string()),
        "BUCKET" => Some("plain-bucket".to_string()),
        _ => None,
    };
    let text = format!(
        r#"
[kafka]
brokers = "localhost:9092"
group_id = "g"
topics = ["events"]
[kafka.properties]
"sasl.jaas.config" = "inline-jaas-5c2e"
"fetch.min.bytes" = 7
[kafka.security]
sasl_mechanism = "PLAIN"
username = "inline-user-11aa"
password = "${{file:{}}}"
key_password = "inline-keypw-22bb"
key_file = "{key}"
cert_file = "{key}"
[[destinations]]
name = "s3"
bucket = "${{BUCKET}}"
[destinations.credentials]
access_key_id = "AKIA"
secret_access_key = "${{S3_SECRET_KEY}}"
session_token = "inline-sts-token-33cc"
external_id = "inline-external-44dd"
"#,
        file.display(),
        key = file.display()
    );
    let c = parse(&text, &env).unwrap_or_else(|e| panic!("{e}"));
    let all = [
        "inline-jaas-5c2e",
        "inline-user-11aa",
        "file-secret-7f3a",
        "inline-keypw-22bb",
        "env-secret-91bd",
        "inline-sts-token-33cc",
        "inline-external-44dd",
    ];
    let line = format!("{} plain-bucket 7 AKIA", all.join(" "));
    let expected = format!(
        "{} plain-bucket 7 AKIA",
        vec!["<redacted>"; all.len()].join(" ")
    );
    assert_eq!(c.secrets.scrub(&line), expected);
    // Every `Secret` the config holds is among them: as many as `check-config` redacts.
    let rendered = render_redacted(&c.raw);
    assert_eq!(
        rendered.matches("<redacted>").count(),
        all.len(),
        "{rendered}"
    );
    // An error that would quote a secret is scrubbed before it is returned.
    let e2 = parse(
        &text.replace(
            "sasl_mechanism = \"PLAIN\"",
            "sasl_mechanism = \"${S3_SECRET_KEY}\"",
        ),
        &env,
    )
    .unwrap_err();
    assert!(!e2.to_string().contains("env-secret-91bd"), "{e2}");
    assert!(e2.to_string().contains("<redacted>"), "{e2}");
}

/// An unknown key is echoed at most 100 characters, in the key and in the message.
#[test]
fn an_unknown_key_is_echoed_short() {
    let long = "k".repeat(5000);
    let e = parse_err(&MINIMAL.replace("group_id", &format!("{long} = 1\ngroup_id")));
    assert!(e.to_string().len() < 700, "{e}");
    assert!(
        e.key.starts_with("kafka.kkk") && e.key.ends_with('…'),
        "{}",
        e.key
    );
    assert!(e.message.starts_with("unknown field `kkk"), "{e}");
    assert!(!e.to_string().contains(&"k".repeat(101)), "{e}");
}
