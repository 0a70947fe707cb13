//! Start-up cleanup of abandoned multipart uploads: a worker killed mid-upload (kill -9, OOM,
//! node loss) cannot abort its upload, and S3 keeps — and bills — the parts until someone does.
//!
//! Invariants: only uploads at keys this destination's templates can produce are considered
//! (its prefix, then a folder and file name of its templates, or its error folder: see
//! [`key_pattern`]), never another application's upload in the same bucket or under the same
//! prefix; and only those older than the configured age, which validation keeps above the
//! longest a live upload can last (max age + request timeout), so replicas never abort each
//! other's live uploads. Failures are logged, never fatal: lifecycle rules remain the backstop.

use regex::Regex;
use std::time::{Duration, SystemTime};

use crate::config::DestinationConfig;
use crate::metrics::Metrics;
use crate::sink::{ObjectSink, SinkError};
use crate::template::{FileTemplate, ERROR_FILE_TEMPLATE};

/// A regex every key the destination writes matches, data and quarantine keys alike, and keys
/// of other writers in general do not: the prefix, then the folder template's shape (dates as
/// digits, placeholders as their values) and the file template's, or the error folder, a reason
/// and the quarantine file name; the compression suffix optional as `render` appends it.
pub fn key_pattern(d: &DestinationConfig) -> Regex {
    let shape = d.key_shape();
    let suffix = d.batch.compression.suffix();
    let prefix = regex::escape(&d.prefix);
    let data = format!(
        "{}{}",
        d.routing.folder.regex(&shape),
        d.routing.file.regex(&shape, d.data_suffix())
    );
    let error_file = FileTemplate::parse(ERROR_FILE_TEMPLATE)
        .expect("invariant: the built-in error file template parses");
    let error = format!(
        "{}[a-z_]+/{}",
        regex::escape(&d.error_prefix),
        error_file.regex(&shape, suffix)
    );
    Regex::new(&format!("^{prefix}(?:{data}|{error})$"))
        .expect("invariant: the pattern is built from escaped literals and fixed classes")
}

/// Pages of ListMultipartUploads read at most (1,000 uploads each).
const MAX_PAGES: usize = 100;

/// What one cleanup did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrphanReport {
    /// Uploads in progress under the prefix.
    pub seen: usize,
    /// Aborted (older than the age).
    pub aborted: usize,
}

/// Aborts the multipart uploads under `d`'s prefix started more than `min_age` ago.
pub async fn abort_orphans(
    d: &DestinationConfig,
    sink: &dyn ObjectSink,
    min_age: Duration,
    metrics: &Metrics,
) -> Result<OrphanReport, SinkError> {
    let now = SystemTime::now();
    let pattern = key_pattern(d);
    let ours = |key: &str| pattern.is_match(key);
    let mut report = OrphanReport::default();
    let mut marker = None;
    for _ in 0..MAX_PAGES {
        let page = sink.list_uploads(&d.prefix, marker).await?;
        for u in page.uploads.iter().filter(|u| ours(&u.key)) {
            report.seen += 1;
            let age = u
                .initiated
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or_default();
            if age < min_age {
                continue;
            }
            match sink.abort_multipart(&u.key, &u.upload_id).await {
                Ok(()) => {
                    report.aborted += 1;
                    metrics.orphans_aborted(&d.name, 1);
                    tracing::info!(destination = %d.name, key = %u.key, age_secs = age.as_secs(), "aborted an abandoned multipart upload");
                }
                Err(e) => {
                    tracing::warn!(destination = %d.name, error = %e, "could not abort an abandoned multipart upload")
                }
            }
        }
        marker = page.next;
        if marker.is_none() {
            break;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::memory::MemorySink;

    fn dest(prefix: &str) -> DestinationConfig {
        crate::config::test_destination(&format!("prefix = \"{prefix}\"\n"))
    }

    const KEY: &str = "2024/01/02/03/t+0+00000000000000000001.ndjson.gz";

    #[tokio::test]
    async fn aborts_only_old_uploads_under_the_prefix() {
        let sink = MemorySink::new();
        let hour = Duration::from_secs(3600);
        sink.insert_upload(&format!("logs/{KEY}"), 7 * hour);
        sink.insert_upload(
            "logs/_errors/not_json/t+0+00000000000000000002.ndjson.gz",
            7 * hour,
        );
        sink.insert_upload(
            "logs/2024/01/02/03/t+0+00000000000000000003.ndjson.gz",
            Duration::from_secs(60),
        );
        sink.insert_upload("other-app/x.ndjson.gz", 7 * hour);
        let r = abort_orphans(&dest("logs"), &sink, 6 * hour, &Metrics::unregistered())
            .await
            .unwrap();
        assert_eq!(
            r,
            OrphanReport {
                seen: 3,
                aborted: 2
            }
        );
        assert_eq!(
            sink.open_uploads(),
            2,
            "the young one and the other app's stay"
        );
    }

    /// Under an empty prefix (a bucket shared with others) only keys of this destination's
    /// shape are touched: another application's upload, even one ending in `.ndjson.gz` or
    /// under a date folder, stays.
    #[tokio::test]
    async fn an_empty_prefix_only_touches_keys_our_templates_produce() {
        let sink = MemorySink::new();
        let day = Duration::from_secs(86_400);
        sink.insert_upload(KEY, day);
        sink.insert_upload("backups/db.tar", day);
        sink.insert_upload("exports/2024/01/02/03/report.ndjson.gz", day);
        sink.insert_upload("2024/01/02/03/other+0+1.ndjson.gz", day);
        sink.insert_upload("2024/01/02/03/t+0+00000000000000000001.parquet", day);
        let r = abort_orphans(
            &dest(""),
            &sink,
            Duration::from_secs(3600),
            &Metrics::unregistered(),
        )
        .await
        .unwrap();
        assert_eq!(
            r,
            OrphanReport {
                seen: 1,
                aborted: 1
            }
        );
        assert_eq!(
            sink.open_uploads(),
            4,
            "the other applications' uploads stay"
        );
    }
}
