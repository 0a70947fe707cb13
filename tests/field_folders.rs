//! Folders by a field's value (`{field:path}` in `folder_template`), against librdkafka's mock
//! cluster and the in-process S3 server: a Hive-style layout `dt=…/hr=…/event=…/` where every
//! record lands in the folder of its own sanitised value, and hostile values (`/`, `..`, a
//! newline, 2,000 characters, an empty string, none at all) each produce a safe key.

// The in-process S3 server (tests/support) and `demo` are the test kit (Cargo.toml).
#![cfg(feature = "test-kit")]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_s3_sink::template::sanitize_field_value;
use support::{
    gen_events, json_str, start_pipeline, unique_group, GenOptions, Kafka, Msg, TestConfig, TestS3,
    BUCKET,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_land_in_the_folder_of_their_sanitised_value() {
    const TOPIC: &str = "fields";
    let kafka = Kafka::start();
    kafka.create_topic(TOPIC, 2);
    let s3 = TestS3::start().await;
    let group = unique_group("fields");
    let mut values: Vec<Vec<u8>> = gen_events(&GenOptions::new(400));
    let long = "x".repeat(2000);
    for (i, hostile) in ["/", "..", "a/../../b", "line\nbreak", long.as_str(), ""]
        .iter()
        .enumerate()
    {
        let v = serde_json::json!({
            "type": "track",
            "messageId": format!("hostile-{i}"),
            "timestamp": "2026-11-02T10:15:00.000Z",
            "event": hostile,
        });
        values.push(v.to_string().into_bytes());
    }
    let msgs: Vec<Msg> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Msg::new(i as i32 % 2, v.clone()))
        .collect();
    kafka.produce(TOPIC, msgs).await;

    let mut cfg = TestConfig::new(&kafka.brokers(), &group, &[TOPIC], &s3.endpoint());
    cfg.dest(
        0,
        "routing.folder_template",
        "dt=%Y-%m-%d/hr=%H/event={field:event}/",
    );
    let mut run = start_pipeline(cfg.build()).await;
    run.wait_committed_total(values.len() as i64, Duration::from_secs(60))
        .await;
    run.stop().await;

    let safe = regex_lite::Regex::new(
        r"^dt=\d{4}-\d{2}-\d{2}/hr=\d{2}/event=[A-Za-z0-9._~-]{1,64}/fields\+\d+\+\d{20}\.ndjson\.gz$",
    )
    .unwrap();
    let mut per_value: BTreeMap<String, usize> = BTreeMap::new();
    let mut lines = 0;
    for o in s3.objects(BUCKET) {
        assert!(safe.is_match(&o.key), "unsafe key {:?}", o.key);
        let folder_value = o
            .key
            .split('/')
            .find_map(|s| s.strip_prefix("event="))
            .unwrap()
            .to_string();
        assert!(!folder_value.starts_with('.'), "{}", o.key);
        for line in o.lines() {
            lines += 1;
            let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
            let want = match v.get("event").and_then(|e| e.as_str()) {
                Some(e) => sanitize_field_value(e),
                None => "__unknown__".to_string(),
            };
            assert_eq!(
                folder_value,
                want,
                "{}: {:?}",
                o.key,
                json_str(&line, "messageId")
            );
            *per_value.entry(folder_value.clone()).or_default() += 1;
        }
    }
    assert_eq!(lines, values.len());
    assert!(
        per_value.contains_key("__unknown__"),
        "events without `event` (page, identify…)"
    );
    assert!(per_value.contains_key("Product_Viewed"), "{per_value:?}");
    eprintln!(
        "field folders: {lines} records in {} event values",
        per_value.len()
    );
    s3.stop().await;
}
