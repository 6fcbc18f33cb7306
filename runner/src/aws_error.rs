//! One reading of AWS SDK errors for people. Every place that calls AWS (ECR, ECS, SNS,
//! Secrets Manager, Parameter Store, DynamoDB) renders its failures through [`AwsFailure`], so
//! missing or expired credentials, refusals, unreachable endpoints and throttling read the
//! same everywhere: one line, saying what to do, never the SDK's debug dump.

use std::fmt;

use aws_credential_types::provider::error::CredentialsError;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::error_chain::error_chain;

/// What kind of failure an AWS call met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsFailureKind {
    /// No credentials anywhere the SDK looks (environment, profile, container or instance role).
    NoCredentials,
    /// The credentials have expired (found so by the SDK or refused so by AWS).
    ExpiredCredentials,
    /// Credentials are configured but could not be loaded: a broken profile, a failing
    /// `credential_process`, an SSO session that cannot be read.
    CredentialsUnloadable,
    /// AWS did not accept the credentials (an unknown key, a bad signature).
    CredentialsRejected,
    /// The credentials were accepted but may not do this.
    AccessDenied,
    /// No answer: connection refused, a name that does not resolve, a timeout.
    Unreachable,
    /// AWS asked to slow down.
    Throttled,
    /// AWS answered with an error about the request or the resource.
    Service,
    /// The request could not even be built (no region, an invalid parameter).
    Request,
}

/// An AWS SDK error read for people: its kind, the service's error code when it answered, and
/// one line to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsFailure {
    pub kind: AwsFailureKind,
    pub code: Option<String>,
    message: String,
}

/// Codes that mean the credentials have expired.
const EXPIRED_CODES: &[&str] = &[
    "ExpiredToken",
    "ExpiredTokenException",
    "TokenRefreshRequired",
];

/// Codes that mean AWS did not accept the credentials at all.
const REJECTED_CODES: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "MissingAuthenticationTokenException",
    "AuthFailure",
];

/// Codes that mean the identity may not perform the action.
const DENIED_CODES: &[&str] = &[
    "AccessDeniedException",
    "AccessDenied",
    "UnauthorizedOperation",
    "AuthorizationError",
];

/// Error codes AWS services use for "slow down". ECS does not model ThrottlingException as an
/// error type, so the code is what has to be matched, never the Rust variant.
pub const THROTTLING_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "ProvisionedThroughputExceededException",
    "SlowDown",
];

/// What to do when no credentials are found.
pub const NO_CREDENTIALS: &str = "no AWS credentials found: set AWS_PROFILE, or \
     AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where a role provides them (an EC2 \
     instance profile, an ECS task role, GitHub OIDC through aws-actions/configure-aws-credentials)";

/// What to do when the credentials have expired.
const EXPIRED: &str = "the AWS credentials have expired: get fresh ones (for example `aws sso \
     login`, or a new session token) and run again";

