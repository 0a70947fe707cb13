//! A source that replays records from memory through the same channels as Kafka: for
//! benchmarks (isolating the connector's own CPU from a broker) and tests.
//!
//! Invariants: every partition is announced to its worker before its records; records of a
//! partition arrive in the given order; the thread blocks (instead of pausing partitions) while a
//! worker's channel is full, which is the same backpressure without a broker.

use std::collections::{BTreeMap, HashSet};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{by_shard, channels, shard_of, Command, Control, Offsets, SourceIo};
use crate::model::{Record, TopicPartition};

/// What the replay saw: the last offsets committed per partition.
#[derive(Debug, Default, Clone)]
pub struct ReplayReport {
    /// Highest committed offset per partition.
    pub committed: BTreeMap<TopicPartition, i64>,
}

fn note(report: &mut ReplayReport, offsets: Offsets) {
    for (tp, off) in offsets {
        let e = report.committed.entry(tp).or_insert(off);
        *e = (*e).max(off);
    }
}

/// Starts the replay thread for `shards` workers, feeding `records` in chunks of
/// `chunk_records`.
pub fn start(
    records: Vec<Record>,
    shards: usize,
    chunk_records: usize,
) -> std::io::Result<(Vec<SourceIo>, JoinHandle<ReplayReport>)> {
    let shards = shards.max(1);
    let (senders, ios, commands) = channels(shards, 8);
    let handle = std::thread::Builder::new()
        .name("replay-source".into())
        .spawn(move || {
            let mut report = ReplayReport::default();
            let mut parts: Vec<TopicPartition> = Vec::new();
            let mut seen = hashbrown::HashSet::new();
            for r in &records {
                if !seen.contains(&r.tp) {
                    seen.insert(r.tp.clone());
                    parts.push(r.tp.clone());
                }
            }
            for (shard, p) in by_shard(&parts, shards).into_iter().enumerate() {
                if !p.is_empty() {
                    let _ = senders.control[shard].send(Control::Assigned(p));
                }
            }
            let mut chunks: Vec<Vec<Record>> = vec![Vec::new(); shards];
            let flush = |shard: usize, chunk: Vec<Record>, report: &mut ReplayReport| {
                // Blocking send; commits are drained while waiting would need a select, so drain
                // them after each chunk instead (they are only recorded).
                let _ = senders.data[shard].blocking_send(chunk);
                while let Ok(Command::Commit(o)) = commands.try_recv() {
                    note(report, o);
                }
            };
            for r in records {
                let shard = shard_of(&r.tp, shards);
                chunks[shard].push(r);
                if chunks[shard].len() >= chunk_records.max(1) {
                    let c = std::mem::take(&mut chunks[shard]);
                    flush(shard, c, &mut report);
                }
            }
            for (shard, c) in chunks.into_iter().enumerate() {
                if !c.is_empty() {
                    flush(shard, c, &mut report);
                }
            }
            // Serve commits until every worker stopped.
            let mut done = HashSet::new();
            let mut answers = Vec::new();
            loop {
                if (0..shards).all(|i| done.contains(&i) || senders.data[i].is_closed()) {
                    break;
                }
                match commands.recv_timeout(Duration::from_millis(50)) {
                    Ok(Command::Commit(o)) => note(&mut report, o),
                    Ok(Command::Shutdown {
                        shard,
                        offsets,
                        done: d,
                    }) => {
                        note(&mut report, offsets);
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
            report
        })?;
    Ok((ios, handle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::metrics::Metrics;
    use crate::sink::memory::MemorySink;
    use crate::sink::ObjectSink;
    use std::sync::Arc;
    use tokio_util::sync::CancellationToken;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replayed_records_all_reach_the_sink_and_commit() {
        let cfg = parse(
            "[kafka]\nbrokers = \"x\"\ngroup_id = \"g\"\ntopics = [\"t\"]\n[pipeline]\nworkers = 2\n[[destinations]]\nname = \"d\"\nbucket = \"b\"\n[destinations.batch]\nmax_records = 50\nidle_secs = 1\n",
            &|_| None,
        )
        .unwrap();
        let records: Vec<Record> = (0..1000)
            .map(|i| Record {
                tp: TopicPartition::new("t", (i % 4) as i32),
                offset: i / 4,
                timestamp_ms: None,
                key: None,
                value: Some(
                    format!(r#"{{"timestamp":"2026-11-01T00:00:00Z","i":{i}}}"#)
                        .into_bytes()
                        .into(),
                ),
                headers: None,
            })
            .collect();
        let sink = Arc::new(MemorySink::new());
        let targets = crate::app::targets(&cfg, vec![sink.clone() as Arc<dyn ObjectSink>]);
        let (ios, handle) = start(records, cfg.pipeline.workers, 100).unwrap();
        let token = CancellationToken::new();
        let (tx, mut rx) = tokio::sync::watch::channel(Default::default());
        let run = tokio::spawn({
            let token = token.clone();
            async move {
                crate::app::run_workers(
                    &cfg,
                    &Default::default(),
                    targets,
                    ios,
                    Metrics::unregistered(),
                    token,
                    Some(tx),
                )
                .await
            }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while rx.borrow().committed.values().sum::<i64>() < 1000 {
            assert!(tokio::time::Instant::now() < deadline, "{:?}", rx.borrow());
            let _ = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
        }
        token.cancel();
        let stats = run.await.unwrap().unwrap();
        let report = tokio::task::spawn_blocking(move || handle.join().unwrap())
            .await
            .unwrap();
        assert_eq!(stats.records_in, 1000);
        assert_eq!(report.committed.values().sum::<i64>(), 1000);
        let lines: usize = sink
            .objects()
            .values()
            .map(|o| {
                let mut s = String::new();
                std::io::Read::read_to_string(
                    &mut flate2::read::MultiGzDecoder::new(&o.body[..]),
                    &mut s,
                )
                .unwrap();
                s.lines().count()
            })
            .sum();
        assert_eq!(lines, 1000);
    }
}
