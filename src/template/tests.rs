//! Unit tests of the folder and file-name templates.
use super::*;
use chrono::TimeZone;

fn ctx() -> KeyContext<'static> {
    KeyContext {
        topic: "events",
        partition: 3,
        source: "src1",
        destination: "d",
        app: "mPTravel",
    }
}

#[test]
fn folder_hourly_slot_and_render() {
    let t = FolderTemplate::parse("%Y/%m/%d/%H/").unwrap();
    let a = Utc.with_ymd_and_hms(2026, 11, 1, 7, 59, 59).unwrap();
    let b = Utc.with_ymd_and_hms(2026, 11, 1, 7, 0, 0).unwrap();
    let c = Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).unwrap();
    assert_eq!(t.slot(&a), t.slot(&b));
    assert_ne!(t.slot(&a), t.slot(&c));
    assert_eq!(t.render(t.slot(&a), &ctx(), &[]), "2026/11/01/07/");
}

#[test]
fn folder_placeholders_and_daily_unit() {
    let t = FolderTemplate::parse("segment-logs/{source}/%Y-%m-%d").unwrap();
    let a = Utc.with_ymd_and_hms(2026, 11, 1, 23, 59, 59).unwrap();
    let b = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
    assert_eq!(t.slot(&a), t.slot(&b));
    assert_eq!(
        t.render(t.slot(&a), &ctx(), &[]),
        "segment-logs/src1/2026-11-01/"
    );
}

#[test]
fn folder_timezone_shifts_the_day() {
    let t = FolderTemplate::parse("%Y-%m-%d/").unwrap();
    let utc = Utc.with_ymd_and_hms(2026, 11, 1, 23, 30, 0).unwrap();
    let berlin = utc.with_timezone(&chrono_tz::Europe::Berlin);
    assert_eq!(t.render(t.slot(&berlin), &ctx(), &[]), "2026-11-02/");
}

#[test]
fn folder_without_time() {
    let t = FolderTemplate::parse("raw/{topic}").unwrap();
    assert!(!t.uses_time());
    assert_eq!(t.render(None, &ctx(), &[]), "raw/events/");
    assert_eq!(
        FolderTemplate::parse("").unwrap().render(None, &ctx(), &[]),
        ""
    );
}

#[test]
fn units_follow_the_finest_directive() {
    assert_eq!(finest_unit("%Y"), TimeUnit::Year);
    assert_eq!(finest_unit("%Y-%m"), TimeUnit::Month);
    assert_eq!(finest_unit("%F"), TimeUnit::Day);
    assert_eq!(finest_unit("%-H"), TimeUnit::Hour);
    assert_eq!(finest_unit("%M%%"), TimeUnit::Minute);
    assert_eq!(finest_unit("%s"), TimeUnit::Second);
    assert_eq!(finest_unit("100%%"), TimeUnit::Never);
}

/// Hostile field values become one safe key segment: no `/`, no `.` or `..` segment, no
/// control characters, at most 64 bytes (long values keep a hash, so they stay distinct),
/// and a fallback for empty ones.
#[test]
fn field_values_become_safe_segments() {
    let long_a = "a".repeat(2000);
    let long_b = format!("{}b", "a".repeat(1999));
    for (v, want) in [
        ("Product Viewed", Some("Product_Viewed")),
        ("a/b", Some("a_b")),
        ("..", Some("_.")),
        (".hidden", Some("_hidden")),
        ("line\nbreak", Some("line_break")),
        ("", Some(UNKNOWN_FIELD_VALUE)),
        ("tenant-42.eu_west", Some("tenant-42.eu_west")),
        ("caf\u{e9} \u{1f600}", Some("caf___")),
        (long_a.as_str(), None),
    ] {
        let got = sanitize_field_value(v);
        if let Some(w) = want {
            assert_eq!(got, w, "{v:?}");
        }
        assert!(
            !got.is_empty() && got.len() <= MAX_FIELD_VALUE_BYTES,
            "{got}"
        );
        assert!(!got.contains('/') && !got.starts_with('.'), "{got}");
        assert!(got.chars().all(|c| c.is_ascii_graphic()), "{got}");
    }
    assert_ne!(
        sanitize_field_value(&long_a),
        sanitize_field_value(&long_b),
        "long values stay distinct"
    );
    let t = FolderTemplate::parse("dt=%Y-%m-%d/event={field:event}/tenant={field:ctx.t}/").unwrap();
    assert_eq!(
        t.field_paths(),
        [vec!["event".to_string()], vec!["ctx".into(), "t".into()]]
    );
    let a = Utc.with_ymd_and_hms(2026, 11, 1, 7, 0, 0).unwrap();
    assert_eq!(
        t.render(t.slot(&a), &ctx(), &["Signed_In".into(), "acme".into()]),
        "dt=2026-11-01/event=Signed_In/tenant=acme/"
    );
    assert!(FolderTemplate::parse("{field}").is_err());
    assert!(FolderTemplate::parse("{field:}").is_err());
    assert!(FolderTemplate::parse("{field:a..b}").is_err());
    assert!(FolderTemplate::parse("{field:a}/{field:b}/{field:c}").is_err());
    assert!(
        FileTemplate::parse("{field:a}").is_err(),
        "folder templates only"
    );
}

#[test]
fn bad_templates_are_rejected() {
    assert!(FolderTemplate::parse("{nope}/%Y")
        .unwrap_err()
        .contains("unknown placeholder"));
    assert!(FolderTemplate::parse("{topic").is_err());
    assert!(FolderTemplate::parse("%Q").is_err());
    assert!(FileTemplate::parse("{start_offset}/x").is_err());
    assert!(FileTemplate::parse("{topic:x}").is_err());
    assert!(FileTemplate::parse("{upload_time:%Q}").is_err());
}

#[test]
fn default_file_name_is_padded_and_deterministic() {
    let t = FileTemplate::parse("{topic}+{partition}+{start_offset}.ndjson").unwrap();
    assert!(t.is_deterministic());
    assert!(!t.needs_end());
    let v = FileValues {
        start_offset: 42,
        end_offset: 99,
        record_count: 58,
        upload_time: Utc::now(),
    };
    assert_eq!(
        t.render(&ctx(), &v, ".gz"),
        "events+3+00000000000000000042.ndjson.gz"
    );
    assert_eq!(
        t.render(&ctx(), &v, ""),
        "events+3+00000000000000000042.ndjson"
    );
}

#[test]
fn mparticle_file_name() {
    let t = FileTemplate::parse("{app}_{upload_time}_{random5}.txt").unwrap();
    assert!(!t.is_deterministic());
    let v = FileValues {
        start_offset: 0,
        end_offset: 0,
        record_count: 1,
        upload_time: Utc.with_ymd_and_hms(2017, 10, 17, 17, 9, 11).unwrap()
            + chrono::Duration::microseconds(644_493),
    };
    let name = t.render(&ctx(), &v, "");
    assert!(name.starts_with("mPTravel_20171017170911644493_"), "{name}");
    assert_eq!(name.len(), "mPTravel_20171017170911644493_34523.txt".len());
    assert!(t.render(&ctx(), &v, ".gz").ends_with(".txt.gz"));
}

#[test]
fn end_offset_templates_need_the_end() {
    assert!(FileTemplate::parse("{start_offset}-{end_offset}")
        .unwrap()
        .needs_end());
    assert!(FileTemplate::parse("{record_count}").unwrap().needs_end());
}
