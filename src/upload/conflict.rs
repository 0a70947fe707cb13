//! What the uploader does when a conditional write finds its key taken (412/409), or when a
//! retried CompleteMultipartUpload finds its upload gone. An object is never replaced by one
//! with other records, so no overwrite can remove records from S3:
//!
//! 1. The object at the key carries our `writer-id`: an earlier attempt of this same request
//!    landed (its answer was lost). Done.
//! 2. Its uncompressed content has our content hash: a replay rebuilt the same file (after a
//!    crash, or a zombie worker racing the partition's new owner). Done, no duplicate.
//! 3. Its content starts with all of ours (a writer that kept its file open longer, e.g. the
//!    new owner of a zombie's partition): our records are there. Done, no duplicate.
//! 4. Ours starts with all of its content (a file cut early by a revoke, shutdown or age flush,
//!    rebuilt whole by the replay): ours replaces it with `If-Match` on its ETag, which loses
//!    nothing because ours holds every line of it. PutObject only (a multipart body is no longer
//!    in memory to compare).
//! 5. Different records (a writer that cut its file elsewhere): both must stay. A single
//!    PutObject body goes to [`aside_key`] (`…~<writer>.ndjson.gz`) instead; a multipart upload
//!    (whose parts are already in S3) copies the existing object aside first, then completes
//!    with `If-Match` on the ETag it copied, so a third writer in between is caught and the
//!    round repeats.
//!
//! Invariant: every path either leaves our records in S3 under a reported key or returns an
//! error, so the pipeline never commits records that are not stored.

use bytes::Bytes;
use std::io::Write;
use tokio::io::AsyncReadExt;
use xxhash_rust::xxh3::Xxh3;

use super::{ObjectInfo, ObjectTask, UploadError};
use crate::config::Compression;
use crate::sink::{meta_keys, CompletedPart, ErrorKind, ObjectMeta, ObjectSink, SinkError};
use crate::sink::{ObjectHead, WriteCondition};
use crate::upload::Resolution;

/// Rounds of head / compare / write before giving up (each round means another writer changed
/// the key meanwhile).
const MAX_ROUNDS: usize = 5;

/// The object being written.
pub(super) struct Ours<'a> {
    pub key: &'a str,
    pub writer: &'a str,
    pub content_hash: u128,
    /// Uncompressed length (stored length for Parquet).
    pub raw_len: u64,
    /// A Parquet file: its content is its bytes as stored.
    pub parquet: bool,
}

/// What an object holds, uncompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Content {
    hash: u128,
    len: u64,
    /// Hash of its first `prefix_len` bytes, if it is that long.
    prefix_hash: Option<u128>,
}

/// Its bytes: whole (PutObject) or already uploaded as parts.
pub(super) enum Body<'a> {
    Whole(&'a Bytes, &'a ObjectMeta),
    Multipart {
        upload_id: &'a str,
        parts: &'a [CompletedPart],
        /// The object's headers: the copy moved aside keeps its encryption and storage class.
        meta: &'a ObjectMeta,
        /// Why the Complete failed (a conflict, or a permanent error such as NoSuchUpload).
        failed: SinkError,
    },
}

/// The key beside `key` for the object of writer `tag`: the tag goes before the file's
/// extensions, so tools that look at `.ndjson.gz` still see the file.
pub fn aside_key(key: &str, tag: &str) -> String {
    let name_start = key.rfind('/').map_or(0, |i| i + 1);
    let name = &key[name_start..];
    let mut stem_len = name.len();
    for ext in [
        ".gz", ".zst", ".parquet", ".ndjson", ".jsonl", ".json", ".txt", ".log",
    ] {
        if name[..stem_len].ends_with(ext) && stem_len > ext.len() {
            stem_len -= ext.len();
        }
    }
    let split = name_start + stem_len;
    format!("{}~{tag}{}", &key[..split], &key[split..])
}

