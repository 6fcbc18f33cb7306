//! The steps of a plan: one type per stage kind, each build stage followed by its push
//! step, and the [`Step`] that holds any of them; and the run's notifications.

use crate::pipeline::model::{OnFailure, RunEnding};
use crate::run::StageKind;
use serde::Serialize;
use std::collections::BTreeMap;

/// One step. Each build stage is followed by its push step. A build step, more than twice the
/// size of any other, is boxed so that every step does not take its room (serde writes a box
/// as what it holds, so the JSON plan is the same).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Step {
    Source(SourceStep),
    Build(Box<BuildStep>),
    Push(PushStep),
    Approval(ApprovalStep),
    Migrate(MigrateStep),
    Deploy(DeployStep),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceStep {
    pub name: String,
    pub url: String,
    pub reference: String,
    pub expected_sha: Option<String>,
    pub token_env: String,
    pub submodules: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildStep {
    pub name: String,
    /// `registry/repository`.
    pub repository: String,
    pub image_name: String,
    pub context: String,
    pub dockerfile: String,
    pub target: Option<String>,
    pub platform: Option<String>,
    pub build_args: BTreeMap<String, String>,
    pub secrets: Vec<SecretRef>,
    pub labels: BTreeMap<String, String>,
    pub cache_from: Vec<String>,
    pub tags: Vec<String>,
    pub buildspec: Option<BuildspecPlan>,
    pub create_repository: bool,
    /// The whole stage's limit (`timeout`).
    pub timeout: String,
    pub timeout_seconds: u64,
    /// How long the daemon may report no progress (`idle_timeout`).
    pub idle_timeout: String,
    pub idle_timeout_seconds: u64,
}

/// A BuildKit secret: where its value comes from, never the value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecretRef {
    pub id: String,
    /// `env:NAME`, `file:PATH` or `aws_secret:ID`.
    pub from: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildspecPlan {
    pub path: String,
    pub phases: Vec<String>,
    pub exported_variables: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PushStep {
    pub name: String,
    pub build: String,
    pub repository: String,
    pub tags: Vec<String>,
    /// What later stages deploy: `repository@<digest>`.
    pub image: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalStep {
    pub name: String,
    pub timeout: String,
    pub timeout_seconds: u64,
    pub notify_sns: Option<String>,
    /// The whole URL, for the run; shown and serialized as scheme and host only, because its
    /// path and query carry credentials.
    #[serde(serialize_with = "webhook_origin")]
    pub notify_webhook: Option<String>,
}

/// Where the end of a run is told (the pipeline's `notify:`), variables resolved. Not a step:
/// the run's lifecycle sends it once the run has ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotifyPlan {
    /// The endings told about.
    pub on: Vec<RunEnding>,
    pub sns: Option<String>,
    /// Whole URLs, for the run; shown and serialized as scheme and host only.
    #[serde(serialize_with = "webhook_origin")]
    pub webhook: Option<String>,
    /// The variable that holds the webhook URL, read when the run ends.
    pub webhook_env: Option<String>,
    #[serde(serialize_with = "webhook_origin")]
    pub slack: Option<String>,
    /// The variable that holds the Slack URL, read when the run ends.
    pub slack_env: Option<String>,
}

fn webhook_origin<S: serde::Serializer>(
    url: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => serializer.serialize_some(&crate::redact::url_origin(url)),
        None => serializer.serialize_none(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrateStep {
    pub name: String,
    pub cluster: String,
    pub service: String,
    pub container: String,
    pub command: Vec<String>,
    /// Images swapped into the task definition, by repository.
    pub images: Vec<String>,
    pub timeout: String,
    pub timeout_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeployStep {
    pub name: String,
    pub cluster: String,
    pub services: Vec<String>,
    pub images: Vec<String>,
    pub timeout: String,
    pub timeout_seconds: u64,
    pub on_failure: OnFailure,
    /// HTTP checks run after the rollout completed; empty when the stage has none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub verify: Vec<VerifyStep>,
}

/// One rendered `verify:` check of a deploy stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyStep {
    /// What the check asks: `url: …`, `task: {service, port, path}`,
    /// `target_group: {service}` or `alarm: {name}` when serialized.
    #[serde(flatten)]
    pub target: CheckTarget,
    /// The status the answer must have: `None` for a target group check, which the load
    /// balancer's own health check judges, and for an alarm check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    pub timeout: String,
    pub timeout_seconds: u64,
    pub interval_seconds: u64,
}

/// The kinds of `verify:` check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckTarget {
    /// GET one URL. The whole URL, for the run; serialized without credentials and query
    /// values.
    #[serde(serialize_with = "shown_url")]
    Url(String),
    /// GET `http://ADDRESS:PORT/PATH` of every new task of a service of the stage.
    Task(TaskCheckStep),
    /// Every new task of a service of the stage `healthy` in the service's target groups.
    TargetGroup(TargetGroupCheckStep),
    /// A CloudWatch alarm out of ALARM at every look for the check's timeout (its `for`).
    Alarm(AlarmCheckStep),
}

/// The CloudWatch alarm `name`, watched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlarmCheckStep {
    pub name: String,
}

/// The target groups of `service` (from its load balancers), asked about its new tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetGroupCheckStep {
    pub service: String,
}

/// The new tasks of `service` asked on `port` at `path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskCheckStep {
    pub service: String,
    pub port: u16,
    pub path: String,
}

