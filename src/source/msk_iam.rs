//! AWS MSK IAM authentication: the SASL/OAUTHBEARER token MSK accepts, built as the published
//! `aws-msk-iam-sasl-signer` libraries build it: a SigV4 query-presigned
//! `GET https://kafka.<region>.amazonaws.com/?Action=kafka-cluster%3AConnect` (service
//! `kafka-cluster`, valid 900 s), a `User-Agent` parameter appended, the URL base64url-encoded
//! without padding.
//!
//! Credentials come from the AWS default chain (IRSA web identity, profiles, container and
//! instance metadata), or from a role assumed with it. librdkafka asks for a token when it
//! connects and again at 80 % of the token's lifetime; the request arrives on whichever thread
//! polls the client, so [`MskIamAuth::token`] blocks that thread (bounded) on a runtime of its
//! own. Invariants: the token's lifetime never exceeds the credentials' own expiry; no
//! credential or token is ever logged.

use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::BehaviorVersion;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;
use base64::Engine;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rdkafka::client::OAuthToken;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::ClientContext;

use crate::config::MskIamConfig;

/// How long a token is valid, as the published signers make it.
const TOKEN_LIFETIME: Duration = Duration::from_secs(900);
/// How long one token request may wait for credentials (an STS or metadata call).
const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything but RFC 3986's unreserved characters is percent-encoded, as SigV4 encodes.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn encode(v: &str) -> String {
    utf8_percent_encode(v, QUERY_VALUE).to_string()
}

/// The token for `region` signed with `credentials` at `now`, and when it expires (ms since
/// the Unix epoch).
pub fn sign_token(
    region: &str,
    credentials: &Credentials,
    now: SystemTime,
) -> Result<(String, i64), String> {
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_LIFETIME);
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("kafka-cluster")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| format!("signing parameters: {e}"))?;
    let mut url = format!("https://kafka.{region}.amazonaws.com/?Action=kafka-cluster%3AConnect");
    let request = SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| format!("request to sign: {e}"))?;
    let (instructions, _) = sign(request, &params.into())
        .map_err(|e| format!("signing: {e}"))?
        .into_parts();
    for (name, value) in instructions.params() {
        url.push('&');
        url.push_str(name);
        url.push('=');
        url.push_str(&encode(value));
    }
    url.push_str("&User-Agent=");
    url.push_str(&encode(concat!(
        "kafka-s3-sink/",
        env!("CARGO_PKG_VERSION")
    )));
    let signed_at = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "the clock is before 1970".to_string())?
        .as_secs();
    // SigV4 dates have whole seconds; the token expires 900 s after the signing second.
    let expires_ms = (signed_at + TOKEN_LIFETIME.as_secs()) as i64 * 1000;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url.as_bytes());
    Ok((token, expires_ms))
}

/// Builds MSK IAM tokens for one client. Owns a small runtime for the credential providers
/// (their HTTP clients live on it), shut down without blocking when dropped.
pub struct MskIamAuth {
    region: String,
    provider: SharedCredentialsProvider,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for MskIamAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MskIamAuth")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// Runs `fut` to completion on `rt` from any thread, inside an async context or not (a
/// runtime cannot be entered from a thread already running one, so it runs on a scoped
/// thread).
fn run_on<T: Send>(
    rt: &tokio::runtime::Runtime,
    fut: impl std::future::Future<Output = T> + Send,
) -> T {
    std::thread::scope(|s| {
        s.spawn(|| rt.block_on(fut))
            .join()
            .expect("the MSK IAM credential thread panicked")
    })
}

impl MskIamAuth {
    /// Sets up the credential chain (credentials are fetched on the first token request).
    pub fn new(cfg: &MskIamConfig) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("msk-iam")
            .build()?;
        let region = aws_config::Region::new(cfg.region.clone());
        let provider = run_on(&runtime, async {
            let base = aws_config::defaults(BehaviorVersion::latest())
                .region(region.clone())
                .load()
                .await;
            match &cfg.role_arn {
                Some(role) => SharedCredentialsProvider::new(
                    aws_config::sts::AssumeRoleProvider::builder(role.clone())
                        .session_name(cfg.session_name.clone())
                        .configure(&base)
                        .build()
                        .await,
                ),
                None => base
                    .credentials_provider()
                    .unwrap_or_else(|| SharedCredentialsProvider::new(NoCredentials)),
            }
        });
        Ok(Self {
            region: cfg.region.clone(),
            provider,
            runtime: Some(runtime),
        })
    }

