//! The notification sent when a run ends (the pipeline's top-level `notify:`): how the run
//! ended, what it shipped, why it failed, what was rolled back and where to look, as plain
//! text (SNS), as JSON (a webhook) and as a Slack message (`text` and `blocks`). Pure.

use crate::pipeline::model::RunEnding;
use crate::run::{RunRecord, RunStatus, StageKind, TriggerKind};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;

/// Slack refuses a section text over 3,000 characters; a failure's reason is cut well before.
const REASON_LIMIT: usize = 1_500;

/// What a run's ending tells: the JSON a webhook receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunNotice {
    pub pipeline: String,
    pub run: String,
    /// `failure`, `rollback` or `success`.
    pub outcome: RunEnding,
    /// The run's recorded status: `failed`, `rejected` or `succeeded`.
    pub status: String,
    pub git_ref: String,
    pub release: Option<String>,
    pub commit: Option<String>,
    /// The stage that failed (or was rejected).
    pub failed_stage: Option<String>,
    /// Why it failed, as the run recorded it.
    pub reason: Option<String>,
    /// `service (back on family:revision)` of every service put back on the revision it ran
    /// before.
    pub rolled_back: Vec<String>,
    /// `repository@sha256:…` of every image the run pushed (or redeployed).
    pub images: Vec<String>,
    /// From the run's creation to its end, waits for approval included.
    pub duration_seconds: u64,
    /// The run's page: the agent's, or the GitHub Actions workflow run's.
    pub link: Option<String>,
    /// For a run made by `envelope-runner rollback`: the run whose images it redeployed.
    pub rollback_of: Option<String>,
}

/// How a run that ended with `status` counts for notifications: `None` for an ending nobody
/// is told about (cancelled, superseded, still waiting). A failed run whose deploy put
/// services back is a rollback, as is a `rollback` run that finished.
pub fn ending_of(record: &RunRecord, status: RunStatus) -> Option<RunEnding> {
    let rolled_back = record
        .stages
        .iter()
        .any(|stage| !stage.outputs.rolled_back.is_empty());
    match status {
        RunStatus::Succeeded if matches!(record.trigger.kind, TriggerKind::Rollback { .. }) => {
            Some(RunEnding::Rollback)
        }
        RunStatus::Succeeded => Some(RunEnding::Success),
        RunStatus::Failed | RunStatus::Rejected if rolled_back => Some(RunEnding::Rollback),
        RunStatus::Failed | RunStatus::Rejected => Some(RunEnding::Failure),
        _ => None,
    }
}

/// How the run ended, as the driver saw it.
#[derive(Debug, Clone)]
pub struct Ending<'a> {
    pub outcome: RunEnding,
    pub status: RunStatus,
    pub stage: Option<&'a str>,
    pub error: Option<&'a str>,
    pub duration: Duration,
    pub link: Option<String>,
    /// The release tag the plan resolved (a `--ref v1.4.0` is one when it matches the
    /// pipeline's tag patterns); the trigger's tag when `None`.
    pub release: Option<String>,
}

impl RunNotice {
    /// The notice for `record`, which ended as `ending` says.
    pub fn of(record: &RunRecord, ending: Ending<'_>) -> RunNotice {
        let commit = record
            .stages
            .iter()
            .find_map(|stage| stage.outputs.sha.clone())
            .or_else(|| record.trigger.sha.clone());
        RunNotice {
            pipeline: record.pipeline.clone(),
            run: record.id.0.clone(),
            outcome: ending.outcome,
            status: ending.status.as_str().to_owned(),
            git_ref: record.trigger.git_ref.clone(),
            release: ending.release.or_else(|| record.trigger.tag.clone()),
            commit,
            failed_stage: ending.stage.map(str::to_owned),
            reason: ending.error.map(str::to_owned),
            rolled_back: record
                .stages
                .iter()
                .flat_map(|stage| &stage.outputs.rolled_back)
                .map(|(service, revision)| format!("{service} (back on {revision})"))
                .collect(),
            images: record
                .stages
                .iter()
                .filter(|stage| stage.kind == StageKind::Push)
                .filter_map(|stage| stage.outputs.image.clone())
                .collect(),
            duration_seconds: ending.duration.as_secs(),
            link: ending.link,
            rollback_of: match &record.trigger.kind {
                TriggerKind::Rollback { from_run } => Some(from_run.0.clone()),
                _ => None,
            },
        }
    }