/// Compressed bytes of a stored object read before they are decompressed, off the async
/// threads, in one blocking task.
const DECODE_CHUNK: usize = 1 << 20;

/// Reads an object and hashes its uncompressed content (and its first `prefix_len` bytes).
/// `Ok(None)`: no object at the key; `Ok(Some(None))`: it exists but does not decompress, or
/// decompresses past `max_raw` bytes (a decompression bomb, or anything else that cannot be an
/// object of ours), so it is not our content. Decompression runs on blocking threads, a chunk
/// at a time, and stops reading at the limit.
async fn stored_content(
    sink: &dyn ObjectSink,
    key: &str,
    codec: Compression,
    prefix_len: u64,
    max_raw: u64,
) -> Result<Option<Option<Content>>, SinkError> {
    let Some(mut obj) = sink.get(key).await? else {
        return Ok(None);
    };
    let read_err = |e: std::io::Error| SinkError {
        op: "GetObject",
        bucket: sink.bucket().to_string(),
        key: key.to_string(),
        kind: ErrorKind::Network,
        message: e.to_string(),
        answer: Default::default(),
    };
    let mut decode = Decode::new(codec, HashWriter::new(prefix_len).with_limit(max_raw));
    let mut chunk = Vec::with_capacity(DECODE_CHUNK);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = obj.body.read(&mut buf).await.map_err(read_err)?;
        chunk.extend_from_slice(&buf[..n]);
        if chunk.len() >= DECODE_CHUNK || (n == 0 && !chunk.is_empty()) {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(DECODE_CHUNK));
            decode = tokio::task::spawn_blocking(move || {
                decode.feed(&full);
                decode
            })
            .await
            .map_err(|e| read_err(std::io::Error::other(e)))?;
            if !decode.readable() {
                tracing::warn!(%key, max_raw, "the object at a taken key does not decompress within the limit; treated as other records");
                return Ok(Some(None));
            }
        }
        if n == 0 {
            break;
        }
    }
    Ok(Some(decode.finish().map(|h| h.content())))
}

/// The decompressing hasher of [`stored_content`] (and of our own body): moved into each
/// blocking task and back.
enum Decode<W: Write> {
    Plain(W),
    Gzip(Box<flate2::write::MultiGzDecoder<W>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, W>>),
    /// A decoder failed: the content is unreadable.
    Failed,
}

impl<W: Write> Decode<W> {
    fn new(codec: Compression, inner: W) -> Self {
        match codec {
            Compression::None => Self::Plain(inner),
            Compression::Gzip { .. } => {
                Self::Gzip(Box::new(flate2::write::MultiGzDecoder::new(inner)))
            }
            Compression::Zstd { .. } => match zstd::stream::write::Decoder::new(inner) {
                Ok(d) => Self::Zstd(Box::new(d)),
                Err(_) => Self::Failed,
            },
        }
    }

    fn readable(&self) -> bool {
        !matches!(self, Self::Failed)
    }

    fn feed(&mut self, bytes: &[u8]) {
        let ok = match self {
            Self::Plain(w) => w.write_all(bytes).is_ok(),
            Self::Gzip(d) => d.write_all(bytes).is_ok(),
            Self::Zstd(d) => d.write_all(bytes).is_ok(),
            Self::Failed => false,
        };
        if !ok {
            *self = Self::Failed;
        }
    }

    /// The inner writer after the end of the stream; `None` if it did not decode whole.
    fn finish(self) -> Option<W> {
        match self {
            Self::Plain(w) => Some(w),
            Self::Gzip(d) => d.finish().ok(),
            Self::Zstd(mut d) => {
                d.flush().ok()?;
                Some(d.into_inner())
            }
            Self::Failed => None,
        }
    }
}

