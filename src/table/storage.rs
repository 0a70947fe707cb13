//! The table's files (metadata JSON, manifest lists, manifests, and data files when a scan reads
//! them) through the connector's own object-store seam ([`crate::sink::ObjectSink`]): the
//! `iceberg` crate's `Storage` implemented over the destination's S3 client, so the catalog
//! writes with the destination's endpoint, credentials, SSE settings and storage class, and no
//! second S3 client is built.
//!
//! Invariants: paths are `s3://<bucket>/<key>`, in the destination's bucket or, when the storage
//! was given [`OtherBuckets`], in another bucket reached with the same endpoint and credentials
//! (an S3 Tables table bucket, a warehouse outside the destination's bucket); any other path is
//! refused;
//! every write is one PutObject of the whole file (the crate writes metadata and manifests, all
//! small; data files are uploaded by the uploader, never here); nothing is deleted through it
//! (the connector never deletes table files; the table's maintenance removes orphans). A reader fetches the
//! object once and serves ranges from memory (the seam has no ranged GET yet), which suits
//! metadata and manifests; scans of large data files read each whole.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use iceberg::io::{
    FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage, StorageConfig,
    StorageFactory,
};
use iceberg::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::sink::{ObjectMeta, ObjectSink, SinkError, WriteCondition};

/// Makes the store of a bucket other than the destination's, with its endpoint and
/// credentials.
#[async_trait]
pub trait BucketSinks: Send + Sync {
    /// The store of `bucket`.
    async fn sink(&self, bucket: &str) -> Arc<dyn ObjectSink>;
}

/// The stores of other buckets, each made once.
pub struct OtherBuckets {
    maker: Box<dyn BucketSinks>,
    made: tokio::sync::Mutex<std::collections::HashMap<String, Arc<dyn ObjectSink>>>,
}

impl OtherBuckets {
    /// Stores made by `maker`.
    pub fn new(maker: impl BucketSinks + 'static) -> Self {
        Self {
            maker: Box::new(maker),
            made: Default::default(),
        }
    }

    /// The store of `bucket`, made at its first use.
    pub async fn get(&self, bucket: &str) -> Arc<dyn ObjectSink> {
        let mut made = self.made.lock().await;
        if let Some(s) = made.get(bucket) {
            return s.clone();
        }
        let s = self.maker.sink(bucket).await;
        made.insert(bucket.to_string(), s.clone());
        s
    }
}

/// The object store of a table's files: the destination's bucket through an [`ObjectSink`],
/// and other buckets through [`OtherBuckets`] when given.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct SinkStorage {
    /// The bucket every path must be in.
    bucket: String,
    /// The store (not serialized: a deserialized copy refuses every call).
    #[serde(skip)]
    sink: Option<Arc<dyn ObjectSink>>,
    /// Headers of every write (content type, SSE, storage class).
    #[serde(skip)]
    meta: ObjectMeta,
    /// Other buckets' stores (none: only the destination's bucket).
    #[serde(skip)]
    others: Option<Arc<OtherBuckets>>,
}

impl std::fmt::Debug for SinkStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkStorage")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl SinkStorage {
    /// Storage over `sink`, writing with `meta`'s headers.
    pub fn new(sink: Arc<dyn ObjectSink>, meta: ObjectMeta) -> Self {
        Self {
            bucket: sink.bucket().to_string(),
            sink: Some(sink),
            meta,
            others: None,
        }
    }

    /// The same storage, reaching buckets other than the destination's through `others`.
    pub fn with_other_buckets(mut self, others: Arc<OtherBuckets>) -> Self {
        self.others = Some(others);
        self
    }

    fn sink(&self) -> Result<&Arc<dyn ObjectSink>> {
        self.sink.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Unexpected,
                "a deserialized SinkStorage has no object store",
            )
        })
    }

    /// The bucket and key of `path`, when this storage reaches that bucket.
    fn split<'p>(&self, path: &'p str) -> Result<(&'p str, &'p str)> {
        let refused = || {
            let reach = if self.others.is_some() {
                "an s3:// path"
            } else {
                "in the destination's bucket"
            };
            Error::new(
                ErrorKind::DataInvalid,
                format!("{path} is not {reach} (s3://{}/…)", self.bucket),
            )
        };
        let (bucket, key) = path
            .strip_prefix("s3://")
            .or_else(|| path.strip_prefix("s3a://"))
            .and_then(|rest| rest.split_once('/'))
            .filter(|(b, k)| !b.is_empty() && !k.is_empty())
            .ok_or_else(refused)?;
        if bucket != self.bucket && self.others.is_none() {
            return Err(refused());
        }
        Ok((bucket, key))
    }

    /// The store and key of `path`.
    async fn locate<'p>(&self, path: &'p str) -> Result<(Arc<dyn ObjectSink>, &'p str)> {
        let (bucket, key) = self.split(path)?;
        if bucket == self.bucket {
            return Ok((self.sink()?.clone(), key));
        }
        match &self.others {
            Some(o) => Ok((o.get(bucket).await, key)),
            None => Err(Error::new(
                ErrorKind::DataInvalid,
                format!("{path} is not in s3://{}/", self.bucket),
            )),
        }
    }

    async fn get_all(&self, path: &str) -> Result<Bytes> {
        let (sink, key) = self.locate(path).await?;
        let Some(mut body) = sink.get(key).await.map_err(sink_err)? else {
            return Err(not_found(path));
        };
        let mut buf = Vec::with_capacity(usize::try_from(body.head.size).unwrap_or(0));
        body.body.read_to_end(&mut buf).await.map_err(|e| {
            Error::new(ErrorKind::Unexpected, format!("reading {path}: {e}")).with_retryable(true)
        })?;
        Ok(Bytes::from(buf))
    }
}

