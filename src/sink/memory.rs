//! In-memory [`ObjectSink`] for unit tests of the uploader and pipeline: stores objects in a map,
//! assembles multipart uploads, honours conditional writes like S3 (412 when the condition fails),
//! and can fail the next N requests.

use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use super::{
    CompletedPart, ErrorKind, ListedObject, ObjectBody, ObjectHead, ObjectMeta, ObjectPage,
    ObjectSink, PendingUpload, SinkError, UploadPage, WriteCondition,
};

/// A stored object.
#[derive(Debug, Clone)]
pub struct StoredObject {
    /// Body.
    pub body: Bytes,
    /// Headers.
    pub meta: ObjectMeta,
}

impl StoredObject {
    /// ETag (a hash of the body, quoted like S3's).
    pub fn etag(&self) -> String {
        format!("\"{:032x}\"", xxhash_rust::xxh3::xxh3_128(&self.body))
    }
}

struct Upload {
    key: String,
    meta: ObjectMeta,
    parts: BTreeMap<i32, Bytes>,
    initiated: SystemTime,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, StoredObject>,
    uploads: BTreeMap<String, Upload>,
    aborted: usize,
    next_id: u64,
}

/// Objects in a map.
#[derive(Default)]
pub struct MemorySink {
    state: Mutex<State>,
    fail_next: AtomicU32,
    lose_answers: AtomicU32,
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

    /// Makes the next `n` PutObject / CompleteMultipartUpload requests take effect and then
    /// fail as if the connection dropped before the answer (the client retries an applied write).
    pub fn lose_answers(&self, n: u32) {
        self.lose_answers.store(n, Ordering::SeqCst);
    }

    fn answer_lost(&self, op: &'static str, key: &str) -> Result<(), SinkError> {
        let took = self
            .lose_answers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match took {
            Ok(_) => Err(SinkError {
                op,
                bucket: "memory".into(),
                key: key.into(),
                kind: ErrorKind::Network,
                message: "connection reset after the request was applied (injected)".into(),
                answer: Default::default(),
            }),
            Err(_) => Ok(()),
        }
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

    /// Stores an object directly (test set-up: what another writer left).
    pub fn insert(&self, key: &str, body: Bytes, meta: ObjectMeta) {
        self.lock()
            .objects
            .insert(key.into(), StoredObject { body, meta });
    }

    /// Starts a multipart upload that looks `age` old (test set-up: an orphan).
    pub fn insert_upload(&self, key: &str, age: std::time::Duration) -> String {
        let mut st = self.lock();
        st.next_id += 1;
        let id = format!("upload-{}", st.next_id);
        st.uploads.insert(
            id.clone(),
            Upload {
                key: key.into(),
                meta: ObjectMeta::default(),
                parts: BTreeMap::new(),
                initiated: SystemTime::now() - age,
            },
        );
        id
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
                answer: Default::default(),
            });
        }
        Ok(())
    }

    fn check_condition(
        st: &State,
        op: &'static str,
        key: &str,
        cond: &WriteCondition,
    ) -> Result<(), SinkError> {
        let existing = st.objects.get(key);
        let ok = match cond {
            WriteCondition::Always => true,
            WriteCondition::IfAbsent => existing.is_none(),
            WriteCondition::IfMatch(etag) => existing.is_some_and(|o| o.etag() == *etag),
        };
        if ok {
            return Ok(());
        }
        Err(SinkError {
            op,
            bucket: "memory".into(),
            key: key.into(),
            kind: ErrorKind::Conflict,
            message: "HTTP 412 PreconditionFailed".into(),
            answer: Default::default(),
        })
    }

    fn no_upload(op: &'static str, key: &str) -> SinkError {
        SinkError {
            op,
            bucket: "memory".into(),
            key: key.into(),
            kind: ErrorKind::Permanent,
            message: "NoSuchUpload".into(),
            answer: Default::default(),
        }
    }
}

#[async_trait]
impl ObjectSink for MemorySink {
    fn bucket(&self) -> &str {
        "memory"
    }

    async fn check(&self) -> Result<(), SinkError> {
        self.maybe_fail("ListObjectsV2", "")
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        meta: &ObjectMeta,
        cond: &WriteCondition,
    ) -> Result<(), SinkError> {
        self.maybe_fail("PutObject", key)?;
        let mut st = self.lock();
        Self::check_condition(&st, "PutObject", key, cond)?;
        st.objects.insert(
            key.into(),
            StoredObject {
                body,
                meta: meta.clone(),
            },
        );
        drop(st);
        self.answer_lost("PutObject", key)
    }

