use super::*;
use flate2::read::MultiGzDecoder;
use std::io::Read;
use std::time::Duration;

fn cfg() -> BatchConfig {
    BatchConfig {
        compression: Compression::Gzip { level: 6 },
        max_bytes: 1 << 20,
        max_records: 3,
        max_age: Duration::from_secs(60),
        idle: Duration::from_secs(10),
        max_record_bytes: None,
        deterministic: false,
    }
}

const GZ6: Compression = Compression::Gzip { level: 6 };

fn pool() -> EncoderPool {
    EncoderPool::default()
}

fn gunzip(b: &[u8]) -> String {
    let mut s = String::new();
    MultiGzDecoder::new(b).read_to_string(&mut s).unwrap();
    s
}

#[test]
fn parts_and_tail_form_one_gzip_stream() {
    let mut p = pool();
    let now = Instant::now();
    let mut b = Batch::new(
        TopicPartition::new("t", 0),
        10,
        Compression::Gzip { level: 6 },
        now,
    );
    let mut all = Vec::new();
    for i in 0..1000 {
        b.append(10 + i, format!("{{\"i\":{i}}}").as_bytes(), now, &mut p);
        if i % 300 == 299 {
            all.extend_from_slice(&b.take_part());
        }
    }
    assert_eq!(b.records, 1000);
    assert_eq!(b.last_offset, 1009);
    let compressed = b.compressed_bytes();
    let (tail, hash) = b.finish(&mut p);
    all.extend_from_slice(&tail);
    assert!(all.len() as u64 >= compressed);
    let text = gunzip(&all);
    assert_eq!(text.lines().count(), 1000);
    assert_eq!(text.lines().nth(999), Some("{\"i\":999}"));
    assert_eq!(hash, xxhash_rust::xxh3::xxh3_128(text.as_bytes()));
}

#[test]
fn content_hash_ignores_compression_and_part_boundaries() {
    let mut p = pool();
    let now = Instant::now();
    let tp = TopicPartition::new("t", 0);
    let mut fill = |compression, part_every: i64| {
        let mut b = Batch::new(tp.clone(), 0, compression, now);
        for i in 0..5000 {
            b.append(
                i,
                format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(40)).as_bytes(),
                now,
                &mut p,
            );
            if i % part_every == part_every - 1 {
                b.take_part();
            }
        }
        b.finish(&mut p).1
    };
    let gz = fill(Compression::Gzip { level: 6 }, 1700);
    assert_eq!(gz, fill(Compression::Gzip { level: 1 }, 900));
    assert_eq!(gz, fill(Compression::None, 1234));
    assert_eq!(gz, fill(Compression::Zstd { level: 3 }, 1100));
    let mut p = pool();
    let mut other = Batch::new(tp.clone(), 0, Compression::None, now);
    other.append(0, b"{}", now, &mut p);
    assert_ne!(gz, other.finish(&mut p).1);
    // It is XXH3-128 (xxHash's reference values), so objects written by other versions
    // compare equal by content.
    let mut one = Batch::new(tp.clone(), 0, GZ6, now);
    one.append(0, br#"{"a":1}"#, now, &mut p);
    assert_eq!(
        one.finish(&mut p).1,
        0xde43_4053_3aee_6781_d69c_0a5c_48ed_9e2f
    );
    let empty = Batch::new(tp, 0, GZ6, now);
    assert_eq!(
        empty.finish(&mut p).1,
        0x99aa_06d3_0147_98d8_6001_c324_468d_497f
    );
}

#[test]
fn plain_batches_are_raw_ndjson() {
    let mut p = pool();
    let now = Instant::now();
    let mut b = Batch::new(TopicPartition::new("t", 0), 0, Compression::None, now);
    b.append(0, b"{}", now, &mut p);
    b.append(1, b"{\"a\":1}", now, &mut p);
    assert_eq!(b.raw_bytes, 11);
    assert_eq!(&b.finish(&mut p).0[..], b"{}\n{\"a\":1}\n");
}

