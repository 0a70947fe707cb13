//! Record inputs for the benchmark: the NDJSON file loaded whole (throughput runs), and a lazy
//! source that synthesizes a backlog while it feeds the workers (memory run), so the measured
//! RSS is the connector's and not the input's.
//!
//! The lazy source speaks the same channel protocol as `source::replay` (partitions announced
//! before their records, blocking sends as backpressure, commits recorded, every `Shutdown`
//! answered once all workers stopped).

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek};
use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use kafka_s3_sink::model::{Record, TopicPartition};
use kafka_s3_sink::source::{by_shard, channels, shard_of, Command, Control, SourceIo};

/// Topic name of every benchmark record.
pub const TOPIC: &str = "events";

/// Reads every line of `path` (up to `limit` lines) as a record of partition
/// `(line / run_length) % partitions` (1: round-robin; a few hundred: runs of one partition as a
/// Kafka fetch hands them over), with consecutive offsets per partition. Returns the records and the bytes read (lines plus
/// newlines, i.e. the file size when the whole file is read).
pub fn load(
    path: &Path,
    partitions: usize,
    run_length: usize,
    limit: Option<usize>,
) -> std::io::Result<(Vec<Record>, u64)> {
    let topic: Arc<str> = Arc::from(TOPIC);
    let tps: Vec<TopicPartition> = (0..partitions.max(1))
        .map(|p| TopicPartition::new(topic.clone(), p as i32))
        .collect();
    let mut next = vec![0i64; tps.len()];
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut records = Vec::with_capacity(limit.unwrap_or(1 << 20));
    let mut bytes = 0u64;
    let mut line = Vec::with_capacity(1024);
    let mut chunk = kafka_s3_sink::source::ChunkBuilder::new();
    while limit.is_none_or(|l| records.len() + chunk.len() < l) {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let i = records.len() + chunk.len();
        let p = (i / run_length.max(1)) % tps.len();
        // Values share a buffer per 2,000 records, as the Kafka source's chunks do.
        chunk.push(tps[p].clone(), next[p], None, None, Some(&line));
        next[p] += 1;
        if chunk.len() == 2000 {
            records.extend(chunk.finish());
        }
    }
    records.extend(chunk.finish());
    Ok((records, bytes))
}

/// Lines of a file, read in a loop (back to the start at the end), each with its `timestamp`
/// field rewritten so that record `i` lands in hour-folder `(i / partitions) % hours` of its
/// partition `i % partitions`: every partition keeps `hours` folders open at once.
pub struct Backlog {
    reader: BufReader<File>,
    tps: Vec<TopicPartition>,
    next: Vec<i64>,
    hours: usize,
    produced: usize,
    total: usize,
    /// Raw bytes produced so far (values plus one newline each).
    pub bytes: u64,
}

impl Backlog {
    /// A backlog of `total` records over `partitions` × `hours` folders, lines from `path`.
    pub fn new(
        path: &Path,
        partitions: usize,
        hours: usize,
        total: usize,
    ) -> std::io::Result<Self> {
        let topic: Arc<str> = Arc::from(TOPIC);
        Ok(Self {
            reader: BufReader::with_capacity(1 << 16, File::open(path)?),
            tps: (0..partitions.max(1))
                .map(|p| TopicPartition::new(topic.clone(), p as i32))
                .collect(),
            next: vec![0; partitions.max(1)],
            hours: hours.clamp(1, 24),
            produced: 0,
            total,
            bytes: 0,
        })
    }

    /// Every partition of the backlog.
    pub fn partitions(&self) -> Vec<TopicPartition> {
        self.tps.clone()
    }

    fn next_line(&mut self) -> std::io::Result<Vec<u8>> {
        let mut line = Vec::with_capacity(640);
        for _ in 0..2 {
            if self.reader.read_until(b'\n', &mut line)? > 0 {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                return Ok(line);
            }
            self.reader.rewind()?;
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "empty input file",
        ))
    }
}

/// Replaces the 24-character RFC 3339 value of the first `"timestamp":"` field.
fn set_timestamp(line: &mut [u8], ts: &str) {
    const FIELD: &[u8] = b"\"timestamp\":\"";
    if let Some(at) = line.windows(FIELD.len()).position(|w| w == FIELD) {
        let start = at + FIELD.len();
        let end = start + ts.len();
        if end < line.len() && line[end] == b'"' {
            line[start..end].copy_from_slice(ts.as_bytes());
        }
    }
}