/// Hash of the first `len` uncompressed bytes of a body we hold (`None`: shorter, or it does
/// not decode). Our own body: its size is bounded by the file it came from.
fn prefix_hash_of(body: &[u8], codec: Compression, len: u64) -> Option<u128> {
    let mut d = Decode::new(codec, HashWriter::new(len));
    d.feed(body);
    d.finish()?.content().prefix_hash
}

/// Hashes what is written to it, whole and up to a prefix length; refuses writes past a limit.
struct HashWriter {
    all: Xxh3,
    prefix: Xxh3,
    prefix_len: u64,
    len: u64,
    limit: u64,
}

impl HashWriter {
    fn new(prefix_len: u64) -> Self {
        Self {
            all: Xxh3::new(),
            prefix: Xxh3::new(),
            prefix_len,
            len: 0,
            limit: u64::MAX,
        }
    }

    fn with_limit(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }

    fn update(&mut self, buf: &[u8]) {
        let room = self.prefix_len.saturating_sub(self.len);
        let take = (buf.len() as u64).min(room) as usize;
        self.prefix.update(&buf[..take]);
        self.all.update(buf);
        self.len += buf.len() as u64;
    }

    fn content(&self) -> Content {
        Content {
            hash: self.all.digest128(),
            len: self.len,
            prefix_hash: (self.len >= self.prefix_len).then(|| self.prefix.digest128()),
        }
    }
}

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.len.saturating_add(buf.len() as u64) > self.limit {
            return Err(std::io::Error::other("uncompressed content over the limit"));
        }
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn writer_of(head: &ObjectHead) -> Option<&str> {
    head.user.get(meta_keys::WRITER).map(String::as_str)
}

