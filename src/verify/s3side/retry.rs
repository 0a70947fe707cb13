//! One S3 request of `verify`, retried: each attempt under `request_timeout`, at most
//! `attempts` of them, 200 ms then ×4 between; an error the sink classes as not retryable ends
//! it at once.

use super::S3Options;
use crate::sink::SinkError;
use crate::verify::VerifyError;
use std::time::Duration;

/// Runs `f` until it succeeds, fails for good or runs out of attempts.
pub(super) async fn retry<T, F, Fut>(
    opts: &S3Options,
    op: &'static str,
    key: &str,
    f: F,
) -> Result<T, VerifyError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, SinkError>>,
{
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        let err = match tokio::time::timeout(opts.request_timeout, f()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if !e.kind.retryable() => return Err(VerifyError::S3(e)),
            Ok(Err(e)) => VerifyError::S3(e),
            Err(_) => VerifyError::S3Timeout {
                op,
                key: key.to_string(),
                secs: opts.request_timeout.as_secs(),
            },
        };
        if attempt >= opts.attempts {
            return Err(err);
        }
        tracing::debug!(error = %err, attempt, "S3 request failed; retrying");
        tokio::time::sleep(delay).await;
        delay *= 4;
        attempt += 1;
    }
}
