//! The pipeline file format: what users write in `pipelines/*.yaml`.
//!
//! These types are the single source of truth for the format: `envelope-runner schema` derives
//! the JSON Schema from them, the structural check validates against that schema, and the
//! typed value is decoded from the same tree. Strings may hold `${...}` variables (see
//! `template`); durations are strings like `30m` or `7d` (see `duration`).

pub use crate::run::StageKind;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A pipeline: where the code comes from and the stages a release goes through.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "envelope-runner pipeline")]
pub struct Pipeline {
    /// Pipeline name; defaults to the file name without `.yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What this pipeline ships, for people reading the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where the code comes from (the source stage always runs first).
    pub source: Source,
    /// AWS region, account and registry; fills in what `envelope.yaml` does not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<Aws>,
    /// Environment variables that strings may read as `${env.NAME}`; only these are allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Names in `env:` that look like secrets (they say token, secret, password or key) but
    /// are not: declared values are kept in the run's record and shown in plans, so a
    /// secret-looking name is refused unless it is listed here too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_not_secret: Vec<String>,
    /// What happens when a second run of this pipeline starts while one is past the approval
    /// gate: `queued` (wait your turn, the default) or `superseded` (a newer run cancels an
    /// older one still before the gate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// Whom to tell when a run ends: how it ended, why, and a link to the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<RunNotify>,
    /// Where else the same stages can run (for example `staging` and `prod`), by name: what
    /// each environment changes in the stages as written. `run --env NAME` picks one; a run
    /// without `--env` runs the stages as written.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environments: BTreeMap<String, Environment>,
    /// The stages, in order.
    pub stages: Vec<Stage>,
}

/// One environment of a pipeline: what differs from the stages as written. Whatever it does
/// not set stays as the stages say.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// What this environment is, for people reading the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// ECS cluster every migrate and deploy stage uses in this environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Service names as the stages write them → this environment's service of that role, for
    /// example `envelope-prod-api: envelope-staging-api`. Applies to deploy `services:` and
    /// migrate `service:`; a service not listed keeps its name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, String>,
    /// AWS region, account and registry of this environment, over the pipeline's `aws:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<Aws>,
    /// `required` (the default: the pipeline's approval stages run) or `skip` (this
    /// environment's runs go from push to migrate and deploy without a gate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<EnvironmentApproval>,
}

/// Whether an environment's runs stop at the pipeline's approval gates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EnvironmentApproval {
    /// The approval stages run as written.
    Required,
    /// The approval stages are left out.
    Skip,
}

/// The repository a pipeline builds from.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// GitHub `owner/repo`, or any git URL (https://, file://, ssh is not supported yet).
    pub repository: String,
    /// The branch a run without a release tag builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Release tag patterns (globs such as `v*`) that start this pipeline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Name of the environment variable that holds the HTTPS token (default `GITHUB_TOKEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// Check out git submodules too (default true when the repository has them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submodules: Option<bool>,
}

/// AWS settings shared by all stages of a pipeline.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Aws {
    /// AWS region, for example `eu-west-2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// 12-digit AWS account id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Image registry host; defaults to `<account>.dkr.ecr.<region>.amazonaws.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
}

/// How concurrent runs of one pipeline are handled past the approval gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Concurrency {
    Queued,
    Superseded,
}

/// One stage. Written as a single-key mapping: `- build: {...}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Build an image with BuildKit and push it; later stages use its digest.
    Build(BuildStage),
    /// Wait for a person to approve or reject the release.
    Approval(ApprovalStage),
    /// Run a one-off ECS task (for example database migrations) with the new image.
    Migrate(MigrateStage),
    /// Roll ECS services to the new image; roll the release back if that fails.
    Deploy(DeployStage),
}