impl ObjectTask {
    /// Resolves a taken key (see the module doc). Each request is retried like any other.
    pub(super) async fn resolve(
        &self,
        info: &ObjectInfo,
        ours: &Ours<'_>,
        body: Body<'_>,
    ) -> Result<Resolution, UploadError> {
        let t = &self.targets[info.dest];
        let sink = &*t.sink;
        let key = ours.key;
        // Parquet bytes are compared as they are: the same rows make the same file. (A file
        // with more rows does not start with ours, so cases 3 and 4 become case 5.)
        let codec = if ours.parquet {
            Compression::None
        } else {
            t.compression
        };
        let cond = if t.conditional {
            WriteCondition::IfAbsent
        } else {
            WriteCondition::Always
        };
        let mut last_err = None;
        for _ in 0..MAX_ROUNDS {
            let head = self.attempt(info, || sink.head(key)).await?;
            let Some(head) = head else {
                // Nothing at the key (any more): write as first planned.
                let r = match &body {
                    Body::Whole(bytes, meta) => {
                        self.attempt(info, || sink.put(key, (*bytes).clone(), meta, &cond))
                            .await
                    }
                    Body::Multipart { failed, .. } if failed.kind == ErrorKind::Permanent => {
                        return Err(UploadError::Sink(failed.clone()))
                    }
                    Body::Multipart {
                        upload_id, parts, ..
                    } => {
                        self.attempt(info, || {
                            sink.complete_multipart(key, upload_id, parts, &cond)
                        })
                        .await
                    }
                };
                match r {
                    Ok(()) => return self.resolved(info, Resolution::Written),
                    Err(UploadError::Sink(e)) if e.kind == ErrorKind::Conflict => {
                        last_err = Some(e);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            };
            if writer_of(&head) == Some(ours.writer) {
                return self.resolved(info, Resolution::OwnEarlierAttempt);
            }
            if let Body::Multipart { failed, .. } = &body {
                if failed.kind == ErrorKind::Permanent {
                    // The upload is gone and the key holds someone else's object.
                    return Err(UploadError::Sink(failed.clone()));
                }
            }
            let stored = self
                .attempt(info, || {
                    stored_content(sink, key, codec, ours.raw_len, t.max_stored_raw_bytes)
                })
                .await?;
            let content = match stored {
                None => continue, // deleted between HEAD and GET: look again
                Some(c) => c,
            };
            if let Some(c) = content {
                if c.hash == ours.content_hash && c.len == ours.raw_len {
                    return self.resolved(info, Resolution::Identical);
                }
                if c.len > ours.raw_len && c.prefix_hash == Some(ours.content_hash) {
                    return self.resolved(info, Resolution::Covered);
                }
                if let Body::Whole(bytes, meta) = &body {
                    let starts_ours =
                        c.len < ours.raw_len && prefix_hash_of(bytes, codec, c.len) == Some(c.hash);
                    if starts_ours && t.conditional {
                        let if_match = WriteCondition::IfMatch(head.etag.clone());
                        let r = self
                            .attempt(info, || sink.put(key, (*bytes).clone(), meta, &if_match))
                            .await;
                        match r {
                            Ok(()) => return self.resolved(info, Resolution::Superseded),
                            Err(UploadError::Sink(e)) if e.kind == ErrorKind::Conflict => {
                                last_err = Some(e);
                                continue; // changed meanwhile: look again
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            match &body {
                Body::Whole(bytes, meta) => {
                    let aside = aside_key(key, ours.writer);
                    let r = self
                        .attempt(info, || sink.put(&aside, (*bytes).clone(), meta, &cond))
                        .await;
                    return match r {
                        Ok(()) => self.resolved(info, Resolution::WrittenAside(aside)),
                        Err(UploadError::Sink(e)) if e.kind == ErrorKind::Conflict => {
                            // Only this task writes its aside key: an earlier attempt landed.
                            self.resolved(info, Resolution::WrittenAside(aside))
                        }
                        Err(e) => Err(e),
                    };
                }
                Body::Multipart {
                    upload_id,
                    parts,
                    meta,
                    ..
                } => {
                    let tag = writer_of(&head)
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
                    let aside = aside_key(key, &tag);
                    self.attempt(info, || sink.copy(key, &aside, meta)).await?;
                    let if_match = WriteCondition::IfMatch(head.etag.clone());
                    let r = self
                        .attempt(info, || {
                            sink.complete_multipart(key, upload_id, parts, &if_match)
                        })
                        .await;
                    match r {
                        Ok(()) => return self.resolved(info, Resolution::MovedAside(aside)),
                        Err(UploadError::Sink(e))
                            if e.kind == ErrorKind::Conflict || e.kind == ErrorKind::Permanent =>
                        {
                            // Changed again meanwhile, or our Complete landed and its answer
                            // was lost: the next round's HEAD tells.
                            last_err = Some(e);
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Err(UploadError::Sink(last_err.unwrap_or_else(|| SinkError {
            op: "PutObject",
            bucket: sink.bucket().to_string(),
            key: key.to_string(),
            kind: ErrorKind::Conflict,
            message: format!("key still contended after {MAX_ROUNDS} rounds"),
            answer: Default::default(),
        })))
    }

    fn resolved(
        &self,
        info: &ObjectInfo,
        resolution: Resolution,
    ) -> Result<Resolution, UploadError> {
        let t = &self.targets[info.dest];
        if let Some(label) = resolution.label() {
            self.metrics.key_conflict(&t.name, label);
            tracing::info!(destination = %t.name, tp = %info.tp, first_offset = info.first_offset, resolution = ?resolution, "object key was taken; resolved");
        }
        Ok(resolution)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aside_keys_keep_folders_and_extensions() {
        assert_eq!(
            aside_key("p/2024/01/02/03/t+0+00000000000000000100.ndjson.gz", "ab12"),
            "p/2024/01/02/03/t+0+00000000000000000100~ab12.ndjson.gz"
        );
        assert_eq!(
            aside_key("events.v1+3+7.ndjson", "w"),
            "events.v1+3+7~w.ndjson"
        );
        assert_eq!(aside_key("a/b/name", "w"), "a/b/name~w");
        assert_eq!(aside_key("a.b/.gz", "w"), "a.b/.gz~w");
    }
}
