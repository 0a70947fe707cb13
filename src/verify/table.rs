//! The S3 side of `verify` for an Iceberg destination: the rows are those of the data files of
//! the table's current snapshot, not every object under its location (a refused or crashed
//! commit leaves files no snapshot references), read from the table's bucket, with the error
//! folder in the destination's.

use std::sync::Arc;

use super::VerifyError;
use crate::config::{Config, DestinationConfig};
use crate::sink::s3::S3Sink;
use crate::sink::ObjectSink;

/// The keys of the current snapshot's data files, and the store to read them and the error
/// folder from (`sink`, or the table's bucket for the data files when it is another one).
pub(super) async fn data_files(
    config: &Config,
    d: &DestinationConfig,
    sink: Arc<dyn ObjectSink>,
) -> Result<(Vec<String>, Arc<dyn ObjectSink>), VerifyError> {
    let mut meta = crate::app::object_meta(d);
    meta.content_type = "application/octet-stream".into();
    let timeout = config.upload.request_timeout;
    let (bucket, keys) = crate::table::open::current_data_keys(d, sink.clone(), meta, timeout)
        .await
        .map_err(|e| VerifyError::Task(e.to_string()))?;
    tracing::info!(data_files = keys.len(), %bucket, "the table's current snapshot");
    if bucket == d.bucket {
        return Ok((keys, sink));
    }
    let other = DestinationConfig {
        bucket,
        ..d.clone()
    };
    let data: Arc<dyn ObjectSink> = Arc::new(S3Sink::connect(&other, timeout).await);
    let errors = format!("{}{}", d.prefix, d.error_prefix);
    let routed = match crate::sink::routed::Routed::new(&errors, sink.clone(), data) {
        Some(r) => Arc::new(r) as Arc<dyn ObjectSink>,
        None => sink,
    };
    Ok((keys, routed))
}