/// Build an image and push it to the registry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildStage {
    /// Stage name; defaults to `build`. Needed when a pipeline has more than one build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Image repository name (for example `envelope-api`), pushed to the pipeline's registry.
    pub image: String,
    /// Dockerfile path, relative to the context (default `Dockerfile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    /// Build context directory, relative to the repository root (default `.`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Multi-stage build target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Target platform, for example `linux/amd64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Build arguments (`ARG` values).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub build_args: BTreeMap<String, String>,
    /// BuildKit secrets, mounted with `RUN --mount=type=secret,id=...`; never stored in a layer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<BuildSecret>,
    /// Tags of earlier images to reuse layers from (default: `latest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_from: Option<Vec<String>>,
    /// Tags to push (default: `${git.sha}` and `latest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Extra image labels; OCI revision, source, version and created labels are always set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// A CodeBuild buildspec (version 0.2) whose phases run around the build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buildspec: Option<String>,
    /// Create the repository in ECR when it does not exist (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_repository: Option<bool>,
    /// How long the whole stage (buildspec phases and image build) may take (default `60m`,
    /// CodeBuild's default timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// The build fails when the Docker daemon reports no progress for this long (default
    /// `30m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
}

/// Where a BuildKit secret's value comes from: exactly one of `env`, `file`, `aws_secret`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildSecret {
    /// The id a Dockerfile mounts: `RUN --mount=type=secret,id=<id>`.
    pub id: String,
    /// Read the value from this environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Read the value from this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Read the value from this AWS Secrets Manager secret (name or ARN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_secret: Option<String>,
}

/// Wait for a person to approve the release.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalStage {
    /// Stage name; defaults to `approval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// How long to wait before failing closed (default `7d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Whom to tell when the gate opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
}

/// Notifications sent when an approval gate opens.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// SNS topic ARN to publish to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sns: Option<String>,
    /// URL that receives a JSON POST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

/// Notifications sent when a run ends (at most once per ending of a run).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunNotify {
    /// Which endings to tell about: `failure`, `rollback`, `success` (default: failure and
    /// rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<RunEnding>>,
    /// SNS topic ARN to publish a plain-text summary to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sns: Option<String>,
    /// URL that receives the run's summary as a JSON POST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Name of the environment variable that holds the `webhook` URL, read when the run ends
    /// and never recorded (the URL's path is its credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_env: Option<String>,
    /// Slack incoming-webhook URL (or any Slack-compatible one): receives `text` and `blocks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<String>,
    /// Name of the environment variable that holds the `slack` URL, read when the run ends and
    /// never recorded (a Slack webhook URL carries its token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_env: Option<String>,
}

/// How a run ended, for notifications.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RunEnding {
    /// The run failed, or its approval was rejected or timed out.
    Failure,
    /// A deploy failed and its services were rolled back to the revisions they ran before, or
    /// an `envelope-runner rollback` run finished.
    Rollback,
    /// The run finished every stage.
    Success,
}

impl RunEnding {
    pub fn as_str(self) -> &'static str {
        match self {
            RunEnding::Failure => "failure",
            RunEnding::Rollback => "rollback",
            RunEnding::Success => "success",
        }
    }
}

/// Run a one-off ECS task with the new image, borrowing a service's task definition and network.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateStage {
    /// Stage name; defaults to `migrate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// ECS cluster name.
    pub cluster: String,
    /// Service whose task definition and network configuration the task uses.
    pub service: String,
    /// Container in the task definition that runs the command.
    pub container: String,
    /// Command to run, as a list of arguments.
    pub command: Vec<String>,
    /// How long the task may take (default `30m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// Roll ECS services to the new image.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployStage {
    /// Stage name; defaults to `deploy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// ECS cluster name.
    pub cluster: String,
    /// Services that move together; all are rolled back if one fails.
    pub services: Vec<String>,
    /// How long the rollout may take (default `30m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// What to do when the rollout fails: `rollback` (default) or `stop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailure>,
    /// HTTP checks run after every service's rollout COMPLETED; a check that does not pass
    /// before its deadline fails the deploy like a failed rollout (see `on_failure`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify: Vec<VerifyCheck>,
}

