//! `put-baseline`: the floor of an object's cost. Every file under a directory (the objects a
//! connector run left in the s3s-fs server's bucket folder) is loaded in memory, then sent with
//! a bare aws-sdk-s3 `PutObject` to an S3 endpoint under another prefix, at most `concurrency`
//! requests in flight. The client is built as the connector builds its own (region, static
//! keys, path style, SDK retries off, the same payload-signing rule) and each request carries
//! what the connector's carries by default (`Content-Type`, `If-None-Match: *`). Reports the
//! process's CPU seconds (user + system) spent sending, and CPU per object.
//!
//! Invariant: only the sending is measured; reading the files happens before the first sample.

use anyhow::Context;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::measure;

/// Where the bodies come from and where they go.
#[derive(Debug, Clone, clap::Args)]
pub struct BaselineArgs {
    /// Folder whose files are the bodies (walked recursively; names starting with '.' skipped).
    #[arg(long)]
    pub dir: PathBuf,
    /// S3 endpoint (http://127.0.0.1:PORT).
    #[arg(long)]
    pub endpoint: String,
    /// Bucket.
    #[arg(long)]
    pub bucket: String,
    /// Key prefix the copies are written under.
    #[arg(long, default_value = "baseline/")]
    pub prefix: String,
    /// Requests in flight at once (the connector's `[upload] concurrency`, default 8).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Region.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Access key id.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", default_value = "local-access-key")]
    pub access_key: String,
    /// Secret access key (its environment value is never shown in help).
    #[arg(
        long,
        env = "AWS_SECRET_ACCESS_KEY",
        hide_env_values = true,
        default_value = "local-secret-key"
    )]
    pub secret_key: String,
    /// Content-Type sent (the connector's default `content_type`).
    #[arg(long, default_value = "application/x-ndjson")]
    pub content_type: String,
}

/// Every file under `dir` (sorted, hidden names skipped), as key relative to `dir` and body.
fn load(dir: &Path) -> anyhow::Result<Vec<(String, Bytes)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            let hidden = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if hidden {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                let key = path
                    .strip_prefix(dir)
                    .expect("invariant: walked paths start with the root")
                    .to_string_lossy()
                    .into_owned();
                out.push((key, Bytes::from(std::fs::read(&path)?)));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Sends every body once; JSON report.
pub async fn run(a: BaselineArgs) -> anyhow::Result<serde_json::Value> {
    let bodies = load(&a.dir)?;
    anyhow::ensure!(!bodies.is_empty(), "no files under {}", a.dir.display());
    let bytes: u64 = bodies.iter().map(|(_, b)| b.len() as u64).sum();
    // Built as `S3Sink::connect` builds the connector's client.
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(a.region.clone()))
        .retry_config(aws_smithy_types::retry::RetryConfig::disabled())
        .timeout_config(
            aws_smithy_types::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .operation_attempt_timeout(Duration::from_secs(60))
                .build(),
        )
        .credentials_provider(aws_credential_types::Credentials::new(
            a.access_key.clone(),
            a.secret_key.clone(),
            None,
            None,
            "put-baseline",
        ))
        .load()
        .await;
    let conf = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(true)
        .endpoint_url(a.endpoint.clone())
        .build();
    let client = aws_sdk_s3::Client::from_conf(conf);
    // The connector's `payload_signing = "auto"`: signed bodies over http, unsigned over https.
    let sign_payload = !a.endpoint.starts_with("https://");
    let objects = bodies.len();
    let (cpu0, t0) = (measure::process_cpu_secs(), Instant::now());
    futures::stream::iter(bodies)
        .map(|(key, body)| {
            let req = client
                .put_object()
                .bucket(&a.bucket)
                .key(format!("{}{key}", a.prefix))
                .content_type(&a.content_type)
                .if_none_match("*")
                .body(ByteStream::from(body));
            async move {
                if sign_payload {
                    req.send().await
                } else {
                    req.customize().disable_payload_signing().send().await
                }
                .map(|_| ())
                .with_context(|| format!("PutObject {key}"))
            }
        })
        .buffer_unordered(a.concurrency.max(1))
        .try_collect::<()>()
        .await?;
    let cpu = measure::process_cpu_secs() - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    Ok(serde_json::json!({
        "mode": "put-baseline",
        "objects": objects,
        "bytes": bytes,
        "concurrency": a.concurrency,
        "payload_signed": sign_payload,
        "cpu_secs": measure::round3(cpu),
        "cpu_us_per_object": measure::round3(cpu / objects as f64 * 1e6),
        "wall_secs": measure::round3(wall),
    }))
}
