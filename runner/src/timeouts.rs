//! Every limit on waiting: the defaults, the environment variables that change them, the AWS
//! SDK's timeout configuration, and how a timed-out AWS call is told to the user.
//!
//! Nothing the runner does waits forever. The pipeline keys (`timeout`, `idle_timeout` of a
//! build stage) are read by the planner; the rest come from the environment:
//!
//! | variable | default | limits |
//! |---|---|---|
//! | `ENVELOPE_AWS_TIMEOUT` | 30s | each attempt of every AWS call (and reading its answer); connecting takes at most 10s of it; all attempts of one call together 3 times as long |
//! | `ENVELOPE_GIT_TIMEOUT` | 60s | silence of a git HTTP server (answer headers or pack data) |
//! | `ENVELOPE_AGENT_HEADER_TIMEOUT` | 10s | a client sending the agent's HTTP server a request's headers |
//!
//! Values are durations as in pipeline files (`90s`, `2m`, `1h30m`).

use std::fmt;
use std::time::Duration;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::timeout::TimeoutConfig;

use crate::pipeline::duration;

/// The build stage's `timeout` when the pipeline names none: CodeBuild's default
/// `timeout-in-minutes` (60). It covers the buildspec's phases and the image build.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// The build stage's `idle_timeout` when the pipeline names none: this long without a word
/// of progress from the Docker daemon fails the build.
pub const BUILD_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Each attempt of an AWS call, by default.
pub const AWS_TIMEOUT: Duration = Duration::from_secs(30);
/// Connecting to an AWS endpoint, at most.
pub const AWS_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a git HTTP server may stay silent, by default.
pub const GIT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a client may take to send the agent a request's headers, by default.
pub const AGENT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Environment variable for [`aws_attempt`].
pub const AWS_TIMEOUT_VAR: &str = "ENVELOPE_AWS_TIMEOUT";
/// Environment variable for [`git`].
pub const GIT_TIMEOUT_VAR: &str = "ENVELOPE_GIT_TIMEOUT";
/// Environment variable for [`agent_header`].
pub const AGENT_HEADER_TIMEOUT_VAR: &str = "ENVELOPE_AGENT_HEADER_TIMEOUT";

/// The limit on one attempt of an AWS call: `ENVELOPE_AWS_TIMEOUT`, else 30s.
pub fn aws_attempt() -> Duration {
    from_env(AWS_TIMEOUT_VAR, AWS_TIMEOUT)
}

/// The limit on a git HTTP server's silence: `ENVELOPE_GIT_TIMEOUT`, else 60s.
pub fn git() -> Duration {
    from_env(GIT_TIMEOUT_VAR, GIT_TIMEOUT)
}

/// The limit on reading a request's headers in the agent: `ENVELOPE_AGENT_HEADER_TIMEOUT`,
/// else 10s.
pub fn agent_header() -> Duration {
    from_env(AGENT_HEADER_TIMEOUT_VAR, AGENT_HEADER_TIMEOUT)
}

/// The AWS SDK's timeouts for every client the runner makes: connect, read, each attempt, and
/// the whole operation (all attempts).
pub fn aws_config() -> TimeoutConfig {
    aws_config_for(aws_attempt())
}

fn aws_config_for(attempt: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(attempt.min(AWS_CONNECT_TIMEOUT))
        .read_timeout(attempt)
        .operation_attempt_timeout(attempt)
        .operation_timeout(attempt * 3)
        .build()
}

/// A duration from `variable`, or `default` when it is unset. A value that is not a duration
/// (zero included: it would mean no limit) is logged as a warning and the default is used.
fn from_env(variable: &str, default: Duration) -> Duration {
    match std::env::var(variable) {
        Ok(text) if !text.trim().is_empty() => match duration::parse(&text) {
            Ok(value) => value,
            Err(problem) => {
                tracing::warn!(
                    "{variable}={text:?} is not a duration ({problem}); using {}",
                    show(default)
                );
                default
            }
        },
        _ => default,
    }
}

/// A duration as people write it: `2s`, `1m 30s`, `250ms`.
pub fn show(value: Duration) -> String {
    if value.subsec_millis() != 0 && value < Duration::from_secs(1) {
        format!("{}ms", value.as_millis())
    } else {
        duration::format(Duration::from_secs(value.as_secs()))
    }
}

/// An AWS call that got no answer in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsTimeout {
    /// `ECR GetAuthorizationToken`, `SNS Publish`, ...
    pub call: String,
    /// The limit per attempt that ran out.
    pub after: Duration,
}

impl AwsTimeout {
    /// `Some` when `error` is a timeout: the connection, an attempt, the whole operation, or
    /// the wait for the answer ran out.
    pub fn of<E, R>(error: &SdkError<E, R>, call: impl Into<String>) -> Option<Self> {
        is_timeout(error).then(|| AwsTimeout {
            call: call.into(),
            after: aws_attempt(),
        })
    }
}

impl fmt::Display for AwsTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} timed out after {}: the AWS endpoint did not answer; check the network, the \
             region and AWS_ENDPOINT_URL, or raise {AWS_TIMEOUT_VAR}",
            self.call,
            show(self.after)
        )
    }
}

impl std::error::Error for AwsTimeout {}

/// `ECS DescribeServices` for the IAM action `ecs:DescribeServices`.
pub fn call_name(action: &str) -> String {
    let (service, operation) = action.split_once(':').unwrap_or(("", action));
    let service = match service {
        "ecs" => "ECS",
        "ecr" => "ECR",
        "logs" => "CloudWatch Logs",
        "sns" => "SNS",
        "secretsmanager" => "Secrets Manager",
        "ssm" => "SSM",
        "dynamodb" => "DynamoDB",
        "sts" => "STS",
        "elasticloadbalancing" => "Elastic Load Balancing",
        "cloudwatch" => "CloudWatch",
        other => other,
    };
    format!("{service} {operation}").trim().to_owned()
}

/// True when `error` means that time ran out rather than that AWS answered.
pub fn is_timeout<E, R>(error: &SdkError<E, R>) -> bool {
    match error {
        SdkError::TimeoutError(_) => true,
        SdkError::DispatchFailure(failure) => failure.is_timeout(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_aws_timeouts_are_the_documented_ones() {
        let config = aws_config_for(AWS_TIMEOUT);
        assert_eq!(config.connect_timeout(), Some(Duration::from_secs(10)));
        assert_eq!(config.read_timeout(), Some(Duration::from_secs(30)));
        assert_eq!(
            config.operation_attempt_timeout(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(config.operation_timeout(), Some(Duration::from_secs(90)));
        let short = aws_config_for(Duration::from_secs(2));
        assert_eq!(short.connect_timeout(), Some(Duration::from_secs(2)));
        assert_eq!(short.operation_timeout(), Some(Duration::from_secs(6)));
    }

    #[test]
    fn calls_are_named_by_service_and_operation() {
        assert_eq!(
            call_name("ecr:GetAuthorizationToken"),
            "ECR GetAuthorizationToken"
        );
        assert_eq!(
            call_name("logs:GetLogEvents"),
            "CloudWatch Logs GetLogEvents"
        );
    }

    #[test]
    fn durations_show_as_written() {
        assert_eq!(show(Duration::from_secs(2)), "2s");
        assert_eq!(show(Duration::from_secs(90)), "1m 30s");
        assert_eq!(show(Duration::from_millis(250)), "250ms");
    }
}
