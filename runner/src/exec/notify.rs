//! Notifications when an approval gate opens: an SNS message and/or a JSON webhook POST that
//! say exactly what is being approved.

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
    /// The command that approves, for people reading the message.
    pub approve_with: String,
    pub expires_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceChange {
    pub service: String,
    pub changes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(
        "approvers were not told: the approval notice to SNS topic {topic} was not sent ({detail})"
    )]
    Sns { topic: String, detail: String },
    /// `origin` is the URL's scheme and host only: its path and query carry credentials.
    #[error("approvers were not told: the approval webhook at {origin} failed ({detail})")]
    Webhook { origin: String, detail: String },
}

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
        for service in &self.services {
            for change in &service.changes {
                lines.push(format!("{}: {change}", service.service));
            }
        }
        lines.push(format!("Approve: {}", self.approve_with));
        lines.push(format!("The gate closes (rejects) at {}.", self.expires_at));
        lines.join("\n")
    }
}

/// Publish to SNS.
pub async fn publish_sns(
    config: &aws_config::SdkConfig,
    topic: &str,
    notice: &ApprovalNotice,
) -> Result<String, NotifyError> {
    let client = aws_sdk_sns::Client::new(config);
    let subject: String = format!(
        "Approve {} {}",
        notice.pipeline,
        notice.release.as_deref().unwrap_or(&notice.git_ref)
    )
    .chars()
    .take(100)
    .collect();
    let answer = client
        .publish()
        .topic_arn(topic)
        .subject(subject)
        .message(notice.text())
        .send()
        .await
        .map_err(|error| NotifyError::Sns {
            topic: topic.to_owned(),
            detail: crate::aws_error::AwsFailure::during(&error, "SNS Publish").to_string(),
        })?;
    Ok(answer.message_id().unwrap_or_default().to_owned())
}

/// POST the notice as JSON; a non-2xx answer is an error.
pub async fn post_webhook(url: &str, notice: &ApprovalNotice) -> Result<(), NotifyError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|error| NotifyError::Webhook {
            origin: crate::redact::url_origin(url),
            detail: error.without_url().to_string(),
        })?;
    let response = client
        .post(url)
        .header(
            "user-agent",
            concat!("envelope-runner/", env!("CARGO_PKG_VERSION")),
        )
        .json(notice)
        .send()
        .await
        .map_err(|error| NotifyError::Webhook {
            origin: crate::redact::url_origin(url),
            detail: error.without_url().to_string(),
        })?;
    if !response.status().is_success() {
        return Err(NotifyError::Webhook {
            origin: crate::redact::url_origin(url),
            detail: format!("it answered {}", response.status()),
        });
    }
    Ok(())
}