#[test]
fn rotation_by_records_size_age_and_idle() {
    let mut p = pool();
    let t0 = Instant::now();
    let c = cfg();
    let mut b = Batch::new(TopicPartition::new("t", 0), 0, c.compression, t0);
    b.append(0, b"{}", t0, &mut p);
    assert_eq!(b.full(&c), None);
    b.append(1, b"{}", t0, &mut p);
    b.append(2, b"{}", t0, &mut p);
    assert_eq!(b.full(&c), Some(FlushReason::Records));

    let small = BatchConfig {
        max_bytes: 1024,
        max_records: u64::MAX,
        ..c
    };
    let mut b = Batch::new(TopicPartition::new("t", 0), 0, Compression::None, t0);
    b.append(0, &[b'x'; 1100], t0, &mut p);
    assert_eq!(b.full(&small), Some(FlushReason::Size));

    let mut b = Batch::new(TopicPartition::new("t", 0), 0, c.compression, t0);
    b.append(0, b"{}", t0, &mut p);
    assert_eq!(b.expired(&c, t0 + Duration::from_secs(9)), None);
    assert_eq!(
        b.expired(&c, t0 + Duration::from_secs(10)),
        Some(FlushReason::Idle)
    );
    b.append(1, b"{}", t0 + Duration::from_secs(55), &mut p);
    assert_eq!(b.expired(&c, t0 + Duration::from_secs(59)), None);
    assert_eq!(
        b.expired(&c, t0 + Duration::from_secs(60)),
        Some(FlushReason::Age)
    );
    assert_eq!(b.next_deadline(&c), t0 + Duration::from_secs(60));
}

#[test]
fn memory_estimate_counts_what_a_file_holds_and_no_encoder() {
    let mut p = pool();
    let now = Instant::now();
    let tp = TopicPartition::new("t", 0);
    let mut b = Batch::new(tp.clone(), 0, Compression::Gzip { level: 6 }, now);
    b.append(0, b"{}", now, &mut p);
    assert!(
        b.memory_bytes() < 1024,
        "small files hold their raw lines only"
    );
    let line = vec![b'x'; 1000];
    for i in 1..=(2 * STAGE_BYTES / 1000) as i64 {
        b.append(i, &line, now, &mut p);
    }
    // Compressed blocks, the next block's dictionary and the staged lines; the deflate
    // state is the worker's, counted once in the pool.
    let m = b.memory_bytes();
    assert!(m >= b.buffered_bytes() + DICT_BYTES, "{m}");
    // (the output buffer is reserved a quarter of a block ahead)
    assert!(
        m <= STAGE_BYTES + DICT_BYTES + STAGE_BYTES / 4 + 4096,
        "{m}"
    );
    assert_eq!(p.memory_bytes(), GZIP_ENCODER_OVERHEAD_BYTES);
    let p = Batch::new(tp, 0, Compression::None, now);
    assert_eq!(p.memory_bytes(), 0);
}

