//! Sending notifications: an SNS message and a JSON webhook POST (bounded by a timeout, its
//! URL never shown past the host), for the notice an approval gate sends when it opens, which
//! says exactly what is being approved, and for the end of a run (`run_notice`).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What an approver is asked to approve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalNotice {
    pub pipeline: String,
    pub run: String,
    pub stage: String,
    pub git_ref: String,
    pub release: Option<String>,
    pub commit: Option<String>,
    /// `repository@sha256:…` of every image the run built.
    pub images: Vec<String>,
    /// The migration command that runs after the gate, if any.
    pub migration: Option<Vec<String>>,
    /// Per service: what changes in its task definition.
    pub services: Vec<ServiceChange>,
    /// What the stages after the gate change (the migration's task definition included), a
    /// line each, bounded: what the gate's record keeps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diff: Vec<String>,
    /// The `verify:` checks the deploy runs after its rollouts, a line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
    /// The command that approves, for people reading the message.
    pub approve_with: String,
    pub expires_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceChange {
    pub service: String,
    pub changes: Vec<String>,
}

/// What a notification is about, for the error that says it was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// An approval gate opened ([`ApprovalNotice`]).
    Approval,
    /// A run ended ([`super::run_notice::RunNotice`]).
    RunEnd,
}

impl Purpose {
    fn not_told(self) -> &'static str {
        match self {
            Purpose::Approval => "approvers were not told: the approval notice",
            Purpose::RunEnd => "nobody was told how the run ended: the run notification",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("{} to SNS topic {topic} was not sent ({detail})", purpose.not_told())]
    Sns {
        purpose: Purpose,
        topic: String,
        detail: String,
    },
    /// `origin` is the URL's scheme and host only: its path and query carry credentials.
    #[error("{} to the webhook at {origin} was not sent ({detail})", purpose.not_told())]
    Webhook {
        purpose: Purpose,
        origin: String,
        detail: String,
    },
}

/// How long a webhook may take to answer: a receiver that hangs must not hold up the run.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

impl ApprovalNotice {
    /// A short plain-text version for e-mail subscribers of an SNS topic.
    pub fn text(&self) -> String {
        let mut lines = vec![
            format!(
                "Pipeline {} is waiting for approval at `{}`.",
                self.pipeline, self.stage
            ),
            format!(
                "Release: {}  commit: {}",
                self.release.as_deref().unwrap_or(&self.git_ref),
                self.commit.as_deref().unwrap_or("-")
            ),
        ];
        for image in &self.images {
            lines.push(format!("Image: {image}"));
        }
        if let Some(command) = &self.migration {
            lines.push(format!(
                "Migration: {}",
                crate::pipeline::untrusted::command_line(command)
            ));
        }
        if self.diff.is_empty() {
            for service in &self.services {
                for change in &service.changes {
                    lines.push(format!("{}: {change}", service.service));
                }
            }
        } else {
            lines.push("Changes:".to_owned());
            lines.extend(self.diff.iter().map(|line| format!("  {line}")));
        }
        if !self.checks.is_empty() {
            lines.push("Checks after the deploy:".to_owned());
            lines.extend(self.checks.iter().map(|check| format!("  {check}")));
        }
        lines.push(format!("Approve: {}", self.approve_with));
        lines.push(format!("The gate closes (rejects) at {}.", self.expires_at));
        lines.join("\n")
    }
}

impl ApprovalNotice {
    /// The SNS subject (SNS allows 100 characters).
    pub fn subject(&self) -> String {
        subject(&format!(
            "Approve {} {}",
            self.pipeline,
            self.release.as_deref().unwrap_or(&self.git_ref)
        ))
    }
}

/// A subject cut to SNS' 100 characters.
pub fn subject(text: &str) -> String {
    text.chars().take(100).collect()
}

/// Publish `message` under `subject` to an SNS topic; the message id SNS gave it.
pub async fn publish_sns(
    config: &aws_config::SdkConfig,
    purpose: Purpose,
    topic: &str,
    subject: &str,
    message: &str,
) -> Result<String, NotifyError> {
    let answer = aws_sdk_sns::Client::new(config)
        .publish()
        .topic_arn(topic)
        .subject(subject)
        .message(message)
        .send()
        .await
        .map_err(|error| NotifyError::Sns {
            purpose,
            topic: topic.to_owned(),
            detail: crate::aws_error::AwsFailure::during(&error, "SNS Publish").to_string(),
        })?;
    Ok(answer.message_id().unwrap_or_default().to_owned())
}

/// POST `body` as JSON, bounded by [`WEBHOOK_TIMEOUT`]; a non-2xx answer is an error. Errors
/// name the URL's origin only.
pub async fn post_webhook(
    purpose: Purpose,
    url: &str,
    body: &serde_json::Value,
) -> Result<(), NotifyError> {
    let failed = |detail: String| NotifyError::Webhook {
        purpose,
        origin: crate::redact::url_origin(url),
        detail,
    };
    let client = reqwest::Client::builder()
        .timeout(WEBHOOK_TIMEOUT)
        .build()
        .map_err(|error| failed(error.without_url().to_string()))?;
    let response = client
        .post(url)
        .header(
            "user-agent",
            concat!("envelope-runner/", env!("CARGO_PKG_VERSION")),
        )
        .json(body)
        .send()
        .await
        .map_err(|error| failed(error.without_url().to_string()))?;
    if !response.status().is_success() {
        return Err(failed(format!("it answered {}", response.status())));
    }
    Ok(())
}