/// A check of the released application, retried until it passes or its deadline. It asks
/// one `url`, or every new task of a service (`task`), or the load balancer's target groups
/// of a service (`target_group`), or watches a CloudWatch `alarm`: exactly one of them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
// Exactly one of `url`, `task`, `target_group` and `alarm`, as `not` (two of them, or none):
// the structural check walks `oneOf` as alternatives, and leaves this to the validation,
// which locates the problem.
#[schemars(extend("not" = {"anyOf": [
    {"required": ["url", "task"]},
    {"required": ["url", "target_group"]},
    {"required": ["url", "alarm"]},
    {"required": ["task", "target_group"]},
    {"required": ["task", "alarm"]},
    {"required": ["target_group", "alarm"]},
    {"not": {"anyOf": [
        {"required": ["url"]},
        {"required": ["task"]},
        {"required": ["target_group"]},
        {"required": ["alarm"]}
    ]}}
]}))]
pub struct VerifyCheck {
    /// `http://` or `https://` URL to GET, for example `https://${env.API_HOST}/up`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// GET a port and path of every new task of a service directly, at the private address
    /// of its network interface (awsvpc tasks), as a load balancer does; every one must pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskTarget>,
    /// Every new task of a service must be `healthy` in each target group the service
    /// registers its tasks with (its load balancers, read from ECS; `ip` target groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_group: Option<TargetGroupTarget>,
    /// A CloudWatch alarm that must not be in ALARM at any look during `for` after the
    /// rollout; the check fails as soon as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm: Option<AlarmTarget>,
    /// The HTTP status the answer must have (default 200; not with `target_group` or
    /// `alarm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 599))]
    pub status: Option<u16>,
    /// Text the answer's body must contain, for example `Application up` (not with
    /// `target_group` or `alarm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// How long to keep trying, from the end of the rollout (default `2m`; an `alarm` is
    /// watched for its `for` instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Pause between attempts (default `5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

/// The new tasks a `verify:` check asks: those of the service's new task definition revision
/// that are RUNNING once the rollout completed.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskTarget {
    /// A service of this deploy stage.
    pub service: String,
    /// The container port to ask, for example 8080.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// The path to GET, starting with `/` (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// The service whose target groups a `verify:` check asks: the load balancer's own health
/// checks of the service's new tasks.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetGroupTarget {
    /// A service of this deploy stage with a load balancer.
    pub service: String,
}

/// The CloudWatch alarm a `verify:` check watches after the rollout.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlarmTarget {
    /// The alarm's name (a metric or composite alarm in the pipeline's region), for example
    /// `api-5xx`.
    pub name: String,
    /// How long the alarm must stay out of ALARM, from the end of the rollouts (default
    /// `5m`).
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub watch_for: Option<String>,
}

/// What a failed deploy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Put every service of the release back on the revision it ran before.
    Rollback,
    /// Leave the services as they are and fail the run.
    Stop,
}

/// Project-wide defaults, from `envelope.yaml` next to `pipelines/`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "envelope-runner project defaults")]
pub struct ProjectDefaults {
    /// AWS settings every pipeline inherits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<Aws>,
    /// Values for `${env.NAME}` when the environment does not set `NAME`, for example the
    /// hosts a deploy's `verify:` checks. A pipeline still declares `NAME` in its `env:`.
    /// This file is committed: never a secret here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

impl Stage {
    pub fn kind(&self) -> StageKind {
        match self {
            Stage::Build(_) => StageKind::Build,
            Stage::Approval(_) => StageKind::Approval,
            Stage::Migrate(_) => StageKind::Migrate,
            Stage::Deploy(_) => StageKind::Deploy,
        }
    }

    /// The stage's name: its `name`, or its kind.
    pub fn name(&self) -> &str {
        let name = match self {
            Stage::Build(stage) => &stage.name,
            Stage::Approval(stage) => &stage.name,
            Stage::Migrate(stage) => &stage.name,
            Stage::Deploy(stage) => &stage.name,
        };
        name.as_deref().unwrap_or(self.kind().as_str())
    }
}
