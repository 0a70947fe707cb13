//! Intake: a chunk of records into the open files. Each record's destinations are resolved
//! from its topic; a destination that reads the Confluent wire format (`value_format`) sees the
//! value decoded through the Schema Registry (`decoding.rs` has the schemas at hand before a
//! chunk is taken in); the router then writes, filters or quarantines it.
//!
//! Invariant: a record's offset enters the tracker only after every destination wrote, filtered
//! or quarantined it; a decoding failure is a quarantine with its reason, never a drop.

use std::borrow::Cow;
use std::sync::Arc;

use tokio::time::Instant;

use super::{Pipeline, PipelineError, Write};
use crate::destination::FileKind;
use crate::envelope::{error_line_with_detail, with_kafka_metadata};
use crate::model::{QuarantineReason, Record, TopicPartition};
use crate::router::Route;

impl Pipeline {
    /// The destinations of `topic` (indices in config order), resolved once per topic: by name
    /// or by pattern. Also registers the offset windows of its deterministic destinations.
    pub(super) fn resolve_topic(&mut self, topic: &Arc<str>) -> Arc<[usize]> {
        if let Some(d) = self.topic_dests.get(topic) {
            return d.clone();
        }
        let dests: Arc<[usize]> = self
            .dests
            .iter()
            .enumerate()
            .filter(|(_, d)| d.cfg.topics.matches(topic))
            .map(|(i, _)| i)
            .collect();
        let windows = dests
            .iter()
            .filter(|&&i| self.dests[i].cfg.batch.deterministic)
            .map(|&i| self.dests[i].cfg.batch.max_records)
            .collect();
        self.offsets.set_windows(topic, windows);
        self.topic_dests.insert(topic.clone(), dests.clone());
        dests
    }

    pub(super) fn ingest(&mut self, records: Vec<Record>) -> Result<(), PipelineError> {
        let now = Instant::now();
        let now_utc = (self.clock)();
        // Consumed-records metrics once per partition per chunk, not per record (a chunk holds
        // few partitions, so a linear search beats hashing).
        let mut consumed: Vec<(TopicPartition, u64, u64)> = Vec::new();
        // The values decoded ahead together (`decoding.rs`): those of records[from..from + n].
        let (mut ahead, mut from) = (Vec::new(), 0);
        for (i, rec) in records.iter().enumerate() {
            if i >= from + ahead.len() {
                ahead = self.decode_ahead(&records[i..]);
                from = i;
            }
            let line = ahead.get(i - from).and_then(Option::as_ref);
            if !self.offsets.is_assigned(&rec.tp) {
                tracing::debug!(tp = %rec.tp, offset = rec.offset, "record of an unassigned partition; skipped");
                continue;
            }
            let dests = self.resolve_topic(&rec.tp.topic);
            if dests.is_empty() {
                for (tp, n, b) in consumed {
                    self.metrics.consumed(&tp, n, b);
                }
                return Err(PipelineError::Unroutable {
                    topic: rec.tp.topic.to_string(),
                    partition: rec.tp.partition,
                    offset: rec.offset,
                });
            }
            self.stats.records_in += 1;
            match consumed.iter_mut().find(|(tp, _, _)| *tp == rec.tp) {
                Some((_, n, b)) => {
                    *n += 1;
                    *b += rec.value_len() as u64;
                }
                None => consumed.push((rec.tp.clone(), 1, rec.value_len() as u64)),
            }
            let mut memo = super::decoding::Memo::default();
            for &d in dests.iter() {
                let skip = &self.dests[d].skip_below;
                if !skip.is_empty() && skip.get(&rec.tp).is_some_and(|&b| rec.offset < b) {
                    self.stats.records_already_held += 1;
                    self.metrics.already_held(&self.dests[d].cfg.name, 1);
                    continue;
                }
                if let Some(n) = self.dests[d].window {
                    if self.offsets.enter_window(&rec.tp, d, n, rec.offset) {
                        self.close_window(d, &rec.tp);
                    }
                }
                // A destination reading the wire format routes the decoded value.
                let decoded;
                let view = match self.read_value(d, rec, line, &mut memo)? {
                    None => rec,
                    Some(Ok(r)) => {
                        // A `from_schema` destination's columns must hold its schema's fields.
                        if let Some(why) = self.conflict(d, rec) {
                            let why = why.to_string();
                            let reason = QuarantineReason::SchemaMismatch;
                            self.quarantine(d, rec, reason, Some(&why), now);
                            continue;
                        }
                        decoded = r;
                        &decoded
                    }
                    Some(Err((reason, detail))) => {
                        self.quarantine(d, rec, reason, Some(&detail), now);
                        continue;
                    }
                };
                match self.dests[d].router.route(view, now_utc) {
                    Route::Filtered => {
                        self.stats.records_filtered += 1;
                        self.metrics.filtered(&self.dests[d].cfg.name);
                    }
                    Route::Quarantine(reason) => self.quarantine(d, rec, reason, None, now),
                    Route::Mismatch(m) => {
                        let detail = m.detail();
                        let reason = QuarantineReason::SchemaMismatch;
                        self.quarantine(d, rec, reason, Some(&detail), now);
                    }
                    Route::Write {
                        folder,
                        time,
                        line,
                        values,
                        row,
                    } => {
                        self.stats.records_written += 1;
                        // Parquet files take the metadata as columns.
                        let cfg = &self.dests[d].cfg;
                        let line = match &cfg.kafka_metadata_field {
                            Some(field) if cfg.parquet.is_none() => {
                                Cow::Owned(with_kafka_metadata(&line, view, field))
                            }
                            _ => line,
                        };
                        let write = Write {
                            dest: d,
                            rec: view,
                            kind: FileKind::Data(folder),
                            line: &line,
                            row: &row,
                            time,
                            values,
                        };
                        self.append(write, now);
                    }
                }
            }
            if let Err(e) = self.offsets.consumed(&rec.tp, rec.offset) {
                tracing::warn!(error = %e, "offset tracker refused a record; it will be re-read after a restart");
            }
            // Checked per record (O(1)), so one chunk cannot overshoot the budget.
            if self.files.over_budget(self.queued_bytes()) {
                self.enforce_budget();
            }
        }
        for (tp, n, b) in consumed {
            self.metrics.consumed(&tp, n, b);
        }
        Ok(())
    }

    /// Writes a record to its destination's error folder for `reason` (the envelope carries
    /// `detail` when given), counting it.
    fn quarantine(
        &mut self,
        dest: usize,
        rec: &Record,
        reason: QuarantineReason,
        detail: Option<&str>,
        now: Instant,
    ) {
        self.stats.records_quarantined += 1;
        self.metrics.quarantined(&self.dests[dest].cfg.name, reason);
        tracing::debug!(tp = %rec.tp, offset = rec.offset, reason = reason.as_str(), detail, "quarantined");
        let line = error_line_with_detail(rec, reason, detail);
        let write = Write {
            dest,
            rec,
            kind: FileKind::Error(reason),
            line: &line,
            row: &[],
            time: None,
            values: Vec::new(),
        };
        self.append(write, now);
    }
}