    async fn create_multipart(&self, key: &str, meta: &ObjectMeta) -> Result<String, SinkError> {
        self.maybe_fail("CreateMultipartUpload", key)?;
        let mut st = self.lock();
        st.next_id += 1;
        let id = format!("upload-{}", st.next_id);
        st.uploads.insert(
            id.clone(),
            Upload {
                key: key.into(),
                meta: meta.clone(),
                parts: BTreeMap::new(),
                initiated: SystemTime::now(),
            },
        );
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
        up.parts.insert(number, body);
        Ok(format!("etag-{number}"))
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
        cond: &WriteCondition,
    ) -> Result<(), SinkError> {
        self.maybe_fail("CompleteMultipartUpload", key)?;
        let mut st = self.lock();
        if !st.uploads.contains_key(upload_id) {
            return Err(Self::no_upload("CompleteMultipartUpload", key));
        }
        // Like S3: a failed condition leaves the upload in place (it can be completed or aborted).
        Self::check_condition(&st, "CompleteMultipartUpload", key, cond)?;
        let Upload {
            key: k,
            meta,
            parts: stored,
            ..
        } = st
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
        drop(st);
        self.answer_lost("CompleteMultipartUpload", key)
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), SinkError> {
        self.maybe_fail("AbortMultipartUpload", key)?;
        let mut st = self.lock();
        if st.uploads.remove(upload_id).is_some() {
            st.aborted += 1;
        }
        Ok(())
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectHead>, SinkError> {
        self.maybe_fail("HeadObject", key)?;
        Ok(self.lock().objects.get(key).map(|o| ObjectHead {
            etag: o.etag(),
            size: o.body.len() as u64,
            user: o.meta.user.clone(),
        }))
    }

    async fn get(&self, key: &str) -> Result<Option<ObjectBody>, SinkError> {
        let head = self.head(key).await?;
        let body = self.lock().objects.get(key).map(|o| o.body.clone());
        Ok(head.zip(body).map(|(head, body)| ObjectBody {
            head,
            body: Box::pin(std::io::Cursor::new(body)),
        }))
    }

    async fn copy(&self, from: &str, to: &str, meta: &ObjectMeta) -> Result<(), SinkError> {
        self.maybe_fail("CopyObject", to)?;
        let mut st = self.lock();
        let mut o = st.objects.get(from).cloned().ok_or_else(|| SinkError {
            op: "CopyObject",
            bucket: "memory".into(),
            key: from.into(),
            kind: ErrorKind::Other,
            message: "NoSuchKey".into(),
            answer: Default::default(),
        })?;
        o.meta.sse = meta.sse.clone();
        o.meta.kms_key_id = meta.kms_key_id.clone();
        o.meta.storage_class = meta.storage_class.clone();
        st.objects.insert(to.into(), o);
        Ok(())
    }

    async fn list(&self, prefix: &str, token: Option<String>) -> Result<ObjectPage, SinkError> {
        self.maybe_fail("ListObjectsV2", prefix)?;
        const PAGE: usize = 1000;
        let st = self.lock();
        let mut objects: Vec<ListedObject> = st
            .objects
            .range(token.unwrap_or_default()..)
            .filter(|(k, _)| k.starts_with(prefix))
            .take(PAGE + 1)
            .map(|(k, o)| ListedObject {
                key: k.clone(),
                size: o.body.len() as u64,
            })
            .collect();
        let next = (objects.len() > PAGE).then(|| objects.remove(PAGE).key);
        Ok(ObjectPage { objects, next })
    }

    async fn list_uploads(
        &self,
        prefix: &str,
        marker: Option<(String, String)>,
    ) -> Result<UploadPage, SinkError> {
        self.maybe_fail("ListMultipartUploads", prefix)?;
        let _ = marker; // one page holds every upload of this test store
        let st = self.lock();
        let uploads = st
            .uploads
            .iter()
            .filter(|(_, u)| u.key.starts_with(prefix))
            .map(|(id, u)| PendingUpload {
                key: u.key.clone(),
                upload_id: id.clone(),
                initiated: Some(u.initiated),
            })
            .collect();
        Ok(UploadPage {
            uploads,
            next: None,
        })
    }
}