#[test]
fn interleaved_files_are_single_gzip_members_sharing_one_encoder() {
    let now = Instant::now();
    let mut p = pool();
    let line = |f: usize, i: i64| {
        format!(
            "{{\"file\":{f},\"i\":{i},\"pad\":\"{}\"}}",
            "y".repeat(200 + f)
        )
    };
    // Three files filled in turn, one record each, through one worker's encoder.
    let mut files: Vec<Batch> = (0..3)
        .map(|_| {
            Batch::new(
                TopicPartition::new("t", 0),
                0,
                Compression::Gzip { level: 6 },
                now,
            )
        })
        .collect();
    let n = 3 * STAGE_BYTES as i64 / 200;
    for i in 0..n {
        for (f, b) in files.iter_mut().enumerate() {
            b.append(i, line(f, i).as_bytes(), now, &mut p);
        }
    }
    assert_eq!(
        p.memory_bytes(),
        GZIP_ENCODER_OVERHEAD_BYTES,
        "one encoder per level"
    );
    for (f, b) in files.into_iter().enumerate() {
        let raw = b.raw_bytes;
        let (bytes, _) = b.finish(&mut p);
        // One member: a single-member decoder reads every byte and leaves nothing over.
        let mut d = flate2::read::GzDecoder::new(&bytes[..]);
        let mut text = String::new();
        d.read_to_string(&mut text).unwrap();
        assert!(
            d.into_inner().is_empty(),
            "file {f}: bytes after the first member"
        );
        assert_eq!(text.len() as u64, raw);
        assert_eq!(text.lines().count() as i64, n);
        assert_eq!(text.lines().last(), Some(line(f, n - 1).as_str()));
        // The preset dictionary keeps the ratio of one continuous stream (within 1 %).
        let mut whole = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        std::io::Write::write_all(&mut whole, text.as_bytes()).unwrap();
        let whole = whole.finish().unwrap().len();
        assert!(
            bytes.len() * 100 <= whole * 101,
            "{} vs {whole}",
            bytes.len()
        );
    }
    // Another level gets its own encoder.
    let mut b = Batch::new(
        TopicPartition::new("t", 0),
        0,
        Compression::Gzip { level: 1 },
        now,
    );
    b.append(0, b"{}", now, &mut p);
    assert_eq!(gunzip(&b.finish(&mut p).0), "{}\n");
    // (plus the three finished files' staging blocks, kept as spares)
    assert_eq!(
        p.memory_bytes(),
        2 * GZIP_ENCODER_OVERHEAD_BYTES + 3 * STAGE_BYTES
    );
}

/// Appends 1,000-byte lines to `batch` until it holds `bytes` more raw bytes.
fn fill_to(p: &mut EncoderPool, batch: &mut Batch, byte: u8, bytes: usize) {
    let line = vec![byte; 999];
    let end = batch.raw_bytes + bytes as u64;
    while batch.raw_bytes < end {
        batch.append(batch.records as i64, &line, Instant::now(), p);
    }
}

#[test]
fn a_slowly_fed_file_holds_about_what_it_staged() {
    let mut p = pool();
    let now = Instant::now();
    let mut b = Batch::new(TopicPartition::new("t", 0), 0, GZ6, now);
    fill_to(&mut p, &mut b, b'x', 40_000);
    // Doubling from the first line's size: under twice the lines, no whole block, no
    // block compressed yet.
    assert!(b.memory_bytes() < 80_000, "{}", b.memory_bytes());
    assert_eq!(p.blocks, 0);
    fill_to(&mut p, &mut b, b'x', 200_000);
    assert_eq!(b.memory_bytes(), STAGE_BYTES, "then a whole block");
    assert_eq!(gunzip(&b.finish(&mut p).0).len(), 240_000);
}

#[test]
fn a_file_whose_blocks_follow_each_other_continues_one_stream() {
    let now = Instant::now();
    let mut p = pool();
    let tp = TopicPartition::new("t", 0);
    let (mut a, mut b) = (
        Batch::new(tp.clone(), 0, GZ6, now),
        Batch::new(tp, 0, GZ6, now),
    );
    // A's blocks back to back (the stream goes on), then B's (reset), then A's again: the
    // first after B's resets and takes A's dictionary, the next ones go on.
    fill_to(&mut p, &mut a, b'a', 600_000);
    let (b1, c1) = (p.blocks, p.continued);
    assert!(b1 >= 2, "{b1}");
    assert_eq!(c1, b1 - 1, "each of A's blocks after its first went on");
    fill_to(&mut p, &mut b, b'b', 300_000);
    let (b2, c2) = (p.blocks, p.continued);
    assert!(b2 - b1 >= 1, "{b2}");
    assert_eq!(c2 - c1, b2 - b1 - 1, "B's first block did not go on");
    fill_to(&mut p, &mut a, b'c', 600_000);
    let (b3, c3) = (p.blocks, p.continued);
    assert_eq!(c3 - c2, b3 - b2 - 1, "A's first block after B's did not");
    let want = |parts: &[(u8, u64)]| {
        let mut w = String::new();
        for &(c, n) in parts {
            for _ in 0..n {
                w.push_str(&String::from_utf8(vec![c; 999]).unwrap());
                w.push('\n');
            }
        }
        w
    };
    let (ab, _) = a.finish(&mut p);
    let (bb, _) = b.finish(&mut p);
    assert_eq!(gunzip(&ab), want(&[(b'a', 600), (b'c', 600)]));
    assert_eq!(gunzip(&bb), want(&[(b'b', 300)]));
    let mut d = flate2::read::GzDecoder::new(&ab[..]);
    std::io::Read::read_to_end(&mut d, &mut Vec::new()).unwrap();
    assert!(d.into_inner().is_empty(), "one member");
}

