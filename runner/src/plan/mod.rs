//! Plan: a compiled pipeline plus the trigger becomes the exact list of steps a run takes.
//!
//! Pure and synchronous: the git ref, sha, run id, time and environment come in as a
//! `PlanContext`; nothing is read from the machine. Values a run learns later (the image
//! digest) stay visible placeholders such as `<build.digest>`.

mod error;
mod render;
mod resolve;
mod steps;
mod verify_step;
#[cfg(test)]
mod verify_tests;

use crate::pipeline::model::{Concurrency, OnFailure, RunEnding, Stage};
use crate::pipeline::{CompiledPipeline, duration, names, template, untrusted};
pub use error::PlanError;
use resolve::{public_url, render_text, timeout_of, trigger_of};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;
pub use steps::{
    AlarmCheckStep, ApprovalStep, BuildStep, BuildspecPlan, CheckTarget, DeployStep, MigrateStep,
    NotifyPlan, PushStep, SecretRef, SourceStep, Step, TargetGroupCheckStep, TaskCheckStep,
    VerifyStep,
};
use verify_step::verify_step;

/// Default waiting time of an approval gate.
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default time a migration task or a deploy may take.
pub const DEFAULT_STAGE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Environment variable that holds the git token when the pipeline names none.
pub const DEFAULT_TOKEN_ENV: &str = "GITHUB_TOKEN";

/// What triggered the run: everything plan may not look up itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanContext {
    /// Branch, tag, full ref or sha to build.
    pub git_ref: String,
    /// The resolved commit, when known.
    pub sha: Option<String>,
    pub run_id: Option<String>,
    /// Run start time, RFC 3339.
    pub created: Option<String>,
    /// Values of the environment variables the pipeline declares.
    pub env: BTreeMap<String, String>,
    /// AWS account, when learned from STS and not set in the pipeline.
    pub account: Option<String>,
    /// AWS region settled for the run (`--region`, the pipeline, envelope.yaml, `AWS_REGION`);
    /// plan falls back to the pipeline's own when it is not given.
    pub region: Option<String>,
    /// Outputs of build stages a run has pushed (`<stage>.digest`, `.image`, `.repository`),
    /// so that later stages (and the approval notice) get the real values, not placeholders.
    pub outputs: BTreeMap<String, String>,
    /// With `run --local`: what `${release.tag}` (and so `${release.version}`) reads when the
    /// ref is no release tag, `local-<short sha>` of the working tree (the command chooses it).
    /// `None` for every other run, whose `${release.tag}` without a release stays an error.
    pub local_tag: Option<String>,
}

/// The resolved steps of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub pipeline: String,
    /// The environment the run is planned in (`run --env`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    pub file: String,
    pub run_id: Option<String>,
    pub trigger: Trigger,
    pub aws: AwsPlan,
    pub concurrency: Concurrency,
    pub steps: Vec<Step>,
    /// Whom the end of the run is told (the pipeline's `notify:`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifyPlan>,
    /// Stages a branch run leaves out: a pipeline with release tag patterns deploys only
    /// releases, so a run of a branch or commit builds and pushes and stops there.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trigger {
    pub git_ref: String,
    pub sha: Option<String>,
    pub short_sha: Option<String>,
    pub tag: Option<String>,
    pub branch: Option<String>,
    /// `tag` is the `--local` stand-in (`PlanContext::local_tag`), not a release.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub local_stand_in: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AwsPlan {
    pub region: Option<String>,
    pub account: Option<String>,
    pub registry: String,
}

/// The name of a build stage's push step.
pub fn push_step_name(build: &str) -> String {
    if build == "build" {
        "push".to_owned()
    } else {
        format!("{build}-push")
    }
}

/// The build stage whose push step is named `push_step`: the inverse of [`push_step_name`].
pub fn build_of_push_step(push_step: &str) -> &str {
    push_step.strip_suffix("-push").unwrap_or("build")
}

