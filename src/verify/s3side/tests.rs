//! Tests of the S3 side of `verify`: line reading (plain, gzip, multi-member, broken), and
//! the scan over an in-memory store (attribution, envelopes, other topics, retries).

use super::*;
use std::io::Write;

fn lines_of(data: &[u8], gz: bool) -> io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    read_lines(
        data,
        if gz { Suffix::Gzip } else { Suffix::Other },
        ReadLimits::NONE,
        |l| out.push(l.to_vec()),
    )?;
    Ok(out)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn plain_gzip_and_multi_member_content() {
    let want = vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()];
    assert_eq!(lines_of(b"{\"a\":1}\n{\"b\":2}\n", false).unwrap(), want);
    assert_eq!(lines_of(b"{\"a\":1}\n\n{\"b\":2}", false).unwrap(), want);
    let mut two = gzip(b"{\"a\":1}\n");
    two.extend(gzip(b"{\"b\":2}\n"));
    // By magic, whatever the key says.
    assert_eq!(lines_of(&two, false).unwrap(), want);
    assert_eq!(lines_of(&two, true).unwrap(), want);
    assert!(lines_of(b"", true).unwrap().is_empty());
}

#[test]
fn a_gz_key_that_is_not_gzip_is_an_error() {
    assert!(lines_of(b"{\"a\":1}\n", true).is_err());
    let mut torn = gzip(b"{\"a\":1}\n{\"b\":2}\n");
    torn.truncate(torn.len() - 12);
    assert!(lines_of(&torn, true).is_err());
}

#[test]
fn topic_index_keeps_order_and_dedups() {
    let t = TopicIndex::new(&["b".into(), "a".into(), "b".into()]);
    assert_eq!(t.names(), ["b".to_string(), "a".to_string()]);
    assert_eq!(t.get("a"), Some(1));
    assert_eq!(t.get("c"), None);
    assert_eq!(t.name(1), "a");
}

fn dest() -> crate::config::DestinationConfig {
    crate::config::parse(
        "[kafka]\nbrokers = \"b:9092\"\ngroup_id = \"g\"\ntopics = [\"t\", \"u\"]\n\
         [[destinations]]\nname = \"d\"\nbucket = \"b\"\nprefix = \"p\"\n\
         [destinations.routing]\ntime_source = \"none\"\nfolder_template = \"\"\n",
        &|_| None,
    )
    .unwrap()
    .destinations
    .remove(0)
}

fn meta(topic: &str, partition: i32) -> crate::sink::ObjectMeta {
    let mut m = crate::sink::ObjectMeta::default();
    m.user.insert(meta_keys::TOPIC.into(), topic.into());
    m.user
        .insert(meta_keys::PARTITION.into(), partition.to_string());
    m
}

