use super::*;
use crate::config::{parse, TimeFormat};
use crate::model::TopicPartition;
use chrono::TimeZone;

fn dest(extra: &str) -> DestinationConfig {
    let text = format!(
        "[kafka]\nbrokers = \"x\"\ngroup_id = \"g\"\ntopics = [\"t\"]\n[[destinations]]\nname = \"d\"\nbucket = \"b\"\n{extra}"
    );
    parse(&text, &|_| None).unwrap().destinations.remove(0)
}

fn rec(value: &str) -> Record {
    Record {
        tp: TopicPartition::new("t", 0),
        offset: 1,
        timestamp_ms: Some(1_762_000_000_000),
        key: None,
        value: Some(bytes::Bytes::copy_from_slice(value.as_bytes())),
        headers: None,
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

fn folder_of(r: &Router, v: &str) -> String {
    match r.route(&rec(v), now()) {
        Route::Write {
            folder: FolderKey::Slot(s, _),
            ..
        } => s.map(|s| s.to_string()).unwrap_or_default(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn event_time_formats() {
    let r = Router::new(&dest(""));
    assert_eq!(
        folder_of(&r, r#"{"timestamp":"2026-11-01T07:30:00.123Z"}"#),
        "2026-11-01 07:00:00"
    );
    assert_eq!(
        folder_of(&r, r#"{"timestamp":"2026-11-01T07:30:00+02:00"}"#),
        "2026-11-01 05:00:00"
    );
    assert_eq!(
        folder_of(&r, r#"{"timestamp":1761980400}"#),
        "2025-11-01 07:00:00"
    );
    assert_eq!(
        folder_of(&r, r#"{"timestamp":1761980400123}"#),
        "2025-11-01 07:00:00"
    );
    assert_eq!(
        folder_of(&r, r#"{"timestamp":1761980400.5}"#),
        "2025-11-01 07:00:00"
    );
    assert_eq!(
        folder_of(&r, r#"{"timestamp":"1761980400"}"#),
        "2025-11-01 07:00:00"
    );
}

#[test]
fn explicit_formats_reject_the_other_kinds() {
    assert_eq!(
        parse_time(&Scalar::Int(1_761_980_400), TimeFormat::Rfc3339),
        None
    );
    assert_eq!(
        parse_time(
            &Scalar::Str("2026-11-01T00:00:00Z".into()),
            TimeFormat::EpochSeconds
        ),
        None
    );
    assert_eq!(
        parse_time(&Scalar::Int(1_761_980_400_000), TimeFormat::EpochMillis),
        Utc.timestamp_opt(1_761_980_400, 0).single()
    );
    assert_eq!(parse_time(&Scalar::Float(f64::NAN), TimeFormat::Auto), None);
    assert_eq!(
        parse_time(&Scalar::Int(i64::MAX), TimeFormat::EpochSeconds),
        None
    );
}

#[test]
fn nested_time_field() {
    let r = Router::new(&dest(
        "[destinations.routing]\ntime_field = \"context.sent_at\"\n",
    ));
    assert_eq!(
        folder_of(&r, r#"{"context":{"sent_at":"2026-01-02T03:04:05Z"}}"#),
        "2026-01-02 03:00:00"
    );
}

#[test]
fn bad_records_are_quarantined_with_reasons() {
    let r = Router::new(&dest(""));
    let q = |v: Option<&[u8]>| match r.route(
        &Record {
            value: v.map(bytes::Bytes::copy_from_slice),
            ..rec("")
        },
        now(),
    ) {
        Route::Quarantine(reason) => reason,
        other => panic!("{other:?}"),
    };
    assert_eq!(q(None), QuarantineReason::Tombstone);
    assert_eq!(q(Some(b"")), QuarantineReason::Empty);
    assert_eq!(q(Some(b"\xff{}")), QuarantineReason::InvalidUtf8);
    assert_eq!(q(Some(b"{nope")), QuarantineReason::NotJson);
    assert_eq!(q(Some(b"[1]")), QuarantineReason::NotObject);
    assert_eq!(q(Some(b"{}")), QuarantineReason::MissingTime);
    assert_eq!(
        q(Some(br#"{"timestamp":"soon"}"#)),
        QuarantineReason::BadTime
    );
    assert_eq!(q(Some(br#"{"timestamp":true}"#)), QuarantineReason::BadTime);
}

#[test]
fn event_time_or_upload_time_falls_back() {
    let r = Router::new(&dest(
        "[destinations.routing]\ntime_source = \"event_time_or_upload_time\"\n",
    ));
    assert_eq!(folder_of(&r, "{}"), "2030-01-01 00:00:00");
    assert_eq!(
        folder_of(&r, r#"{"timestamp":"junk"}"#),
        "2030-01-01 00:00:00"
    );
    assert_eq!(
        folder_of(&r, r#"{"timestamp":"2026-11-01T07:30:00Z"}"#),
        "2026-11-01 07:00:00"
    );
}

#[test]
fn kafka_timestamp_source() {
    let r = Router::new(&dest("[destinations.routing]\ntime_source = \"kafka_timestamp\"\nfolder_template = \"%Y-%m-%d/\"\n"));
    assert_eq!(folder_of(&r, "{}"), "2025-11-01 00:00:00");
    let no_ts = Record {
        timestamp_ms: None,
        ..rec("{}")
    };
    assert_eq!(
        r.route(&no_ts, now()),
        Route::Quarantine(QuarantineReason::NoKafkaTimestamp)
    );
}

#[test]
fn batch_level_dating_defers_the_folder() {
    let r = Router::new(&dest(
        "[destinations.routing]\ngranularity = \"first_event\"\n",
    ));
    match r.route(&rec(r#"{"timestamp":"2026-11-01T07:30:00Z"}"#), now()) {
        Route::Write {
            folder: FolderKey::AtSeal(0),
            time: Some(t),
            ..
        } => {
            assert_eq!(
                r.seal_slot(Some(t), now()).unwrap().to_string(),
                "2026-11-01 07:00:00"
            );
        }
        other => panic!("{other:?}"),
    }
    let up = Router::new(&dest(
        "[destinations.routing]\ntime_source = \"upload_time\"\n",
    ));
    assert!(matches!(
        up.route(&rec("{}"), now()),
        Route::Write {
            folder: FolderKey::AtSeal(0),
            ..
        }
    ));
    assert_eq!(
        up.seal_slot(None, now()).unwrap().to_string(),
        "2030-01-01 00:00:00"
    );
    let none = Router::new(&dest(
        "[destinations.routing]\ntime_source = \"none\"\nfolder_template = \"\"\n",
    ));
    assert!(matches!(
        none.route(&rec("{}"), now()),
        Route::Write {
            folder: FolderKey::Slot(None, 0),
            ..
        }
    ));
}

#[test]
fn include_exclude_filters() {
    let r = Router::new(&dest(
        "[destinations.filter]\nfield = \"type\"\ninclude = [\"track\", \"page\"]\nexclude = [\"page\"]\n",
    ));
    let ts = r#""timestamp":"2026-11-01T00:00:00Z""#;
    assert!(matches!(
        r.route(&rec(&format!(r#"{{"type":"track",{ts}}}"#)), now()),
        Route::Write { .. }
    ));
    assert_eq!(
        r.route(&rec(&format!(r#"{{"type":"page",{ts}}}"#)), now()),
        Route::Filtered
    );
    assert_eq!(
        r.route(&rec(&format!(r#"{{"type":"identify",{ts}}}"#)), now()),
        Route::Filtered
    );
    assert_eq!(
        r.route(&rec(&format!(r#"{{{ts}}}"#)), now()),
        Route::Filtered
    );
    let ex = Router::new(&dest(
        "[destinations.filter]\nfield = \"type\"\nexclude = [\"identify\"]\n",
    ));
    assert!(matches!(
        ex.route(&rec(&format!(r#"{{{ts}}}"#)), now()),
        Route::Write { .. }
    ));
}

#[test]
fn dropped_fields_keep_key_order() {
    let r = Router::new(&dest(
        "[destinations.filter]\ndrop_fields = [\"context.ip\", \"traits\"]\n",
    ));
    let v = r#"{"z":1,"timestamp":"2026-11-01T00:00:00Z","context":{"ip":"1.2.3.4","locale":"en"},"traits":{"email":"x"},"a":2}"#;
    match r.route(&rec(v), now()) {
        Route::Write { line, .. } => assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            r#"{"z":1,"timestamp":"2026-11-01T00:00:00Z","context":{"locale":"en"},"a":2}"#
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn raw_bytes_are_written_unchanged() {
    let r = Router::new(&dest(""));
    let v = r#"{ "timestamp" : "2026-11-01T00:00:00Z",   "x": 1.50 }"#;
    match r.route(&rec(v), now()) {
        Route::Write { line, .. } => assert_eq!(&line[..], v.as_bytes()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn oversized_records_are_quarantined() {
    let r = Router::new(&dest("[destinations.batch]\nmax_record_bytes = 40\n"));
    assert!(matches!(
        r.route(&rec(r#"{"timestamp":"2026-11-01T00:00:00Z"}"#), now()),
        Route::Write { .. }
    ));
    let big = format!(
        r#"{{"timestamp":"2026-11-01T00:00:00Z","pad":"{}"}}"#,
        "x".repeat(40)
    );
    assert_eq!(
        r.route(&rec(&big), now()),
        Route::Quarantine(QuarantineReason::TooLarge)
    );
}

#[test]
fn event_times_outside_the_window_are_quarantined() {
    // None: written; Some(reason): quarantined.
    fn outcome(r: &Router, ts: &str) -> Option<QuarantineReason> {
        match r.route(&rec(&format!(r#"{{"timestamp":"{ts}"}}"#)), now()) {
            Route::Write { .. } => None,
            Route::Quarantine(q) => Some(q),
            Route::Filtered | Route::Mismatch(_) => panic!("filtered or mismatched"),
        }
    }
    let out = Some(QuarantineReason::TimeOutOfRange);
    // Default: at most one day in the future, no limit in the past.
    let r = Router::new(&dest(""));
    assert_eq!(outcome(&r, "2030-01-01T23:00:00Z"), None);
    assert_eq!(outcome(&r, "2030-01-02T00:00:01Z"), out);
    assert_eq!(outcome(&r, "1999-01-01T00:00:00Z"), None);
    let r = Router::new(&dest(
        "[destinations.routing]\nmax_past_secs = 3600\nmax_future_secs = 0\n",
    ));
    assert_eq!(outcome(&r, "2029-12-31T22:59:59Z"), out);
    assert_eq!(outcome(&r, "2029-12-31T23:30:00Z"), None);
    assert_eq!(outcome(&r, "2099-01-01T00:00:00Z"), None, "no future limit");
}

#[test]
fn pretty_printed_records_become_one_line_with_the_same_value() {
    let r = Router::new(&dest(""));
    let pretty = "{\r\n  \"timestamp\": \"2030-01-01T10:00:00Z\",\n  \"text\": \"a\\nb\"\n}\n";
    let pretty_rec = rec(pretty);
    let Route::Write { line, .. } = r.route(&pretty_rec, now()) else {
        panic!("written")
    };
    assert!(!line.contains(&b'\n') && !line.contains(&b'\r'), "one line");
    let a: serde_json::Value = serde_json::from_slice(&line).unwrap();
    let b: serde_json::Value = serde_json::from_str(pretty).unwrap();
    assert_eq!(a, b, "the same JSON value");
    // Compact records are written as they came, without a copy.
    let compact = r#"{"timestamp":"2030-01-01T10:00:00Z"}"#;
    let compact_rec = rec(compact);
    let Route::Write { line, .. } = r.route(&compact_rec, now()) else {
        panic!("written")
    };
    assert!(matches!(line, Cow::Borrowed(_)));
}

/// `{field:…}` placeholders: each record's values (sanitised) identify its folder; records with
/// other values get another folder key; a missing value is `__unknown__`.
#[test]
fn field_values_pick_the_folder() {
    let r = Router::new(&dest(
        "[destinations.routing]\nfolder_template = \"%Y/event={field:event}/\"\n",
    ));
    let route = |v: &str| match r.route(&rec(v), now()) {
        Route::Write { folder, values, .. } => (folder, values),
        other => panic!("{other:?}"),
    };
    let (a, va) = route(r#"{"timestamp":"2026-11-01T07:30:00Z","event":"Signed In"}"#);
    let (b, vb) = route(r#"{"timestamp":"2026-11-01T08:30:00Z","event":"a/../b"}"#);
    let (c, vc) = route(r#"{"timestamp":"2026-11-01T09:30:00Z","event":"Signed In"}"#);
    let (_, vd) = route(r#"{"timestamp":"2026-11-01T09:30:00Z"}"#);
    assert_eq!(va, ["Signed_In"]);
    assert_eq!(vb, ["a_.._b"]);
    assert_eq!(vd, [crate::template::UNKNOWN_FIELD_VALUE]);
    assert_ne!(a, b);
    assert_eq!(a, c, "same year, same value: same folder");
    assert_eq!(vc, va);
}

/// An Iceberg table's identity partition values group files as they are: values a folder
/// would sanitise alike (`page view`, `page_view`) and a missing value each get files of
/// their own, so every file's rows share one partition value.
#[test]
fn table_identity_partitions_group_files_by_their_exact_values() {
    let r = Router::new(&dest(
        "kafka_metadata_field = \"_kafka\"\n\
         [destinations.routing]\ntime_field = \"ts\"\n\
         [destinations.batch]\nformat = \"parquet\"\n\
         [[destinations.parquet.columns]]\nname = \"event\"\npath = \"type\"\ntype = \"string\"\n\
         [[destinations.parquet.columns]]\nname = \"ts\"\npath = \"ts\"\ntype = \"timestamp\"\n\
         [destinations.iceberg]\nnamespace = \"a\"\ntable = \"e\"\npartition_time = \"hour\"\n\
         partition_fields = [\"type\"]\n\
         [destinations.iceberg.catalog]\nkind = \"sql\"\nuri = \"sqlite::memory:\"\nwarehouse = \"s3://b/w\"\n",
    ));
    let key = |v: &str| match r.route(&rec(v), now()) {
        Route::Write { folder, .. } => folder,
        other => panic!("{other:?}"),
    };
    let at = |t: &str| format!(r#"{{"type":"{t}","ts":"2026-01-02T03:04:05Z"}}"#);
    assert_eq!(key(&at("page view")), key(&at("page view")));
    assert_ne!(key(&at("page view")), key(&at("page_view")));
    assert_ne!(
        key(&at("")),
        key(r#"{"ts":"2026-01-02T03:04:05Z"}"#),
        "an empty string and a missing value are different partitions"
    );
    // The hour is the partition's time slot.
    let FolderKey::Slot(Some(slot), _) = key(&at("x")) else {
        panic!("a dated slot")
    };
    assert_eq!(slot.to_string(), "2026-01-02 03:00:00");
}
