//! In-memory [`ObjectSink`] for unit tests of the uploader and pipeline: stores objects in a map,
//! assembles multipart uploads, and can fail the next N requests.

use async_trait::async_trait;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use super::{CompletedPart, ErrorKind, ObjectMeta, ObjectSink, SinkError};

/// A stored object.
#[derive(Debug, Clone)]
pub struct StoredObject {
    /// Body.
    pub body: Bytes,
    /// Headers.
    pub meta: ObjectMeta,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, StoredObject>,
    uploads: HashMap<String, (String, ObjectMeta, BTreeMap<i32, Bytes>)>,
    aborted: usize,
    next_id: u64,
}

/// Objects in a map.
#[derive(Default)]
pub struct MemorySink {
    state: Mutex<State>,
    fail_next: AtomicU32,
}

impl MemorySink {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next `n` requests fail with a 503 SlowDown.
    pub fn fail_next(&self, n: u32) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// All stored objects by key.
    pub fn objects(&self) -> BTreeMap<String, StoredObject> {
        self.lock().objects.clone()
    }

    /// Multipart uploads neither completed nor aborted.
    pub fn open_uploads(&self) -> usize {
        self.lock().uploads.len()
    }

    /// Multipart uploads aborted.
    pub fn aborted_uploads(&self) -> usize {
        self.lock().aborted
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn maybe_fail(&self, op: &'static str, key: &str) -> Result<(), SinkError> {
        let took = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if took.is_ok() {
            return Err(SinkError {
                op,
                bucket: "memory".into(),
                key: key.into(),
                kind: ErrorKind::Throttle,
                message: "SlowDown (injected)".into(),
            });
        }
        Ok(())
    }

    fn no_upload(op: &'static str, key: &str) -> SinkError {
        SinkError {
            op,
            bucket: "memory".into(),
            key: key.into(),
            kind: ErrorKind::Permanent,
            message: "NoSuchUpload".into(),
        }
    }
}

#[async_trait]
impl ObjectSink for MemorySink {
    fn bucket(&self) -> &str {
        "memory"
    }

    async fn check(&self) -> Result<(), SinkError> {
        self.maybe_fail("HeadBucket", "")
    }

    async fn put(&self, key: &str, body: Bytes, meta: &ObjectMeta) -> Result<(), SinkError> {
        self.maybe_fail("PutObject", key)?;
        self.lock().objects.insert(
            key.into(),
            StoredObject {
                body,
                meta: meta.clone(),
            },
        );
        Ok(())
    }

    async fn create_multipart(&self, key: &str, meta: &ObjectMeta) -> Result<String, SinkError> {
        self.maybe_fail("CreateMultipartUpload", key)?;
        let mut st = self.lock();
        st.next_id += 1;
        let id = format!("upload-{}", st.next_id);
        st.uploads
            .insert(id.clone(), (key.to_string(), meta.clone(), BTreeMap::new()));
        Ok(id)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<String, SinkError> {
        self.maybe_fail("UploadPart", key)?;
        let mut st = self.lock();
        let up = st
            .uploads
            .get_mut(upload_id)
            .ok_or_else(|| Self::no_upload("UploadPart", key))?;
        up.2.insert(number, body);
        Ok(format!("etag-{number}"))
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<(), SinkError> {
        self.maybe_fail("CompleteMultipartUpload", key)?;
        let mut st = self.lock();
        let (k, meta, stored) = st
            .uploads
            .remove(upload_id)
            .ok_or_else(|| Self::no_upload("CompleteMultipartUpload", key))?;
        let mut body = Vec::new();
        for p in parts {
            match stored.get(&p.number) {
                Some(b) => body.extend_from_slice(b),
                None => return Err(Self::no_upload("CompleteMultipartUpload", key)),
            }
        }
        st.objects.insert(
            k,
            StoredObject {
                body: Bytes::from(body),
                meta,
            },
        );
        Ok(())
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), SinkError> {
        self.maybe_fail("AbortMultipartUpload", key)?;
        let mut st = self.lock();
        if st.uploads.remove(upload_id).is_some() {
            st.aborted += 1;
        }
        Ok(())
    }
}