/// Every way an object is attributed: metadata (gzip), a default-template key without
/// metadata, envelopes (topic from each line), another topic, an unknown naming scheme, a
/// broken gzip; listing failures are retried.
#[tokio::test]
async fn objects_are_attributed_and_read() {
    use crate::envelope::error_line;
    use crate::model::{Record, TopicPartition};
    use crate::router::QuarantineReason;
    use crate::sink::memory::MemorySink;

    let d = dest();
    let sink = Arc::new(MemorySink::new());
    let none = crate::sink::ObjectMeta::default();
    sink.insert(
        "p/a/t+0+00000000000000000000.ndjson.gz",
        Bytes::from(gzip(b"{\"a\":1}\n{\"a\":2}\n")),
        meta("t", 0),
    );
    sink.insert(
        "p/legacy/t+3+00000000000000000007.json",
        Bytes::from_static(b"{\"a\":3}\n"),
        none.clone(),
    );
    let rec = |topic: &str, value: &[u8]| Record {
        tp: TopicPartition::new(topic, 1),
        offset: 4,
        timestamp_ms: None,
        key: None,
        value: Some(bytes::Bytes::copy_from_slice(value)),
        headers: None,
    };
    let mut env = error_line(&rec("t", b"nope"), QuarantineReason::NotJson);
    env.push(b'\n');
    env.extend(error_line(&rec("x", b"other"), QuarantineReason::NotJson));
    env.extend(b"\nnot an envelope\n");
    sink.insert(
        "p/_errors/not_json/t+1+00000000000000000004.ndjson",
        Bytes::from(env),
        none.clone(),
    );
    sink.insert(
        "p/b/x+0+00000000000000000000.ndjson",
        Bytes::from_static(b"{}\n"),
        meta("x", 0),
    );
    sink.insert("p/c/App_1.txt", Bytes::from_static(b"{}\n"), none.clone());
    sink.insert(
        "p/d/t+2+00000000000000000000.ndjson.gz",
        Bytes::from_static(b"\x1f\x8bnot really"),
        meta("t", 2),
    );
    sink.insert(
        "elsewhere/t+0+00000000000000000000.json",
        Bytes::from_static(b"{}\n"),
        none,
    );
    sink.fail_next(2);

    let topics = Arc::new(TopicIndex::new(&["t".into(), "u".into()]));
    let opts = S3Options {
        prefix: d.prefix.clone(),
        error_prefix: format!("{}{}", d.prefix, d.error_prefix),
        concurrency: 3,
        request_timeout: Duration::from_secs(5),
        attempts: 3,
        limits: ReadLimits::NONE,
        parquet: None,
        data_keys: None,
    };
    let (tx, mut rx) = mpsc::channel(64);
    let tally = scan(
        sink.clone(),
        opts.clone(),
        Arc::new(Identifier::new(&d)),
        topics.clone(),
        tx,
    )
    .await
    .unwrap();
    let mut keys = Vec::new();
    let mut entries = Vec::new();
    while let Some(m) = rx.recv().await {
        match m {
            Collected::Key(k) => keys.push(k),
            Collected::Entries(e) => entries.extend(e),
        }
    }
    assert_eq!(keys.len(), 6, "{keys:?}");
    assert_eq!(tally.listed, 6);
    // Data of t/0 (2 lines), t/3 (1), the envelope of t/1; the broken gzip counts as read.
    assert_eq!(tally.objects, 4, "{tally:?}");
    assert_eq!((tally.lines, tally.envelopes), (3, 1));
    assert_eq!(
        (tally.other_topic_objects, tally.other_topic_envelopes),
        (1, 1)
    );
    assert_eq!(tally.bad_envelopes, 1);
    assert_eq!(tally.unattributed_keys, vec!["p/c/App_1.txt".to_string()]);
    assert_eq!(tally.unreadable.len(), 1);
    assert!(tally.unreadable[0].0.starts_with("p/d/"));
    entries.sort();
    let got: Vec<(i32, u64, i64)> = entries
        .iter()
        .map(|e| (e.partition, e.hash, e.aux))
        .collect();
    let index_of = |k: &str| keys.iter().position(|x| x == k).unwrap() as u64;
    let ident = Identifier::new(&d);
    let env_hash = match ident.of_record(&rec("t", b"nope")).unwrap() {
        super::super::identity::Identity::Expected { hash, .. } => hash,
        other => panic!("{other:?}"),
    };
    let mut want = vec![
        (
            0,
            line_hash(b"{\"a\":1}"),
            s3_aux(index_of("p/a/t+0+00000000000000000000.ndjson.gz"), false),
        ),
        (
            0,
            line_hash(b"{\"a\":2}"),
            s3_aux(index_of("p/a/t+0+00000000000000000000.ndjson.gz"), false),
        ),
        (
            1,
            env_hash,
            s3_aux(
                index_of("p/_errors/not_json/t+1+00000000000000000004.ndjson"),
                true,
            ),
        ),
        (
            3,
            line_hash(b"{\"a\":3}"),
            s3_aux(index_of("p/legacy/t+3+00000000000000000007.json"), false),
        ),
    ];
    want.sort();
    assert_eq!(got, want);
    assert!(entries.iter().all(|e| e.topic == 0));

    // A store that keeps failing: the error surfaces after the attempts.
    sink.fail_next(3);
    let (tx, _rx) = mpsc::channel(64);
    let err = scan(sink, opts, Arc::new(ident), topics, tx)
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 3, "{err}");
}

/// A decompression bomb (64 MiB of zeros, one "line", in 64 KiB of gzip) and an endless stream
/// of short lines are refused at the limits, not read into memory or to the end.
#[test]
fn reading_stops_at_the_limits() {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        gz.write_all(&zeros).unwrap();
    }
    let bomb = gz.finish().unwrap();
    let limits = ReadLimits {
        max_line: 1 << 20,
        max_total: 8 << 20,
    };
    let mut n = 0;
    let e = read_lines(&bomb[..], Suffix::Gzip, limits, |_| n += 1).unwrap_err();
    assert!(e.to_string().contains("a line longer than"), "{e}");
    assert_eq!(n, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let lines = b"{}\n".repeat(1 << 20);
    for _ in 0..4 {
        gz.write_all(&lines).unwrap();
    }
    let many = gz.finish().unwrap();
    let e = read_lines(&many[..], Suffix::Gzip, limits, |_| n += 1).unwrap_err();
    assert!(e.to_string().contains("uncompressed bytes"), "{e}");
    assert!(n < 3 << 20, "stopped at the limit: {n} lines");
}