impl Iterator for Backlog {
    type Item = std::io::Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.produced >= self.total {
            return None;
        }
        let i = self.produced;
        self.produced += 1;
        let parts = self.tps.len();
        let p = i % parts;
        let hour = (i / parts) % self.hours;
        let round = i / (parts * self.hours);
        let ts = format!(
            "2026-11-01T{hour:02}:{:02}:{:02}.000Z",
            (round / 60) % 60,
            round % 60
        );
        let mut line = match self.next_line() {
            Ok(l) => l,
            Err(e) => return Some(Err(e)),
        };
        set_timestamp(&mut line, &ts);
        self.bytes += line.len() as u64 + 1;
        let offset = self.next[p];
        self.next[p] += 1;
        Some(Ok(Record {
            tp: self.tps[p].clone(),
            offset,
            timestamp_ms: None,
            key: None,
            value: Some(line.into()),
            headers: None,
        }))
    }
}

/// What the lazy source saw.
#[derive(Debug, Default)]
pub struct FeedReport {
    /// Records sent.
    pub records: u64,
    /// Raw bytes sent.
    pub bytes: u64,
    /// Sum over partitions of the highest committed offset.
    pub committed: i64,
    /// Input error, if the backlog could not be read.
    pub error: Option<String>,
}

/// Starts a thread feeding `backlog` to `shards` workers in chunks of `chunk_records`.
pub fn start(
    mut backlog: Backlog,
    shards: usize,
    chunk_records: usize,
) -> std::io::Result<(Vec<SourceIo>, JoinHandle<FeedReport>)> {
    let shards = shards.max(1);
    let (senders, ios, commands) = channels(shards, 8);
    let handle = std::thread::Builder::new()
        .name("backlog-source".into())
        .spawn(move || {
            let mut report = FeedReport::default();
            let mut committed = std::collections::BTreeMap::new();
            let mut note = |o: Vec<(TopicPartition, i64)>| {
                for (tp, off) in o {
                    let e = committed.entry(tp).or_insert(off);
                    *e = (*e).max(off);
                }
            };
            for (shard, p) in by_shard(&backlog.partitions(), shards)
                .into_iter()
                .enumerate()
            {
                if !p.is_empty() {
                    let _ = senders.control[shard].send(Control::Assigned(p));
                }
            }
            let mut chunks: Vec<Vec<Record>> = vec![Vec::new(); shards];
            for r in backlog.by_ref() {
                let r = match r {
                    Ok(r) => r,
                    Err(e) => {
                        report.error = Some(e.to_string());
                        break;
                    }
                };
                report.records += 1;
                let shard = shard_of(&r.tp, shards);
                chunks[shard].push(r);
                if chunks[shard].len() >= chunk_records.max(1) {
                    let _ = senders.data[shard].blocking_send(std::mem::take(&mut chunks[shard]));
                    while let Ok(Command::Commit(o)) = commands.try_recv() {
                        note(o);
                    }
                }
            }
            for (shard, c) in chunks.into_iter().enumerate() {
                if !c.is_empty() {
                    let _ = senders.data[shard].blocking_send(c);
                }
            }
            report.bytes = backlog.bytes;
            let mut done = HashSet::new();
            let mut answers = Vec::new();
            while !(0..shards).all(|i| done.contains(&i) || senders.data[i].is_closed()) {
                match commands.recv_timeout(Duration::from_millis(50)) {
                    Ok(Command::Commit(o)) => note(o),
                    Ok(Command::Shutdown {
                        shard,
                        offsets,
                        done: d,
                    }) => {
                        note(offsets);
                        done.insert(shard);
                        answers.push(d);
                    }
                    Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            for a in answers {
                let _ = a.send(());
            }
            report.committed = committed.values().sum();
            report
        })?;
    Ok((ios, handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_is_rewritten_in_place() {
        let mut l = br#"{"type":"track","timestamp":"2026-11-02T13:04:05.678Z","x":1}"#.to_vec();
        set_timestamp(&mut l, "2026-11-01T07:00:01.000Z");
        assert_eq!(
            l,
            br#"{"type":"track","timestamp":"2026-11-01T07:00:01.000Z","x":1}"#.to_vec()
        );
    }

    #[test]
    fn backlog_spreads_partitions_over_hours() {
        let dir = std::env::temp_dir().join(format!("bench-backlog-{}", std::process::id()));
        std::fs::write(&dir, "{\"timestamp\":\"2026-11-02T13:04:05.678Z\"}\n").unwrap();
        let recs: Vec<Record> = Backlog::new(&dir, 2, 3, 7)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        std::fs::remove_file(&dir).unwrap();
        let hours: Vec<(i32, String)> = recs
            .iter()
            .map(|r| {
                let v = String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap();
                (r.tp.partition, v[25..27].to_string())
            })
            .collect();
        assert_eq!(
            hours,
            [
                (0, "00"),
                (1, "00"),
                (0, "01"),
                (1, "01"),
                (0, "02"),
                (1, "02"),
                (0, "00")
            ]
            .map(|(p, h)| (p, h.to_string()))
        );
        assert_eq!(recs[6].offset, 3);
    }
}