impl VerifyStep {
    /// What the check asks, as plans and approval notices show it: the URL (without
    /// credentials and query values), `PATH on port PORT of every new task of SERVICE`,
    /// `the target groups of SERVICE`, or `alarm NAME`.
    pub fn target_text(&self) -> String {
        match &self.target {
            CheckTarget::Url(url) => crate::pipeline::verify::shown(url),
            CheckTarget::Task(task) => format!(
                "{} on port {} of every new task of {}",
                task.path, task.port, task.service
            ),
            CheckTarget::TargetGroup(target_group) => {
                format!("the target groups of {}", target_group.service)
            }
            CheckTarget::Alarm(alarm) => format!("alarm {}", alarm.name),
        }
    }

    /// What the check wants, as plans and approval notices show it: `GET URL must answer 200
    /// with a body containing "…"`, or `every new task of SERVICE must be healthy in the
    /// target groups of its load balancers`.
    pub fn wanted_text(&self) -> String {
        let status = self
            .status
            .unwrap_or(crate::pipeline::verify::DEFAULT_STATUS);
        let body = self
            .body_contains
            .as_ref()
            .map(|text| format!(" with a body containing {text:?}"))
            .unwrap_or_default();
        match &self.target {
            CheckTarget::Url(_) | CheckTarget::Task(_) => {
                format!("GET {} must answer {status}{body}", self.target_text())
            }
            CheckTarget::TargetGroup(target_group) => format!(
                "every new task of {} must be healthy in the target groups of its load balancers",
                target_group.service
            ),
            CheckTarget::Alarm(alarm) => format!(
                "alarm {} must not be in ALARM at any look for {}",
                alarm.name, self.timeout
            ),
        }
    }

    /// How the check is repeated, in words: `retried every 5s for up to 2m`, or for an alarm
    /// `looked at every 5s`.
    pub fn schedule_text(&self) -> String {
        match &self.target {
            CheckTarget::Alarm(_) => format!("looked at every {}s", self.interval_seconds),
            _ => format!(
                "retried every {}s for up to {}",
                self.interval_seconds, self.timeout
            ),
        }
    }
}

fn shown_url<S: serde::Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::pipeline::verify::shown(url))
}

impl Step {
    pub fn name(&self) -> &str {
        match self {
            Step::Source(step) => &step.name,
            Step::Build(step) => &step.name,
            Step::Push(step) => &step.name,
            Step::Approval(step) => &step.name,
            Step::Migrate(step) => &step.name,
            Step::Deploy(step) => &step.name,
        }
    }

    pub fn kind(&self) -> StageKind {
        match self {
            Step::Source(_) => StageKind::Source,
            Step::Build(_) => StageKind::Build,
            Step::Push(_) => StageKind::Push,
            Step::Approval(_) => StageKind::Approval,
            Step::Migrate(_) => StageKind::Migrate,
            Step::Deploy(_) => StageKind::Deploy,
        }
    }
}