    /// One line: what shipped and how it ended (`api v1.4.0 failed at deploy`).
    pub fn headline(&self) -> String {
        let what = format!(
            "{} {}",
            self.pipeline,
            self.release.as_deref().unwrap_or(&self.git_ref)
        );
        let at = self
            .failed_stage
            .as_deref()
            .map(|stage| format!(" at `{stage}`"))
            .unwrap_or_default();
        match (self.outcome, self.rollback_of.as_deref()) {
            (RunEnding::Success, _) => format!("{what} deployed"),
            (RunEnding::Rollback, Some(from)) => {
                format!("{what} rolled back to the images of run {from}")
            }
            (RunEnding::Rollback, None) => format!("{what} failed{at} and was rolled back"),
            (RunEnding::Failure, _) if self.status == "rejected" => format!("{what} rejected{at}"),
            (RunEnding::Failure, _) => format!("{what} failed{at}"),
        }
    }

    /// The SNS subject: `envelope-runner: <headline>`, within SNS' 100 characters.
    pub fn subject(&self) -> String {
        super::notify::subject(&format!("envelope-runner: {}", self.headline()))
    }

    /// Plain text, for e-mail and SMS subscribers of an SNS topic.
    pub fn text(&self) -> String {
        let mut lines = vec![
            format!("{}.", self.headline()),
            format!(
                "Pipeline {}  run {}  ({}, {})",
                self.pipeline,
                self.run,
                self.outcome.as_str(),
                duration(self.duration_seconds)
            ),
            format!(
                "Release: {}  commit: {}",
                self.release.as_deref().unwrap_or(&self.git_ref),
                self.commit.as_deref().unwrap_or("-")
            ),
        ];
        if let Some(reason) = &self.reason {
            lines.push(format!("Reason: {}", cut(reason)));
        }
        for service in &self.rolled_back {
            lines.push(format!("Rolled back: {service}"));
        }
        for image in &self.images {
            lines.push(format!("Image: {image}"));
        }
        if let Some(link) = &self.link {
            lines.push(format!("Run: {link}"));
        }
        lines.join("\n")
    }

    /// A Slack message: `text` (what the notification shows) and `blocks` Slack's incoming
    /// webhooks accept (header, fields, the reason, rolled-back services, images, a button).
    pub fn slack(&self) -> Value {
        let mut fields = vec![
            field("Pipeline", &self.pipeline),
            field("Run", &self.run),
            field(
                "Release",
                self.release.as_deref().unwrap_or(self.git_ref.as_str()),
            ),
            field("Commit", &short(self.commit.as_deref().unwrap_or("-"))),
            field("Outcome", self.outcome.as_str()),
            field("Duration", &duration(self.duration_seconds)),
        ];
        if let Some(from) = &self.rollback_of {
            fields.push(field("Images of run", from));
        }
        let mut blocks = vec![
            json!({
                "type": "header",
                "text": { "type": "plain_text", "text": cut_to(&self.headline(), 150) },
            }),
            json!({ "type": "section", "fields": fields }),
        ];
        if let Some(reason) = &self.reason {
            let at = self
                .failed_stage
                .as_deref()
                .map(|stage| format!(" at `{}`", escape(stage)))
                .unwrap_or_default();
            blocks.push(section(&format!(
                "*Failed{at}*\n```{}```",
                escape(&cut(reason))
            )));
        }
        if !self.rolled_back.is_empty() {
            blocks.push(section(&format!(
                "*Rolled back to the revision they ran before*\n{}",
                bullets(&self.rolled_back)
            )));
        }
        if !self.images.is_empty() {
            blocks.push(section(&format!("*Images*\n{}", bullets(&self.images))));
        }
        if let Some(link) = &self.link {
            blocks.push(json!({
                "type": "actions",
                "elements": [{
                    "type": "button",
                    "text": { "type": "plain_text", "text": "Open the run" },
                    "url": link,
                }],
            }));
        }
        json!({ "text": escape(&self.headline()), "blocks": blocks })
    }
}

fn field(name: &str, value: &str) -> Value {
    json!({ "type": "mrkdwn", "text": format!("*{name}*\n{}", escape(value)) })
}

fn section(text: &str) -> Value {
    json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } })
}

fn bullets(items: &[String]) -> String {
    items
        .iter()
        .map(|item| format!("• `{}`", escape(item)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Slack's mrkdwn treats `&`, `<` and `>` as control characters.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn short(sha: &str) -> String {
    sha.chars().take(12).collect()
}

fn cut(text: &str) -> String {
    cut_to(text, REASON_LIMIT)
}

fn cut_to(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        return text.to_owned();
    }
    let mut kept: String = text.chars().take(limit.saturating_sub(1)).collect();
    kept.push('…');
    kept
}

/// `42s`, `3m 12s`, `2h 5m`, `3d 4h`.
fn duration(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m {}s", seconds / 60, seconds % 60),
        3600..86400 => format!("{}h {}m", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{}d {}h", seconds / 86400, seconds % 86400 / 3600),
    }
}
