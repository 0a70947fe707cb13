//! S3 failures classified: the one place that decides which are retried (an [`ErrorKind`])
//! and says each on one line (the store's message and its status, code and request id in an
//! [`S3Answer`]); a request the credential chain stopped is named as such.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::sink::{ErrorKind, S3Answer};

/// Access to the HTTP status of an SDK raw response.
pub trait HttpStatus {
    /// Status code.
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_smithy_runtime_api::client::orchestrator::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// Classifies an SDK error: the one place that decides retryability of S3 failures. The
/// message is one line: the store's own message, or the cause of a failure to send (a missing
/// credential source is named as such, without the credential chain's story).
pub fn classify<E, R>(e: &SdkError<E, R>) -> (ErrorKind, String, S3Answer)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HttpStatus + 'static,
{
    match e {
        SdkError::TimeoutError(_) => (
            ErrorKind::Timeout,
            "request timed out".into(),
            S3Answer::default(),
        ),
        SdkError::DispatchFailure(d) => {
            if let Some(c) = credentials_error(e) {
                return credentials_failure(c);
            }
            let kind = if d.is_timeout() {
                ErrorKind::Timeout
            } else if d.is_io() {
                ErrorKind::Network
            } else {
                ErrorKind::Other
            };
            (
                kind,
                // With its causes: "io error" alone hides e.g. an untrusted certificate.
                one_line(&format!(
                    "dispatch failure: {}",
                    d.as_connector_error()
                        .map_or_else(|| "no connector error".to_string(), |c| causes(c))
                )),
                S3Answer::default(),
            )
        }
        SdkError::ResponseError(r) => {
            let status = r.raw().status_code();
            (
                status_kind(status, None),
                "unparseable response".into(),
                S3Answer {
                    status: Some(status),
                    ..S3Answer::default()
                },
            )
        }
        SdkError::ServiceError(s) => {
            let status = s.raw().status_code();
            let code = s.err().code();
            let answer = S3Answer {
                status: Some(status),
                code: code.map(str::to_string),
                request_id: s.err().meta().extra("aws_request_id").map(str::to_string),
                no_credentials: false,
            };
            (
                status_kind(status, code),
                one_line(s.err().message().unwrap_or("")),
                answer,
            )
        }
        other => match credentials_error(other) {
            Some(c) => credentials_failure(c),
            None => (
                ErrorKind::Other,
                one_line(&causes(other)),
                S3Answer::default(),
            ),
        },
    }
}

/// The credential provider's error behind a request that was never sent, if that is what
/// stopped it.
fn credentials_error<E, R>(
    e: &SdkError<E, R>,
) -> Option<&aws_credential_types::provider::error::CredentialsError>
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(c) =
            err.downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
        {
            return Some(c);
        }
        cur = err.source();
    }
    None
}

pub(super) fn credentials_failure(
    c: &aws_credential_types::provider::error::CredentialsError,
) -> (ErrorKind, String, S3Answer) {
    use aws_credential_types::provider::error::CredentialsError as C;
    let (missing, kind) = match c {
        C::CredentialsNotLoaded(_) => (true, ErrorKind::Other),
        C::ProviderTimedOut(_) => (false, ErrorKind::Timeout),
        _ => (false, ErrorKind::Other),
    };
    let message = if missing {
        "no AWS credentials found".to_string()
    } else {
        // The provider's own sentence, not the chain of every provider tried.
        one_line(&format!("credentials could not be loaded: {c}"))
    };
    (
        kind,
        message,
        S3Answer {
            no_credentials: missing,
            ..S3Answer::default()
        },
    )
}

/// An error and its causes, each said once, without the SDK's debug dump of the whole
/// chain (which `DisplayErrorContext` appends).
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let said = c.to_string();
        if !said.is_empty() && !out.contains(&said) {
            out.push_str(": ");
            out.push_str(&said);
        }
        cur = c.source();
    }
    out
}

/// `s` on one line, at most 400 characters (an SDK error's context can run to kilobytes).
fn one_line(s: &str) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match flat.char_indices().nth(400) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat,
    }
}

pub(super) fn status_kind(status: u16, code: Option<&str>) -> ErrorKind {
    match (status, code) {
        (_, Some("SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded")) => {
            ErrorKind::Throttle
        }
        (429 | 503, _) => ErrorKind::Throttle,
        (408, _) | (_, Some("RequestTimeout")) => ErrorKind::Timeout,
        (500..=599, _) => ErrorKind::Server,
        (_, Some("NoSuchUpload" | "InvalidPart" | "InvalidPartOrder" | "EntityTooSmall")) => {
            ErrorKind::Permanent
        }
        (412 | 409, _) | (_, Some("PreconditionFailed" | "ConditionalRequestConflict")) => {
            ErrorKind::Conflict
        }
        (
            _,
            Some(
                "KeyTooLongError"
                | "KeyTooLong"
                | "InvalidArgument"
                | "InvalidRequest"
                | "EntityTooLarge"
                | "MetadataTooLarge"
                | "InvalidStorageClass"
                | "InvalidEncryptionAlgorithmError"
                | "InvalidBucketName"
                | "InvalidObjectName",
            ),
        ) => ErrorKind::Invalid,
        _ => ErrorKind::Other,
    }
}
