//! S3 for the scenario tests: the in-process S3 server over a temp dir, and readers of the
//! objects it stored (decompressed, split into lines).

use std::path::{Path, PathBuf};

use kafka_s3_sink::s3server::{LocalS3, LocalS3Options};

use super::BUCKET;

/// The in-process S3 server over a temp dir, with [`BUCKET`] created.
pub struct TestS3 {
    /// The server (faults, request log, endpoint).
    pub server: LocalS3,
    dir: tempfile::TempDir,
}

impl TestS3 {
    /// Starts the server on `127.0.0.1:0` over a fresh temp dir and creates [`BUCKET`].
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = LocalS3::start(LocalS3Options::new(dir.path().join("s3")))
            .await
            .expect("local S3 server");
        server.create_bucket_dir(BUCKET).expect("bucket");
        Self { server, dir }
    }

    /// Endpoint URL for the config.
    pub fn endpoint(&self) -> String {
        self.server.endpoint()
    }

    /// Root folder of the server (buckets are its sub-folders; upload state lives here).
    pub fn root(&self) -> &Path {
        self.server.root()
    }

    /// Folder of `bucket`.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root().join(bucket)
    }

    /// Every object of `bucket`, read from disk, sorted by key.
    pub fn objects(&self, bucket: &str) -> Vec<StoredObject> {
        read_objects(&self.bucket_dir(bucket))
    }

    /// Keys of `bucket`, sorted.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        list_keys(&self.bucket_dir(bucket))
    }

    /// Whether `bucket` holds `key` (on disk, so only complete objects count).
    pub fn exists(&self, bucket: &str, key: &str) -> bool {
        self.server.object_path(bucket, key).is_file()
    }

    /// Names of multipart leftovers in the root (`.upload-*`, `.upload_id-*`).
    pub fn upload_leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.root())
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(".upload"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops the server (the files stay until the value is dropped).
    pub async fn stop(self) -> tempfile::TempDir {
        self.server.shutdown().await;
        self.dir
    }
}

/// One object as stored.
#[derive(Debug, Clone)]
pub struct StoredObject {
    /// Key.
    pub key: String,
    /// Stored bytes.
    pub data: Vec<u8>,
}

impl StoredObject {
    /// The content: gunzipped (every member, [`flate2::read::MultiGzDecoder`]) when the key
    /// ends in `.gz`, else the stored bytes. Panics if a `.gz` object is not valid gzip.
    pub fn content(&self) -> Vec<u8> {
        if self.key.ends_with(".gz") {
            gunzip(&self.data).unwrap_or_else(|e| panic!("{}: not gzip: {e}", self.key))
        } else if self.key.ends_with(".zst") {
            zstd::stream::decode_all(&self.data[..])
                .unwrap_or_else(|e| panic!("{}: not zstd: {e}", self.key))
        } else {
            self.data.clone()
        }
    }

    /// NDJSON lines of the content (without newlines). Panics if the content does not end in a
    /// newline (a torn last line).
    pub fn lines(&self) -> Vec<Vec<u8>> {
        let content = self.content();
        split_lines(&content).unwrap_or_else(|| panic!("{}: last line has no newline", self.key))
    }

    /// Folder part of the key (up to and including the last `/`).
    pub fn folder(&self) -> &str {
        self.key.rsplit_once('/').map_or("", |(f, _)| f)
    }
}

/// Decompresses a (possibly multi-member) gzip stream.
pub fn gunzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data).read_to_end(&mut out)?;
    Ok(out)
}

/// Lines of NDJSON content; `None` if non-empty content does not end with `\n`.
pub fn split_lines(content: &[u8]) -> Option<Vec<Vec<u8>>> {
    if content.is_empty() {
        return Some(Vec::new());
    }
    let body = content.strip_suffix(b"\n")?;
    Some(body.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect())
}

/// Keys under a bucket folder, sorted (`/`-separated, relative to the folder).
pub fn list_keys(bucket_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![bucket_dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in rd.filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(bucket_dir) {
                let key: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(key.join("/"));
            }
        }
    }
    out.sort();
    out
}

/// Every object under a bucket folder, sorted by key.
pub fn read_objects(bucket_dir: &Path) -> Vec<StoredObject> {
    list_keys(bucket_dir)
        .into_iter()
        .filter_map(|key| {
            // A file can vanish between listing and reading only if something deletes it; skip.
            let data = std::fs::read(bucket_dir.join(&key)).ok()?;
            Some(StoredObject { key, data })
        })
        .collect()
}