impl AwsFailure {
    /// Reads an SDK error.
    pub fn of<E, R>(error: &SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug + 'static,
    {
        if let Some(failure) = Self::from_credentials(error) {
            return failure;
        }
        match error {
            SdkError::ServiceError(service) => {
                let inner = service.err();
                Self::from_code(inner.code(), inner.message())
            }
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => AwsFailure {
                kind: AwsFailureKind::Unreachable,
                code: None,
                message: format!("no usable answer from AWS: {}", one_line(error)),
            },
            _ => AwsFailure {
                kind: AwsFailureKind::Request,
                code: None,
                message: one_line(error),
            },
        }
    }

    /// Reads an SDK error of the call named `call` (`ECR GetAuthorizationToken`): a timeout
    /// names the call and its limit, anything else reads as [`AwsFailure::of`].
    pub fn during<E, R>(error: &SdkError<E, R>, call: &str) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug + 'static,
    {
        match crate::timeouts::AwsTimeout::of(error, call) {
            Some(timeout) => AwsFailure {
                kind: AwsFailureKind::Unreachable,
                code: None,
                message: timeout.to_string(),
            },
            None => Self::of(error),
        }
    }

    /// Reads a service's error code and message (for errors that arrive without an
    /// `SdkError`, such as a batch item's failure).
    pub fn from_code(code: Option<&str>, message: Option<&str>) -> Self {
        let said = match (code, message) {
            (Some(code), Some(message)) if !message.is_empty() => format!("{code}: {message}"),
            (Some(code), _) => code.to_owned(),
            (None, Some(message)) => message.to_owned(),
            (None, None) => "AWS refused the request".to_owned(),
        };
        let said = said.lines().next().unwrap_or_default().to_owned();
        let is = |codes: &[&str]| code.is_some_and(|code| codes.contains(&code));
        let (kind, message) = if is(EXPIRED_CODES) {
            (
                AwsFailureKind::ExpiredCredentials,
                format!("{EXPIRED} ({said})"),
            )
        } else if is(REJECTED_CODES) {
            (
                AwsFailureKind::CredentialsRejected,
                format!(
                    "AWS did not accept the credentials ({said}): check AWS_PROFILE or \
                     AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, and that they belong to this account"
                ),
            )
        } else if is(DENIED_CODES) {
            (AwsFailureKind::AccessDenied, said)
        } else if is(THROTTLING_CODES) {
            (AwsFailureKind::Throttled, said)
        } else {
            (AwsFailureKind::Service, said)
        };
        AwsFailure {
            kind,
            code: code.map(str::to_owned),
            message,
        }
    }

    /// The credential provider's own failure, found anywhere in the error's causes.
    fn from_credentials(error: &(dyn std::error::Error + 'static)) -> Option<Self> {
        let mut source = Some(error);
        while let Some(current) = source {
            if let Some(credentials) = current.downcast_ref::<CredentialsError>() {
                let detail = innermost(credentials);
                let (kind, message) = match credentials {
                    CredentialsError::CredentialsNotLoaded(_) => {
                        (AwsFailureKind::NoCredentials, NO_CREDENTIALS.to_owned())
                    }
                    _ if detail.to_ascii_lowercase().contains("expired") => (
                        AwsFailureKind::ExpiredCredentials,
                        format!("{EXPIRED} ({detail})"),
                    ),
                    CredentialsError::ProviderTimedOut(_) => (
                        AwsFailureKind::CredentialsUnloadable,
                        format!(
                            "loading the AWS credentials timed out ({detail}): check the \
                             credential source (instance metadata, SSO, credential_process)"
                        ),
                    ),
                    _ => (
                        AwsFailureKind::CredentialsUnloadable,
                        format!(
                            "the AWS credentials could not be loaded ({detail}): check \
                             AWS_PROFILE and that profile's settings in the AWS config files"
                        ),
                    ),
                };
                return Some(AwsFailure {
                    kind,
                    code: None,
                    message,
                });
            }
            source = current.source();
        }
        None
    }

    /// Whether the credentials are at fault (missing, expired, unloadable or not accepted).
    pub fn is_credentials(&self) -> bool {
        matches!(
            self.kind,
            AwsFailureKind::NoCredentials
                | AwsFailureKind::ExpiredCredentials
                | AwsFailureKind::CredentialsUnloadable
                | AwsFailureKind::CredentialsRejected
        )
    }

    /// Whether the environment (credentials, permissions, network, throttling) rather than the
    /// pipeline is at fault: maps to [`crate::exit_codes::ENVIRONMENT`].
    pub fn is_environment(&self) -> bool {
        !matches!(self.kind, AwsFailureKind::Service | AwsFailureKind::Request)
    }

    /// The one line to show.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for AwsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// An SDK error as one line: the service's code and message when it answered, the credential
/// problem and what to do about it, else the error and its causes.
pub fn aws_error_line<E, R>(error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug + 'static,
{
    AwsFailure::of(error).message
}

/// The error and its causes on one line, without the SDK's `Debug` dump.
fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let text = error_chain(error);
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The innermost cause's text: what a credential provider actually ran into.
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = cause.to_string();
        source = cause.source();
    }
    text.lines().next().unwrap_or_default().trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::provider::SharedCredentialsProvider;

    /// A real SDK call whose credential provider fails as `failure` says; the endpoint is never
    /// reached because signing comes first.
    async fn call_with_credentials(
        failure: fn() -> CredentialsError,
    ) -> SdkError<
        aws_sdk_sns::operation::list_topics::ListTopicsError,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    > {
        let provider =
            aws_credential_types::credential_fn::provide_credentials_fn(move || async move {
                Err(failure())
            });
        let config = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("eu-west-2"))
            .endpoint_url("http://127.0.0.1:1")
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        aws_sdk_sns::Client::new(&config)
            .list_topics()
            .send()
            .await
            .expect_err("no credentials")
    }

    #[tokio::test]
    async fn missing_credentials_read_as_one_line_with_what_to_do() {
        let error = call_with_credentials(|| {
            CredentialsError::not_loaded("no providers in chain provided credentials")
        })
        .await;
        let failure = AwsFailure::of(&error);
        assert_eq!(failure.kind, AwsFailureKind::NoCredentials, "{error:?}");
        assert_eq!(failure.message(), NO_CREDENTIALS);
        assert!(failure.is_environment() && failure.is_credentials());
    }

    #[tokio::test]
    async fn expired_credentials_from_a_provider_say_so() {
        let error = call_with_credentials(|| {
            CredentialsError::provider_error("the SSO session has expired or is invalid")
        })
        .await;
        let failure = AwsFailure::of(&error);
        assert_eq!(failure.kind, AwsFailureKind::ExpiredCredentials);
        assert!(
            failure
                .message()
                .starts_with("the AWS credentials have expired: "),
            "{failure}"
        );
        assert!(!failure.message().contains('\n'));
    }

    #[tokio::test]
    async fn a_broken_credential_source_names_its_cause() {
        let error = call_with_credentials(|| {
            CredentialsError::invalid_configuration("profile `ci` names an unknown source_profile")
        })
        .await;
        let failure = AwsFailure::of(&error);
        assert_eq!(failure.kind, AwsFailureKind::CredentialsUnloadable);
        assert!(
            failure
                .message()
                .contains("profile `ci` names an unknown source_profile"),
            "{failure}"
        );
    }

    #[test]
    fn service_codes_are_sorted_by_who_must_act() {
        let expired = AwsFailure::from_code(
            Some("ExpiredTokenException"),
            Some("The security token included in the request is expired"),
        );
        assert_eq!(expired.kind, AwsFailureKind::ExpiredCredentials);
        assert_eq!(
            expired.message(),
            "the AWS credentials have expired: get fresh ones (for example `aws sso login`, or \
             a new session token) and run again (ExpiredTokenException: The security token \
             included in the request is expired)"
        );
        let rejected = AwsFailure::from_code(Some("UnrecognizedClientException"), None);
        assert_eq!(rejected.kind, AwsFailureKind::CredentialsRejected);
        assert!(rejected.is_credentials());
        let denied = AwsFailure::from_code(Some("AccessDeniedException"), Some("not allowed"));
        assert_eq!(denied.kind, AwsFailureKind::AccessDenied);
        assert_eq!(denied.message(), "AccessDeniedException: not allowed");
        assert!(denied.is_environment() && !denied.is_credentials());
        let missing = AwsFailure::from_code(Some("NotFound"), Some("Topic does not exist"));
        assert_eq!(missing.kind, AwsFailureKind::Service);
        assert!(!missing.is_environment());
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_one_line_without_the_debug_dump() {
        let config = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("eu-west-2"))
            .endpoint_url("http://127.0.0.1:1")
            .credentials_provider(SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new("AKID", "SECRET", None, None, "test"),
            ))
            .behavior_version(aws_config::BehaviorVersion::latest())
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled())
            .build();
        let error = aws_sdk_sns::Client::new(&config)
            .list_topics()
            .send()
            .await
            .expect_err("nothing listens on port 1");
        let failure = AwsFailure::of(&error);
        assert_eq!(failure.kind, AwsFailureKind::Unreachable, "{error:?}");
        let message = failure.message();
        assert!(!message.contains('\n'), "{message}");
        assert!(!message.contains("DispatchFailure {"), "{message}");
        assert!(
            message.to_ascii_lowercase().contains("refused"),
            "{message}"
        );
    }
}