/// Make the plan. Pure.
pub fn plan(compiled: &CompiledPipeline, context: &PlanContext) -> Result<Plan, PlanError> {
    let pipeline = &compiled.pipeline;
    if let Some(sha) = &context.sha
        && !(sha.len() == 40 && sha.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(PlanError::BadSha(sha.clone()));
    }
    let trigger = trigger_of(compiled, context);
    untrusted::check_trigger(
        &trigger.git_ref,
        trigger.tag.as_deref(),
        trigger.branch.as_deref(),
    )?;
    let account = compiled
        .aws
        .account
        .clone()
        .or_else(|| context.account.clone());
    let region = context
        .region
        .clone()
        .or_else(|| compiled.aws.region.clone());
    let registry = compiled.aws.registry.clone().unwrap_or_else(|| {
        format!(
            "{}.dkr.ecr.{}.amazonaws.com",
            account.clone().unwrap_or_else(|| "<aws.account>".into()),
            region.clone().unwrap_or_else(|| "<aws.region>".into())
        )
    });
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    values.insert("git.ref".into(), trigger.git_ref.clone());
    values.insert("pipeline.name".into(), compiled.name.clone());
    values.insert("aws.registry".into(), registry.clone());
    for (name, value) in [
        ("release.tag", &trigger.tag),
        ("git.sha", &trigger.sha),
        ("git.short_sha", &trigger.short_sha),
        ("git.branch", &trigger.branch),
        ("run.id", &context.run_id),
        ("aws.region", &region),
        ("aws.account", &account),
    ] {
        if let Some(value) = value {
            values.insert(name.into(), value.clone());
        }
    }
    if let Some(version) = trigger.tag.as_ref().or(trigger.short_sha.as_ref()) {
        values.insert("release.version".into(), version.clone());
    }
    for (name, value) in &context.env {
        values.insert(format!("env.{name}"), value.clone());
    }
    // A branch (or commit) run of a pipeline that deploys releases builds and pushes only.
    let branch_run =
        (trigger.tag.is_none() || trigger.local_stand_in) && !pipeline.source.tags.is_empty();
    let mut left_out = Vec::new();
    for (name, value) in &context.outputs {
        values.insert(name.clone(), value.clone());
    }

    let builds: Vec<String> = pipeline
        .stages
        .iter()
        .filter(|stage| matches!(stage, Stage::Build(_)))
        .map(|stage| stage.name().to_owned())
        .collect();
    let mut images_so_far: Vec<String> = Vec::new();
    let mut steps = vec![Step::Source(SourceStep {
        name: "source".into(),
        url: names::clone_url(&pipeline.source.repository),
        reference: trigger.git_ref.clone(),
        expected_sha: trigger.sha.clone(),
        token_env: pipeline
            .source
            .token_env
            .clone()
            .unwrap_or_else(|| DEFAULT_TOKEN_ENV.into()),
        submodules: pipeline.source.submodules.unwrap_or(true),
    })];

    for stage in &pipeline.stages {
        let stage_name = stage.name().to_owned();
        let render = |text: &str| -> Result<String, PlanError> {
            render_text(text, &stage_name, &values, &trigger, compiled, &builds)
        };
        match stage {
            Stage::Build(build) => {
                let repository = format!("{registry}/{}", build.image);
                let tags_written = build
                    .tags
                    .clone()
                    .unwrap_or_else(|| vec!["${git.sha}".into(), "latest".into()]);
                let mut tags = Vec::new();
                // Without a release, the tags named after it are left out (never the run).
                let mut tags_written: Vec<String> = tags_written
                    .into_iter()
                    .filter(|tag| trigger.tag.is_some() || !template::uses(tag, "release.tag"))
                    .collect();
                if tags_written.is_empty() {
                    tags_written.push("${git.short_sha}".into());
                }
                for tag in &tags_written {
                    let tag = render(tag)?;
                    if !tag.contains('<')
                        && let Err(problem) = names::check_tag(&tag)
                    {
                        return Err(PlanError::BadTag {
                            stage: stage_name.clone(),
                            tag,
                            problem,
                        });
                    }
                    if !tags.contains(&tag) {
                        tags.push(tag);
                    }
                }
                let cache_from = build
                    .cache_from
                    .clone()
                    .unwrap_or_else(|| vec!["latest".into()])
                    .iter()
                    .map(|entry| {
                        let entry = render(entry)?;
                        Ok(if entry.contains('/') {
                            entry
                        } else {
                            format!("{repository}:{entry}")
                        })
                    })
                    .collect::<Result<Vec<_>, PlanError>>()?;
                let mut labels = BTreeMap::new();
                labels.insert(
                    "org.opencontainers.image.source".to_string(),
                    public_url(&names::clone_url(&pipeline.source.repository)),
                );
                labels.insert(
                    "org.opencontainers.image.revision".to_string(),
                    trigger.sha.clone().unwrap_or_else(|| "<git.sha>".into()),
                );
                labels.insert(
                    "org.opencontainers.image.version".to_string(),
                    trigger
                        .tag
                        .clone()
                        .or_else(|| trigger.short_sha.clone())
                        .unwrap_or_else(|| "<git.short_sha>".into()),
                );
                labels.insert(
                    "org.opencontainers.image.created".to_string(),
                    context
                        .created
                        .clone()
                        .unwrap_or_else(|| "<run start>".into()),
                );
                for (key, value) in &build.labels {
                    labels.insert(key.clone(), render(value)?);
                }
                let build_args = build
                    .build_args
                    .iter()
                    .map(|(key, value)| Ok((key.clone(), render(value)?)))
                    .collect::<Result<BTreeMap<_, _>, PlanError>>()?;
                let buildspec = build.buildspec.as_ref().map(|path| {
                    let spec = compiled.buildspecs.get(path);
                    BuildspecPlan {
                        path: path.clone(),
                        phases: spec
                            .map(|spec| {
                                spec.phases
                                    .in_order()
                                    .iter()
                                    .map(|(name, _)| name.to_string())
                                    .collect()
                            })
                            .unwrap_or_default(),
                        exported_variables: spec
                            .and_then(|spec| spec.env.as_ref())
                            .map(|env| env.exported_variables.clone())
                            .unwrap_or_default(),
                    }
                });
                let image = format!("{repository}@<{stage_name}.digest>");
                images_so_far.push(image.clone());
                let build_timeout =
                    timeout_of(build.timeout.as_deref(), crate::timeouts::BUILD_TIMEOUT);
                let idle_timeout = timeout_of(
                    build.idle_timeout.as_deref(),
                    crate::timeouts::BUILD_IDLE_TIMEOUT,
                );
                steps.push(Step::Build(Box::new(BuildStep {
                    name: stage_name.clone(),
                    repository: repository.clone(),
                    image_name: build.image.clone(),
                    context: build.context.clone().unwrap_or_else(|| ".".into()),
                    dockerfile: build
                        .dockerfile
                        .clone()
                        .unwrap_or_else(|| "Dockerfile".into()),
                    target: build.target.clone(),
                    platform: build.platform.clone(),
                    build_args,
                    secrets: build
                        .secrets
                        .iter()
                        .map(|secret| SecretRef {
                            id: secret.id.clone(),
                            from: match (&secret.env, &secret.file, &secret.aws_secret) {
                                (Some(env), _, _) => format!("env:{env}"),
                                (_, Some(file), _) => format!("file:{file}"),
                                (_, _, Some(id)) => format!("aws_secret:{id}"),
                                _ => String::new(),
                            },
                        })
                        .collect(),
                    labels,
                    cache_from,
                    tags: tags.clone(),
                    buildspec,
                    create_repository: build.create_repository.unwrap_or(false),
                    timeout: duration::format(build_timeout),
                    timeout_seconds: build_timeout.as_secs(),
                    idle_timeout: duration::format(idle_timeout),
                    idle_timeout_seconds: idle_timeout.as_secs(),
                })));
                steps.push(Step::Push(PushStep {
                    name: push_step_name(&stage_name),
                    build: stage_name.clone(),
                    repository,
                    tags,
                    image,
                }));
            }
            Stage::Approval(_) | Stage::Migrate(_) | Stage::Deploy(_) if branch_run => {
                left_out.push(stage_name.clone());
            }
            Stage::Approval(approval) => {
                let timeout = timeout_of(approval.timeout.as_deref(), DEFAULT_APPROVAL_TIMEOUT);
                steps.push(Step::Approval(ApprovalStep {
                    name: stage_name.clone(),
                    timeout: duration::format(timeout),
                    timeout_seconds: timeout.as_secs(),
                    notify_sns: approval
                        .notify
                        .as_ref()
                        .and_then(|n| n.sns.as_deref())
                        .map(render)
                        .transpose()?,
                    notify_webhook: approval
                        .notify
                        .as_ref()
                        .and_then(|n| n.webhook.as_deref())
                        .map(render)
                        .transpose()?,
                }));
            }
            Stage::Migrate(migrate) => {
                let timeout = timeout_of(migrate.timeout.as_deref(), DEFAULT_STAGE_TIMEOUT);
                steps.push(Step::Migrate(MigrateStep {
                    name: stage_name.clone(),
                    cluster: render(&migrate.cluster)?,
                    service: render(&migrate.service)?,
                    container: render(&migrate.container)?,
                    command: migrate
                        .command
                        .iter()
                        .map(|arg| render(arg))
                        .collect::<Result<_, _>>()?,
                    images: images_so_far.clone(),
                    timeout: duration::format(timeout),
                    timeout_seconds: timeout.as_secs(),
                }));
            }
            Stage::Deploy(deploy) => {
                let timeout = timeout_of(deploy.timeout.as_deref(), DEFAULT_STAGE_TIMEOUT);
                let services: Vec<String> = deploy
                    .services
                    .iter()
                    .map(|service| render(service))
                    .collect::<Result<_, _>>()?;
                steps.push(Step::Deploy(DeployStep {
                    name: stage_name.clone(),
                    cluster: render(&deploy.cluster)?,
                    images: images_so_far.clone(),
                    timeout: duration::format(timeout),
                    timeout_seconds: timeout.as_secs(),
                    on_failure: deploy.on_failure.unwrap_or(OnFailure::Rollback),
                    verify: deploy
                        .verify
                        .iter()
                        .map(|check| verify_step(check, &stage_name, &services, &render))
                        .collect::<Result<_, _>>()?,
                    services,
                }));
            }
        }
    }
    let notify = match &pipeline.notify {
        None => None,
        Some(notify) => {
            let render = |text: &Option<String>| {
                text.as_deref()
                    .map(|text| render_text(text, "notify", &values, &trigger, compiled, &builds))
                    .transpose()
            };
            let mut on = notify
                .on
                .clone()
                .unwrap_or_else(|| vec![RunEnding::Failure, RunEnding::Rollback]);
            on.sort();
            on.dedup();
            Some(NotifyPlan {
                on,
                sns: render(&notify.sns)?,
                webhook: render(&notify.webhook)?,
                webhook_env: notify.webhook_env.clone(),
                slack: render(&notify.slack)?,
                slack_env: notify.slack_env.clone(),
            })
        }
    };
    Ok(Plan {
        pipeline: compiled.name.clone(),
        environment: compiled.environment.clone(),
        file: compiled.file.path.display().to_string(),
        run_id: context.run_id.clone(),
        trigger,
        aws: AwsPlan {
            region,
            account,
            registry,
        },
        concurrency: pipeline.concurrency.unwrap_or(Concurrency::Queued),
        steps,
        notify,
        left_out,
    })
}
