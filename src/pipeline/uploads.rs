//! The worker's uploads: the uploader it hands files to, the completions it reads back, and the
//! closed files whose upload has not completed yet (`in flight`), each with the token that
//! cancels it.
//!
//! Invariants: a closed file is in flight from [`Uploads::hand_over`] until its completion is
//! taken ([`Uploads::take`]), and only then; every upload the worker opens is a child of one
//! token, so [`Uploads::cancel_all`] stops them all (on a fatal error and once a shutdown drained).

use bytes::Bytes;
use parquet::file::metadata::ParquetMetaData;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;

use crate::destination::FileKind;
use crate::model::TopicPartition;
use crate::upload::{FileStats, ObjectInfo, ObjectWriter, UploadDone, Uploader};

/// A closed file whose upload has not completed.
pub(super) struct InFlight {
    /// Its destination.
    pub dest: usize,
    /// Its partition.
    pub tp: TopicPartition,
    /// Data or error file.
    pub kind: FileKind,
    /// Offset of its first record (held in the offset tracker until it is durable).
    pub first_offset: i64,
    /// Offset of its last record.
    pub last_offset: i64,
    /// Cancels its upload.
    pub cancel: CancellationToken,
    /// Its Parquet footer, when its destination's kind registers files by it.
    pub footer: Option<Arc<ParquetMetaData>>,
}

/// A closed file, ready for the last step of its upload.
pub(super) struct Closed {
    /// Its upload's identity.
    pub info: ObjectInfo,
    /// Its upload, if it streamed parts.
    pub writer: Option<ObjectWriter>,
    /// Its last bytes.
    pub body: Bytes,
    /// Its object key.
    pub key: String,
    /// Records and sizes.
    pub stats: FileStats,
    /// Data or error file.
    pub kind: FileKind,
    /// Offset of its last record.
    pub last_offset: i64,
    /// Its Parquet footer, when its destination's kind registers files by it.
    pub footer: Option<Arc<ParquetMetaData>>,
}

/// The uploader, its completions and the files in flight (see the module doc).
pub(super) struct Uploads {
    uploader: Uploader,
    done: tokio::sync::mpsc::UnboundedReceiver<UploadDone>,
    in_flight: HashMap<u64, InFlight>,
    cancel: CancellationToken,
}

impl Uploads {
    /// Nothing in flight yet.
    pub fn new(uploader: Uploader, done: tokio::sync::mpsc::UnboundedReceiver<UploadDone>) -> Self {
        Self {
            uploader,
            done,
            in_flight: HashMap::new(),
            cancel: CancellationToken::new(),
        }
    }

    /// Bytes handed to uploads and not yet in S3.
    pub fn queued_bytes(&self) -> usize {
        self.uploader.queued_bytes()
    }

    /// Size of a part (and the PutObject threshold).
    pub fn part_size(&self) -> usize {
        self.uploader.part_size()
    }

    /// Opens the upload of a file that sends parts while it fills, under its final `key`.
    pub fn open_streaming(&self, info: ObjectInfo, key: String) -> ObjectWriter {
        self.uploader
            .open(info, Some(key), self.cancel.child_token())
    }

    /// Hands a closed file's last bytes to its upload (opening one if it streamed no part) and
    /// puts it in flight.
    pub fn hand_over(&mut self, file: Closed) {
        let Closed {
            info,
            writer,
            body,
            key,
            stats,
            kind,
            last_offset,
            footer,
        } = file;
        // A file that streamed parts keeps its upload's token, so cancelling it in flight stops
        // that upload.
        let cancel = match writer {
            Some(w) => {
                let cancel = w.cancel_token();
                w.finish(body, key, stats);
                cancel
            }
            None => {
                let cancel = self.cancel.child_token();
                self.uploader
                    .put(info.clone(), body, key, stats, cancel.clone());
                cancel
            }
        };
        self.in_flight.insert(
            info.id,
            InFlight {
                dest: info.dest,
                tp: info.tp,
                kind,
                first_offset: info.first_offset,
                last_offset,
                cancel,
                footer,
            },
        );
    }

    /// The next completion (`None` once every sender is gone).
    pub async fn recv(&mut self) -> Option<UploadDone> {
        self.done.recv().await
    }

    /// The next completion before `deadline` (`None` when it passed or every sender is gone).
    pub async fn recv_until(&mut self, deadline: Instant) -> Option<UploadDone> {
        timeout_at(deadline, self.done.recv()).await.ok().flatten()
    }

    /// Takes the file of a completed upload out of flight (`None`: a streaming upload that
    /// failed before its file was closed).
    pub fn take(&mut self, id: u64) -> Option<InFlight> {
        self.in_flight.remove(&id)
    }

    /// Files in flight.
    pub fn len(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether no file is in flight.
    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Whether a file in flight matches `which`.
    pub fn any(&self, which: impl Fn(&InFlight) -> bool) -> bool {
        self.in_flight.values().any(which)
    }

    /// Cancels the uploads of the files in flight that match `which`.
    pub fn cancel_where(&self, which: impl Fn(&InFlight) -> bool) {
        for f in self.in_flight.values().filter(|f| which(f)) {
            f.cancel.cancel();
        }
    }

    /// Cancels every upload the worker opened.
    pub fn cancel_all(&self) {
        self.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::QuarantineReason;
    use crate::sink::memory::MemorySink;
    use crate::upload::tests::{info, stats, uploader};
    use crate::upload::UploadError;
    use std::sync::Arc;

    /// A file that streamed parts is cancelled in flight like a file sent whole (a revoke whose
    /// drain deadline passed cancels its partitions' uploads).
    #[tokio::test]
    async fn a_streamed_file_in_flight_is_cancelled_with_its_partition() {
        let sink = Arc::new(MemorySink::new());
        // Every request fails and is retried until cancelled.
        sink.fail_next(u32::MAX);
        let (up, done) = uploader(sink.clone(), None);
        let mut uploads = Uploads::new(up, done);
        let mut writer = uploads.open_streaming(info(1), "k1".into());
        writer.part(Bytes::from_static(b"012345678"));
        uploads.hand_over(Closed {
            info: info(1),
            writer: Some(writer),
            body: Bytes::from_static(b"9"),
            key: "k1".into(),
            stats: stats(),
            kind: FileKind::Error(QuarantineReason::Empty),
            last_offset: 0,
            footer: None,
        });
        uploads.cancel_where(|f| f.tp.partition == 0);
        // Bounded so a regression fails instead of hanging: without the cancellation the
        // upload retries forever.
        let done = tokio::time::timeout(std::time::Duration::from_secs(60), uploads.recv())
            .await
            .expect("the cancelled upload reports")
            .unwrap();
        assert!(matches!(done.result, Err(UploadError::Cancelled)));
        assert!(sink.objects().is_empty());
        assert_eq!(uploads.queued_bytes(), 0);
    }
}
