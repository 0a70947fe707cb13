//! ListMultipartUploads for the local S3 server, which s3s-fs 0.14 does not implement: the
//! uploads in progress are read from s3s-fs's own files in the root folder (see the layout in
//! the parent module), so the connector's start-up cleanup of abandoned uploads runs against
//! the real SDK call in tests and in the demo.
//!
//! Invariant: read-only; one page holding every upload of the bucket under the prefix, in key
//! then upload-id order, each dated by the mtime of its `.upload-<uuid>.json` marker.

use base64::Engine;
use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Response;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::faults::xml_escape;

/// One upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Upload {
    /// Key.
    pub key: String,
    /// Upload id.
    pub upload_id: String,
    /// When it was created (mtime of its marker file).
    pub initiated: SystemTime,
}

/// Whether a request is ListMultipartUploads (`GET /bucket?uploads`), and its bucket.
pub fn bucket_of(method: &str, path: &str, query: &str) -> Option<String> {
    let lists = method == "GET" && query.split('&').any(|p| p == "uploads" || p == "uploads=");
    let bucket = path.trim_matches('/');
    (lists && !bucket.is_empty() && !bucket.contains('/')).then(|| bucket.to_string())
}

fn query_param(query: &str, name: &str) -> String {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default()
}

/// The uploads in progress of `bucket` under `prefix`.
pub fn list(root: &Path, bucket: &str, prefix: &str) -> std::io::Result<Vec<Upload>> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let want = format!(".bucket-{}.object-", b64.encode(bucket));
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name
            .strip_prefix(&want)
            .and_then(|r| r.strip_suffix(".metadata.json"))
        else {
            continue;
        };
        let Some((key_b64, upload_id)) = rest.split_once(".upload-") else {
            continue;
        };
        let Some(key) = b64
            .decode(key_b64)
            .ok()
            .and_then(|k| String::from_utf8(k).ok())
        else {
            continue;
        };
        let marker = root.join(format!(".upload-{upload_id}.json"));
        let Ok(initiated) = std::fs::metadata(&marker).and_then(|m| m.modified()) else {
            continue; // completed or aborted
        };
        if key.starts_with(prefix) {
            out.push(Upload {
                key,
                upload_id: upload_id.to_string(),
                initiated,
            });
        }
    }
    out.sort();
    Ok(out)
}

/// Makes every upload in progress look `age` older (tests of the orphan cleanup).
pub fn backdate(root: &Path, age: Duration) -> std::io::Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(".upload-") && name.ends_with(".json") {
            let f = std::fs::File::options().write(true).open(entry.path())?;
            let t = f.metadata()?.modified()?;
            f.set_modified(t - age)?;
            n += 1;
        }
    }
    Ok(n)
}

/// The ListMultipartUploadsResult answer.
pub fn response(root: &Path, bucket: &str, query: &str) -> Response<s3s::Body> {
    let prefix = query_param(query, "prefix");
    let (status, xml) = match list(root, bucket, &prefix) {
        Ok(uploads) => {
            let mut xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListMultipartUploadsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <Bucket>{}</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker><Prefix>{}</Prefix>\
                 <MaxUploads>1000</MaxUploads><IsTruncated>false</IsTruncated>",
                xml_escape(bucket),
                xml_escape(&prefix)
            );
            for u in uploads {
                let t = chrono::DateTime::<chrono::Utc>::from(u.initiated);
                xml.push_str(&format!(
                    "<Upload><Key>{}</Key><UploadId>{}</UploadId><Initiated>{}</Initiated><StorageClass>STANDARD</StorageClass></Upload>",
                    xml_escape(&u.key),
                    xml_escape(&u.upload_id),
                    t.format("%Y-%m-%dT%H:%M:%S%.3fZ")
                ));
            }
            xml.push_str("</ListMultipartUploadsResult>");
            (200, xml)
        }
        Err(e) => (
            500,
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>{}</Message></Error>",
                xml_escape(&e.to_string())
            ),
        ),
    };
    let mut resp = Response::new(s3s::Body::from(Bytes::from(xml)));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_request_and_decodes_the_prefix() {
        assert_eq!(bucket_of("GET", "/b", "uploads"), Some("b".into()));
        assert_eq!(
            bucket_of("GET", "/b/", "uploads=&prefix=x"),
            Some("b".into())
        );
        assert_eq!(bucket_of("GET", "/b/k", "uploads"), None);
        assert_eq!(bucket_of("POST", "/b/k", "uploads"), None);
        assert_eq!(bucket_of("GET", "/b", "list-type=2"), None);
        assert_eq!(
            query_param("uploads&prefix=logs%2Fa%2Bb", "prefix"),
            "logs/a+b"
        );
    }
}