fn sink_err(e: SinkError) -> Error {
    let retryable = e.kind.retryable();
    Error::new(ErrorKind::Unexpected, e.to_string()).with_retryable(retryable)
}

fn not_found(path: &str) -> Error {
    Error::new(ErrorKind::DataInvalid, format!("{path}: no such object"))
}

fn no_delete() -> Error {
    Error::new(
        ErrorKind::FeatureUnsupported,
        "the connector never deletes table files (the table's maintenance removes orphans)",
    )
}

#[async_trait]
#[typetag::serde]
impl Storage for SinkStorage {
    async fn exists(&self, path: &str) -> Result<bool> {
        let (sink, key) = self.locate(path).await?;
        Ok(sink.head(key).await.map_err(sink_err)?.is_some())
    }

    async fn metadata(&self, path: &str) -> Result<FileMetadata> {
        let (sink, key) = self.locate(path).await?;
        match sink.head(key).await.map_err(sink_err)? {
            Some(h) => Ok(FileMetadata { size: h.size }),
            None => Err(not_found(path)),
        }
    }

    async fn read(&self, path: &str) -> Result<Bytes> {
        self.get_all(path).await
    }

    async fn reader(&self, path: &str) -> Result<Box<dyn FileRead>> {
        Ok(Box::new(WholeObject(self.get_all(path).await?)))
    }

    async fn write(&self, path: &str, bs: Bytes) -> Result<()> {
        let (sink, key) = self.locate(path).await?;
        sink.put(key, bs, &self.meta, &WriteCondition::Always)
            .await
            .map_err(sink_err)
    }

    async fn writer(&self, path: &str) -> Result<Box<dyn FileWrite>> {
        self.split(path)?;
        Ok(Box::new(BufferedWrite {
            storage: self.clone(),
            path: path.to_string(),
            buf: Vec::new(),
            closed: false,
        }))
    }

    async fn delete(&self, _path: &str) -> Result<()> {
        Err(no_delete())
    }

    async fn delete_prefix(&self, _path: &str) -> Result<()> {
        Err(no_delete())
    }

    async fn delete_stream(&self, _paths: BoxStream<'static, String>) -> Result<()> {
        Err(no_delete())
    }

    fn new_input(&self, path: &str) -> Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), path.to_string()))
    }

    fn new_output(&self, path: &str) -> Result<OutputFile> {
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_string()))
    }
}

/// An object read whole, served by range.
struct WholeObject(Bytes);

#[async_trait]
impl FileRead for WholeObject {
    async fn read(&self, range: Range<u64>) -> Result<Bytes> {
        let len = self.0.len() as u64;
        if range.start > range.end || range.end > len {
            return Err(Error::new(
                ErrorKind::DataInvalid,
                format!("range {range:?} outside an object of {len} bytes"),
            ));
        }
        // Both ends are within the object, whose length is a usize.
        Ok(self.0.slice(range.start as usize..range.end as usize))
    }
}

/// A file written in memory and put whole on close.
struct BufferedWrite {
    storage: SinkStorage,
    path: String,
    buf: Vec<u8>,
    closed: bool,
}

#[async_trait]
impl FileWrite for BufferedWrite {
    async fn write(&mut self, bs: Bytes) -> Result<()> {
        if self.closed {
            return Err(Error::new(ErrorKind::Unexpected, "write after close"));
        }
        self.buf.extend_from_slice(&bs);
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        if self.closed {
            return Err(Error::new(ErrorKind::Unexpected, "closed twice"));
        }
        self.closed = true;
        let body = Bytes::from(std::mem::take(&mut self.buf));
        Storage::write(&self.storage, &self.path, body).await
    }
}

/// Builds a [`SinkStorage`] for the catalog's `FileIO` (the storage configuration the catalog
/// passes is not needed: the sink already holds endpoint and credentials).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SinkStorageFactory {
    /// The storage every `FileIO` gets.
    storage: SinkStorage,
}

impl SinkStorageFactory {
    /// A factory handing out `storage`.
    pub fn new(storage: SinkStorage) -> Self {
        Self { storage }
    }
}

#[typetag::serde]
impl StorageFactory for SinkStorageFactory {
    fn build(&self, _config: &StorageConfig) -> Result<Arc<dyn Storage>> {
        Ok(Arc::new(self.storage.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::memory::MemorySink;

    #[tokio::test]
    async fn writes_reads_and_refuses_other_buckets_and_deletes() {
        let sink: Arc<dyn ObjectSink> = Arc::new(MemorySink::new());
        let s = SinkStorage::new(sink, ObjectMeta::default());
        let mut w = s
            .writer("s3://memory/wh/t/metadata/00000.json")
            .await
            .unwrap();
        w.write(Bytes::from_static(b"hello ")).await.unwrap();
        w.write(Bytes::from_static(b"world")).await.unwrap();
        assert!(
            !s.exists("s3://memory/wh/t/metadata/00000.json")
                .await
                .unwrap(),
            "put on close"
        );
        w.close().await.unwrap();
        assert!(w.close().await.is_err());
        let path = "s3://memory/wh/t/metadata/00000.json";
        assert_eq!(s.metadata(path).await.unwrap().size, 11);
        assert_eq!(
            s.read(path).await.unwrap(),
            Bytes::from_static(b"hello world")
        );
        let r = s.reader(path).await.unwrap();
        assert_eq!(r.read(6..11).await.unwrap(), Bytes::from_static(b"world"));
        assert!(r.read(6..12).await.is_err());
        assert!(s.read("s3://memory/missing").await.is_err());
        assert!(s.write("s3://other/k", Bytes::new()).await.is_err());
        assert!(s.exists("/local/path").await.is_err());
        assert!(s.delete(path).await.is_err());
    }
}