#[test]
fn a_finished_files_block_is_taken_by_the_next_growing_file() {
    let now = Instant::now();
    let mut p = pool();
    let tp = TopicPartition::new("t", 0);
    let mut a = Batch::new(tp.clone(), 0, GZ6, now);
    fill_to(&mut p, &mut a, b'a', 600_000);
    assert!(
        a.memory_bytes() >= STAGE_BYTES,
        "past half a block a file stages a whole one"
    );
    let _ = a.finish(&mut p);
    assert_eq!(p.spare.len(), 1);
    assert_eq!(p.memory_bytes(), GZIP_ENCODER_OVERHEAD_BYTES + STAGE_BYTES);
    let mut b = Batch::new(tp.clone(), 0, GZ6, now);
    b.append(0, b"{}", now, &mut p);
    assert_eq!(p.spare.len(), 1, "a small file stays small");
    fill_to(&mut p, &mut b, b'b', 100_000);
    assert_eq!(p.spare.len(), 1, "so does one of 100 KB");
    fill_to(&mut p, &mut b, b'b', 500_000);
    assert_eq!(p.spare.len(), 0, "past half a block it takes the spare");
    assert_eq!(gunzip(&b.finish(&mut p).0).len(), 3 + 600_000);
    // At most SPARE_BLOCKS wait.
    let many: Vec<Batch> = (0..SPARE_BLOCKS + 2)
        .map(|_| {
            let mut f = Batch::new(tp.clone(), 0, GZ6, now);
            fill_to(&mut p, &mut f, b'c', 600_000);
            f
        })
        .collect();
    for f in many {
        let _ = f.finish(&mut p);
    }
    assert_eq!(p.spare.len(), SPARE_BLOCKS);
}

/// A zstd file's parts and tail are one zstd frame of its lines, whether it ended within its
/// first block (one shot) or went on over many (its own context, released at the end).
#[test]
fn zstd_parts_and_tail_form_one_frame() {
    let mut p = pool();
    let now = Instant::now();
    for (records, part_every) in [(3, 1000), (20_000, 3_000)] {
        let mut b = Batch::new(
            TopicPartition::new("t", 0),
            0,
            Compression::Zstd { level: 3 },
            now,
        );
        let mut all = Vec::new();
        let mut raw = Vec::new();
        for i in 0..records {
            let line = format!(r#"{{"i":{i},"pad":"{}"}}"#, "y".repeat(i as usize % 50));
            b.append(i, line.as_bytes(), now, &mut p);
            raw.extend_from_slice(line.as_bytes());
            raw.push(b'\n');
            if i % part_every == part_every - 1 {
                all.extend_from_slice(&b.take_part());
            }
        }
        let (tail, hash) = b.finish(&mut p);
        all.extend_from_slice(&tail);
        let frame = ::zstd::zstd_safe::find_frame_compressed_size(&all).unwrap();
        assert_eq!(frame, all.len(), "one frame");
        assert_eq!(::zstd::stream::decode_all(&all[..]).unwrap(), raw);
        assert_eq!(hash, xxhash_rust::xxh3::xxh3_128(&raw));
        if records > 1000 {
            assert!(
                all.len() * 4 < raw.len(),
                "compressed: {} of {}",
                all.len(),
                raw.len()
            );
        }
    }
}