    /// A fresh token, its lifetime capped at the credentials' expiry.
    pub fn token(&self) -> Result<OAuthToken, Box<dyn Error>> {
        let rt = self
            .runtime
            .as_ref()
            .ok_or("MSK IAM runtime is shut down")?;
        let provider = self.provider.clone();
        let credentials = run_on(rt, async move {
            tokio::time::timeout(CREDENTIALS_TIMEOUT, provider.provide_credentials()).await
        })
        .map_err(|_| {
            format!(
                "AWS credentials for MSK IAM: no answer in {} s",
                CREDENTIALS_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| {
            format!(
                "AWS credentials for MSK IAM: {}; give the pod an IAM role (IRSA or EKS Pod Identity), a profile or AWS_* variables",
                aws_smithy_types::error::display::DisplayErrorContext(&e)
            )
        })?;
        let (token, mut expires_ms) = sign_token(&self.region, &credentials, SystemTime::now())?;
        if let Some(exp) = credentials.expiry() {
            if let Ok(d) = exp.duration_since(UNIX_EPOCH) {
                expires_ms = expires_ms.min(d.as_millis() as i64);
            }
        }
        // Once per token (every ~12 minutes), so refreshes show in the log.
        tracing::info!(region = %self.region, expires_ms, "MSK IAM token built");
        Ok(OAuthToken {
            token,
            principal_name: String::new(),
            lifetime_ms: expires_ms,
        })
    }
}

impl Drop for MskIamAuth {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// librdkafka's OAUTHBEARER token request: an MSK IAM token when configured. Without one
/// (OAUTHBEARER set up through `[kafka.properties]`, e.g. OIDC) librdkafka's own handler
/// answers and this is never asked.
pub fn oauth_token(auth: Option<&MskIamAuth>) -> Result<OAuthToken, Box<dyn Error>> {
    match auth {
        Some(a) => a.token(),
        None => Err("no OAUTHBEARER token source: set kafka.security.sasl_mechanism = \"AWS_MSK_IAM\" or librdkafka's sasl.oauthbearer.method".into()),
    }
}

/// The context of a plain consumer (`verify`'s reader): OAUTHBEARER tokens and nothing else.
pub struct AuthContext {
    auth: Option<MskIamAuth>,
    /// Token requests answered so far (built or failed).
    requests: AtomicU64,
}

impl AuthContext {
    /// A context answering token requests with `auth`.
    pub fn new(auth: Option<MskIamAuth>) -> Self {
        Self {
            auth,
            requests: AtomicU64::new(0),
        }
    }

    /// Serves `consumer`'s events until its first token request is answered (librdkafka asks
    /// through the consumer's queue, which a metadata request alone does not serve, so a
    /// client that has not polled yet would wait for its token until the request times out).
    /// Returns at once without MSK IAM; waits at most `wait`.
    pub fn first_token(consumer: &BaseConsumer<Self>, wait: Duration) {
        if consumer.context().auth.is_none() {
            return;
        }
        let deadline = std::time::Instant::now() + wait;
        while consumer.context().requests.load(Ordering::Relaxed) == 0
            && std::time::Instant::now() < deadline
        {
            // Nothing is assigned yet: no message can come; errors show in the request after.
            let _ = consumer.poll(Duration::from_millis(50));
        }
    }
}

impl ClientContext for AuthContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(&self, _config: Option<&str>) -> Result<OAuthToken, Box<dyn Error>> {
        let token = oauth_token(self.auth.as_ref());
        self.requests.fetch_add(1, Ordering::Relaxed);
        token
    }

    /// As librdkafka's default, except that reaching a partition's end is not an error for a
    /// reader (it waits there for records up to its range's end, see `reader`).
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF) {
            tracing::debug!(target: "rdkafka::client", "librdkafka: {error}: {reason}");
        } else {
            tracing::error!(target: "rdkafka::client", "librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for AuthContext {}

/// The chain found nothing to build: every token request says so.
#[derive(Debug)]
struct NoCredentials;

impl ProvideCredentials for NoCredentials {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::ready(Err(
            aws_credential_types::provider::error::CredentialsError::not_loaded(
                "no AWS credential source is configured",
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by the published Python signer (`aws-msk-iam-sasl-signer-python` 1.0.2,
    /// `generate_auth_token_from_credentials_provider("us-west-2", …)` with botocore's clock at
    /// 2026-12-02T17:00:00Z and these credentials): every parameter but `User-Agent` must be
    /// the same. `tests/e2e/msk_iam.sh` compares with the live signer too.
    #[test]
    fn token_matches_the_published_signer() {
        let creds = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("session-token-example".into()),
            None,
            "test",
        );
        let at = UNIX_EPOCH + Duration::from_secs(1_796_230_800); // 2026-12-02T17:00:00Z
        let (token, expires_ms) = sign_token("us-west-2", &creds, at).unwrap();
        assert_eq!(expires_ms, 1_796_231_700_000);
        assert!(!token.contains('=') && !token.contains('+') && !token.contains('/'));
        let url = String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&token)
                .unwrap(),
        )
        .unwrap();
        let python = "https://kafka.us-west-2.amazonaws.com/?Action=kafka-cluster%3AConnect\
            &X-Amz-Algorithm=AWS4-HMAC-SHA256\
            &X-Amz-Credential=AKIDEXAMPLE%2F20261202%2Fus-west-2%2Fkafka-cluster%2Faws4_request\
            &X-Amz-Date=20261202T170000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host\
            &X-Amz-Security-Token=session-token-example\
            &X-Amz-Signature=baa2d386985c78388817e862923d056b26b0807cc0c985896c08dc5f5a3c552b\
            &User-Agent=aws-msk-iam-sasl-signer-python%2F1.0.2";
        let params = |u: &str| {
            let (base, query) = u.split_once('?').unwrap();
            let mut p: Vec<String> = query
                .split('&')
                .filter(|kv| !kv.starts_with("User-Agent="))
                .map(str::to_string)
                .collect();
            p.sort();
            (base.to_string(), p)
        };
        assert_eq!(params(&url), params(python));
        assert!(url.ends_with(&format!(
            "&User-Agent=kafka-s3-sink%2F{}",
            env!("CARGO_PKG_VERSION")
        )));
    }

    #[test]
    fn token_lifetime_is_capped_by_the_credentials() {
        let soon = SystemTime::now() + Duration::from_secs(120);
        let creds = Credentials::new("AKID", "secret", None, Some(soon), "test");
        let auth = MskIamAuth {
            region: "eu-west-1".into(),
            provider: SharedCredentialsProvider::new(creds),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok(),
        };
        let t = auth.token().unwrap();
        let soon_ms = soon.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        assert_eq!(t.lifetime_ms, soon_ms);
        assert!(!format!("{auth:?}").contains("secret"));
    }
}
