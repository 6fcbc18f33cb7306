//! The deploy stage on ECS: every service of a release rolled to a new task definition
//! revision with the built image, judged by the deployment this run created, and on failure
//! every service rolled back to the revision it ran before, together.
//!
//! Success is "the deployment UpdateService returned is PRIMARY, its rolloutState is
//! COMPLETED and it runs as many tasks as it wants" — never "one deployment, running ==
//! desired", which is also what a service looks like after ECS rolled it back. A deployment
//! that ECS rolled back or replaced, a FAILED rollout, tasks that keep stopping and a timeout
//! are failures. Each poll is one DescribeServices call per 10 services.
//!
//! The steps are separate so that the caller can record each result before the next one:
//!
//! ```text
//! let mut deploy = Deploy::new(&aws, &request, recorded.unwrap_or_default());
//! deploy.prepare(&progress).await?;   // preflight + register; record deploy.record()
//! deploy.update(&progress).await?;    // UpdateService;        record deploy.record()
//! let report = deploy.wait(&progress).await?;
//! ```
//!
//! A resumed run passes the recorded [`DeployRecord`] back: registration and UpdateService
//! are skipped for the services that have their results recorded, and `wait` re-attaches to
//! the recorded deployments. Old revisions are never deregistered.

use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Write as _};
use std::time::Duration;

use aws_sdk_ecs::types::{Deployment, Service, TaskDefinition};
use aws_smithy_types::date_time::Format;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::fence::{self, Fence};
use super::reattach;
use super::taskdef::{NextRevision, TaskDefinitionDiff, next_revision};
use super::{Call, EcsAws, EcsError, PollSchedule};
pub use crate::pipeline::model::OnFailure;

/// DescribeServices accepts at most this many services per call.
pub const SERVICES_PER_CALL: usize = 10;

/// What to deploy.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub cluster: String,
    /// The services of the release; they succeed or roll back together.
    pub services: Vec<String>,
    /// The built images, `repository@sha256:…`.
    pub images: Vec<String>,
    pub run_id: String,
    pub stage: String,
    /// How long the rollout may take, from the start of `wait`.
    pub timeout: Duration,
    /// How long the rollback may take.
    pub rollback_timeout: Duration,
    pub on_failure: OnFailure,
    pub poll: PollSchedule,
}

/// What the deploy did so far, by service name: store it with the stage (the fields match
/// the run record's stage outputs) and pass it back on resume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRecord {
    /// The task definition each service ran before: the rollback target.
    #[serde(default)]
    pub previous_task_definitions: BTreeMap<String, String>,
    /// The revision registered for each service.
    #[serde(default)]
    pub task_definitions: BTreeMap<String, String>,
    /// The deployment id each UpdateService call created.
    #[serde(default)]
    pub deployments: BTreeMap<String, String>,
}

/// A service as preflight found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePreflight {
    pub service: String,
    pub task_definition: String,
    pub desired: i32,
    pub running: i32,
    /// `None` when the deployment circuit breaker is off.
    pub circuit_breaker: Option<CircuitBreaker>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreaker {
    /// Whether ECS itself rolls a failed deployment back.
    pub rollback: bool,
}

/// Whether a rollout moves a service forward or back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Deploy,
    Rollback,
}

/// Task counts of one deployment (or of all the older ones together).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentCounts {
    pub running: i32,
    pub desired: i32,
    pub pending: i32,
    pub failed: i32,
}

/// Where one service's rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRollout {
    pub service: String,
    pub phase: Phase,
    pub deployment_id: String,
    /// The deployment this run is waiting for.
    pub new: DeploymentCounts,
    /// Every other deployment that still has tasks (the one being replaced).
    pub old: DeploymentCounts,
    /// `IN_PROGRESS`, `COMPLETED`, `FAILED`, or empty when ECS reports none.
    pub rollout_state: String,
}

/// Live progress, for the run's events.
#[derive(Debug, Clone, PartialEq)]
pub enum DeployProgress {
    Preflight(ServicePreflight),
    Registered {
        service: String,
        task_definition: String,
        diff: TaskDefinitionDiff,
    },
    Updated {
        service: String,
        phase: Phase,
        deployment_id: String,
    },
    Rollout(ServiceRollout),
    /// A service event ECS wrote after this deploy started, oldest first.
    ServiceEvent {
        service: String,
        at: String,
        message: String,
    },
    /// One service reached its verdict.
    Finished {
        service: String,
        phase: Phase,
        outcome: Result<(), RolloutFailure>,
    },
    RollbackStarted {
        reason: String,
    },
}

/// Why a service's rollout did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutFailure {
    /// Our deployment is no longer PRIMARY: ECS rolled it back (circuit breaker) or a newer
    /// deployment replaced it.
    RolledBack {
        now_primary: Option<String>,
        reason: Option<String>,
    },
    /// ECS marked the rollout FAILED.
    Failed { reason: String },
    /// Tasks of the new deployment keep stopping and no circuit breaker will end it.
    TasksKeepStopping { failed_tasks: i32 },
    /// The service was deleted or is draining.
    ServiceGone { status: String },
    TimedOut {
        running: i32,
        desired: i32,
        rollout_state: String,
    },
    /// UpdateService itself failed.
    NotStarted { error: String },
}

impl fmt::Display for RolloutFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RolloutFailure::RolledBack {
                now_primary,
                reason,
            } => {
                write!(f, "ECS rolled the new deployment back")?;
                if let Some(reason) = reason.as_deref().filter(|r| !r.is_empty()) {
                    write!(f, " ({reason})")?;
                }
                if let Some(primary) = now_primary {
                    write!(f, "; it runs {primary} again")?;
                }
                Ok(())
            }
            RolloutFailure::Failed { reason } => {
                write!(f, "ECS marked the rollout FAILED: {reason}")
            }
            RolloutFailure::TasksKeepStopping { failed_tasks } => {
                write!(
                    f,
                    "{failed_tasks} tasks of the new revision stopped soon after starting"
                )
            }
            RolloutFailure::ServiceGone { status } => write!(f, "the service is {status}"),
            RolloutFailure::TimedOut {
                running,
                desired,
                rollout_state,
            } => write!(
                f,
                "timed out with {running} of {desired} new tasks running (rollout {})",
                if rollout_state.is_empty() {
                    "state unknown"
                } else {
                    rollout_state
                }
            ),
            RolloutFailure::NotStarted { error } => write!(f, "UpdateService failed: {error}"),
        }
    }
}

/// A deploy that succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployReport {
    pub services: Vec<DeployedService>,
    /// Polls of the wait; each made one DescribeServices call per 10 services.
    pub polls: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployedService {
    pub service: String,
    pub task_definition: String,
    pub deployment_id: String,
}

/// A deploy that failed, and what the rollback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployFailure {
    pub cluster: String,
    /// The services that failed, and why.
    pub failures: Vec<(String, RolloutFailure)>,
    /// `None` when `on_failure` is `stop`.
    pub rollback: Option<RollbackReport>,
}

/// Where each service of the release ended after the rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackReport {
    pub services: Vec<RolledBackService>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolledBackService {
    pub service: String,
    /// The revision it was rolled back to.
    pub task_definition: String,
    /// `None`: the service was never updated, so there was nothing to roll back.
    pub outcome: Option<Result<(), RolloutFailure>>,
}

impl RollbackReport {
    /// Whether every service runs its previous revision again.
    pub fn complete(&self) -> bool {
        self.services
            .iter()
            .all(|s| !matches!(s.outcome, Some(Err(_))))
    }
}

impl std::error::Error for DeployFailure {}

impl fmt::Display for DeployFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::from("the deploy failed:");
        for (service, failure) in &self.failures {
            let _ = write!(out, "\n  {service}: {failure}");
        }
        match &self.rollback {
            None => out.push_str(
                "\nThe stage's on_failure is `stop`: the services were left as they are. \
                 Check them in ECS before the next deploy.",
            ),
            Some(report) => {
                out.push_str(
                    "\nRolled back every service of the release to the revision it ran before:",
                );
                for service in &report.services {
                    let _ = write!(out, "\n  {}: ", service.service);
                    match &service.outcome {
                        None => {
                            let _ = write!(
                                out,
                                "not updated, still on {}",
                                short(&service.task_definition)
                            );
                        }
                        Some(Ok(())) => {
                            let _ = write!(
                                out,
                                "back on {} (rollback completed)",
                                short(&service.task_definition)
                            );
                        }
                        Some(Err(failure)) => {
                            let _ = write!(
                                out,
                                "rollback to {} did NOT complete: {failure}",
                                short(&service.task_definition)
                            );
                        }
                    }
                }
                if report.complete() {
                    out.push_str(
                        "\nAll services run their previous revisions. The service events above show \
                         what went wrong; fix the release and run the pipeline again.",
                    );
                } else {
                    let _ = write!(
                        out,
                        "\nSome services are not back on their previous revision: check them now \
                         (aws ecs describe-services --cluster {} --services …) and update them by hand \
                         if needed.",
                        self.cluster
                    );
                }
            }
        }
        f.write_str(&out)
    }
}

/// `family:revision` of a task definition ARN.
fn short(task_definition: &str) -> &str {
    task_definition
        .rsplit('/')
        .next()
        .unwrap_or(task_definition)
}

/// The verdict on one service at one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Judgement {
    Rolling,
    Completed,
    Failed(RolloutFailure),
}

/// Judges `service`'s rollout of deployment `deployment_id`. Pure.
pub(crate) fn judge(service: &Service, deployment_id: &str) -> Judgement {
    let status = service.status.as_deref().unwrap_or("");
    if status != "ACTIVE" {
        return Judgement::Failed(RolloutFailure::ServiceGone {
            status: if status.is_empty() {
                "gone".to_owned()
            } else {
                status.to_owned()
            },
        });
    }
    let deployments = service.deployments.as_deref().unwrap_or_default();
    let primary = deployments
        .iter()
        .find(|d| d.status.as_deref() == Some("PRIMARY"));
    let Some(ours) = deployments
        .iter()
        .find(|d| d.id.as_deref() == Some(deployment_id))
    else {
        return Judgement::Failed(RolloutFailure::RolledBack {
            now_primary: primary
                .and_then(|d| d.task_definition.as_deref())
                .map(|td| short(td).to_owned()),
            reason: Some(
                "the deployment this run created is gone; a newer one replaced it".to_owned(),
            ),
        });
    };
    let rollout_state = ours
        .rollout_state
        .as_ref()
        .map(|s| s.as_str())
        .unwrap_or("");
    if ours.status.as_deref() != Some("PRIMARY") {
        return Judgement::Failed(RolloutFailure::RolledBack {
            now_primary: primary
                .and_then(|d| d.task_definition.as_deref())
                .map(|td| short(td).to_owned()),
            reason: ours.rollout_state_reason.clone().filter(|r| !r.is_empty()),
        });
    }
    if rollout_state == "FAILED" {
        return Judgement::Failed(RolloutFailure::Failed {
            reason: ours
                .rollout_state_reason
                .clone()
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "no reason given".to_owned()),
        });
    }
    let breaker_enabled = service
        .deployment_configuration
        .as_ref()
        .and_then(|c| c.deployment_circuit_breaker.as_ref())
        .is_some_and(|b| b.enable);
    if !breaker_enabled && ours.failed_tasks >= failed_tasks_limit(ours.desired_count) {
        return Judgement::Failed(RolloutFailure::TasksKeepStopping {
            failed_tasks: ours.failed_tasks,
        });
    }
    let settled = ours.running_count == ours.desired_count;
    let completed = match rollout_state {
        "COMPLETED" => settled,
        // Without a rollout state (a service behind a Classic Load Balancer): settled and the
        // old deployments drained.
        "" => settled && deployments.len() == 1,
        _ => false,
    };
    if completed {
        Judgement::Completed
    } else {
        Judgement::Rolling
    }
}

/// With no circuit breaker, ECS keeps replacing crashing tasks forever; this many failed
/// tasks (ECS's own breaker threshold: at least 3, half the desired count, at most 200)
/// ends the wait early.
fn failed_tasks_limit(desired: i32) -> i32 {
    ((desired + 1) / 2).clamp(3, 200)
}

/// The counts of deployment `deployment_id` and of all the others together.
pub(crate) fn rollout_of(
    service: &Service,
    name: &str,
    phase: Phase,
    deployment_id: &str,
) -> ServiceRollout {
    let mut rollout = ServiceRollout {
        service: name.to_owned(),
        phase,
        deployment_id: deployment_id.to_owned(),
        new: DeploymentCounts::default(),
        old: DeploymentCounts::default(),
        rollout_state: String::new(),
    };
    for deployment in service.deployments.as_deref().unwrap_or_default() {
        let counts = counts(deployment);
        if deployment.id.as_deref() == Some(deployment_id) {
            rollout.new = counts;
            rollout.rollout_state = deployment
                .rollout_state
                .as_ref()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default();
        } else {
            rollout.old.running += counts.running;
            rollout.old.desired += counts.desired;
            rollout.old.pending += counts.pending;
            rollout.old.failed += counts.failed;
        }
    }
    rollout
}

fn counts(deployment: &Deployment) -> DeploymentCounts {
    DeploymentCounts {
        running: deployment.running_count,
        desired: deployment.desired_count,
        pending: deployment.pending_count,
        failed: deployment.failed_tasks,
    }
}

/// One service, described.
pub(crate) async fn describe_one(
    aws: &EcsAws,
    cluster: &str,
    service: &str,
) -> Result<Service, EcsError> {
    let output = aws
        .describe_services(cluster, &[service.to_owned()])
        .await?;
    let found = output.services.unwrap_or_default().into_iter().next();
    match found {
        Some(found) if found.status.as_deref() == Some("ACTIVE") => Ok(found),
        Some(found) => Err(EcsError::ServiceNotActive {
            cluster: cluster.to_owned(),
            service: service.to_owned(),
            status: found.status.unwrap_or_default(),
        }),
        None => Err(EcsError::ServiceNotFound {
            cluster: cluster.to_owned(),
            service: service.to_owned(),
        }),
    }
}

/// The task definition `service` runs, and its next revision with `images` swapped in.
pub(crate) async fn next_revision_for(
    aws: &EcsAws,
    name: &str,
    service: &Service,
    images: &[String],
) -> Result<(TaskDefinition, NextRevision), EcsError> {
    let current = service.task_definition.clone().unwrap_or_default();
    let described = aws.describe_task_definition(&current).await?;
    let next = next_revision(&described, images).map_err(|source| EcsError::TaskDefinition {
        service: name.to_owned(),
        source,
    })?;
    let task_definition = described
        .task_definition
        .expect("next_revision checked it is there");
    Ok((task_definition, next))
}

/// What a deploy of `images` would change in each service's task definition, without
/// registering anything: for the approval page.
pub async fn preview(
    aws: &EcsAws,
    cluster: &str,
    services: &[String],
    images: &[String],
) -> Result<Vec<(String, TaskDefinitionDiff)>, EcsError> {
    let described = describe_all(aws, cluster, services).await?;
    let mut diffs = Vec::new();
    for name in services {
        let service = &described[name];
        let (_, next) = next_revision_for(aws, name, service, images).await?;
        diffs.push((name.clone(), next.diff));
    }
    Ok(diffs)
}

/// Describes `services` (one call per 10) and checks each exists and is ACTIVE.
async fn describe_all(
    aws: &EcsAws,
    cluster: &str,
    services: &[String],
) -> Result<BTreeMap<String, Service>, EcsError> {
    let mut found = BTreeMap::new();
    for chunk in services.chunks(SERVICES_PER_CALL) {
        let output = aws.describe_services(cluster, chunk).await?;
        for service in output.services.unwrap_or_default() {
            if let Some(name) = service.service_name.clone() {
                found.insert(name, service);
            }
        }
    }
    for name in services {
        match found.get(name) {
            None => {
                return Err(EcsError::ServiceNotFound {
                    cluster: cluster.to_owned(),
                    service: name.clone(),
                });
            }
            Some(service) if service.status.as_deref() != Some("ACTIVE") => {
                return Err(EcsError::ServiceNotActive {
                    cluster: cluster.to_owned(),
                    service: name.clone(),
                    status: service.status.clone().unwrap_or_default(),
                });
            }
            Some(_) => {}
        }
    }
    Ok(found)
}

type Progress<'p> = &'p (dyn Fn(DeployProgress) + Send + Sync);

/// Runs one deploy; see the module documentation for the order of the steps.
pub struct Deploy<'a> {
    aws: &'a EcsAws,
    request: &'a DeployRequest,
    record: DeployRecord,
    /// Events already shown (or present before the deploy started), by service.
    seen_events: BTreeMap<String, HashSet<String>>,
    /// The last rollout progress shown, by service, to report changes only.
    last_rollout: BTreeMap<String, ServiceRollout>,
    /// The services as preflight found them.
    described: BTreeMap<String, Service>,
    polls: u32,
    /// Passed before every change (registration, UpdateService, rollback).
    fence: Option<&'a dyn Fence>,
}

impl<'a> Deploy<'a> {
    pub fn new(aws: &'a EcsAws, request: &'a DeployRequest, record: DeployRecord) -> Self {
        Deploy {
            aws,
            request,
            record,
            seen_events: BTreeMap::new(),
            last_rollout: BTreeMap::new(),
            described: BTreeMap::new(),
            polls: 0,
            fence: None,
        }
    }

    /// Makes every change pass `fence` first (see [`fence`]).
    pub fn fenced(mut self, fence: Option<&'a dyn Fence>) -> Self {
        self.fence = fence;
        self
    }

    /// What to store for a resume.
    pub fn record(&self) -> &DeployRecord {
        &self.record
    }

    /// Preflight (every service exists, is ACTIVE, wants tasks, uses the ECS deployment
    /// controller; circuit breaker state reported), then the new revision of each service's
    /// task definition, registered one per second. Services whose revision is recorded are
    /// not registered again. Checking that the image digest exists in the registry is the
    /// caller's job (the push stage verified it).
    pub async fn prepare(
        &mut self,
        progress: Progress<'_>,
    ) -> Result<Vec<ServicePreflight>, EcsError> {
        let cluster = self.request.cluster.clone();
        let described = describe_all(self.aws, &cluster, &self.request.services).await?;
        let mut preflights = Vec::new();
        for name in &self.request.services {
            let service = &described[name];
            if service.desired_count <= 0 {
                return Err(EcsError::ServiceScaledToZero {
                    cluster,
                    service: name.clone(),
                });
            }
            if let Some(controller) = service
                .deployment_controller
                .as_ref()
                .map(|c| c.r#type.as_str())
                && controller != "ECS"
            {
                return Err(EcsError::UnsupportedDeploymentController {
                    service: name.clone(),
                    controller: controller.to_owned(),
                });
            }
            let breaker = service
                .deployment_configuration
                .as_ref()
                .and_then(|c| c.deployment_circuit_breaker.as_ref())
                .filter(|b| b.enable)
                .map(|b| CircuitBreaker {
                    rollback: b.rollback,
                });
            let preflight = ServicePreflight {
                service: name.clone(),
                task_definition: service.task_definition.clone().unwrap_or_default(),
                desired: service.desired_count,
                running: service.running_count,
                circuit_breaker: breaker,
            };
            progress(DeployProgress::Preflight(preflight.clone()));
            preflights.push(preflight);
            self.remember_events(name, service);
        }

        // Services that share a task definition share its new revision.
        let mut registered: BTreeMap<String, String> = BTreeMap::new();
        for name in &self.request.services {
            if self.record.task_definitions.contains_key(name) {
                continue;
            }
            let service = &described[name];
            let previous = self
                .record
                .previous_task_definitions
                .get(name)
                .cloned()
                .unwrap_or_else(|| service.task_definition.clone().unwrap_or_default());
            let (_, mut next) =
                next_revision_for(self.aws, name, service, &self.request.images).await?;
            let arn = match registered.get(&previous) {
                Some(arn) => arn.clone(),
                None => self.register(name, &previous, &mut next).await?,
            };
            registered.insert(previous.clone(), arn.clone());
            progress(DeployProgress::Registered {
                service: name.clone(),
                task_definition: arn.clone(),
                diff: next.diff,
            });
            self.record
                .previous_task_definitions
                .insert(name.clone(), previous);
            self.record.task_definitions.insert(name.clone(), arn);
        }
        self.described = described;
        Ok(preflights)
    }

    /// Registers `next` for service `name` (whose revision was `previous`), or adopts the
    /// revision an earlier attempt of this run registered before it was killed.
    async fn register(
        &self,
        name: &str,
        previous: &str,
        next: &mut NextRevision,
    ) -> Result<String, EcsError> {
        let (run, stage) = (&self.request.run_id, &self.request.stage);
        if let Some(arn) = reattach::find_registered(self.aws, previous, run, stage).await? {
            return Ok(arn);
        }
        reattach::stamp(&mut next.input, run, stage);
        fence::check(
            self.fence,
            format!("register a task definition revision for service `{name}`"),
        )
        .await?;
        let td = self.aws.register(&next.input).await?;
        Ok(td.task_definition_arn.unwrap_or_default())
    }

    /// UpdateService to the new revision, for every service without a recorded deployment.
    /// If one fails, the services already updated are rolled back (per `on_failure`) and the
    /// error says where everything ended; if AWS gave no usable answer, nothing is rolled
    /// back (that would go unanswered too) and the error says which services are updated.
    pub async fn update(&mut self, progress: Progress<'_>) -> Result<(), EcsError> {
        if self.record.task_definitions.len() < self.request.services.len() {
            self.prepare(progress).await?;
        }
        let mut failures = Vec::new();
        for name in self.request.services.clone() {
            if self.record.deployments.contains_key(&name) {
                continue;
            }
            let target = self.record.task_definitions[&name].clone();
            match self.update_service(&name, &target, Phase::Deploy).await {
                Ok(deployment_id) => {
                    progress(DeployProgress::Updated {
                        service: name.clone(),
                        phase: Phase::Deploy,
                        deployment_id: deployment_id.clone(),
                    });
                    self.record.deployments.insert(name, deployment_id);
                }
                Err(error) if error.is_unanswered() => {
                    let (updated, pending) = self
                        .request
                        .services
                        .iter()
                        .cloned()
                        .partition(|service| self.record.deployments.contains_key(service));
                    return Err(EcsError::DeployInterrupted {
                        error: Box::new(error),
                        updated,
                        pending,
                    });
                }
                Err(error) => {
                    failures.push((
                        name,
                        RolloutFailure::NotStarted {
                            error: error.to_string(),
                        },
                    ));
                    break;
                }
            }
        }
        if failures.is_empty() {
            return Ok(());
        }
        Err(self.fail(failures, progress).await)
    }

    /// Waits for every service's deployment, one DescribeServices call per poll for up to 10
    /// services. On the first failure (or at the timeout) it stops waiting and, with
    /// `on_failure: rollback`, rolls every service of the release back and waits for that.
    pub async fn wait(&mut self, progress: Progress<'_>) -> Result<DeployReport, EcsError> {
        if self.record.deployments.len() < self.request.services.len() {
            self.update(progress).await?;
        }
        let targets: Vec<(String, String)> = self
            .request
            .services
            .iter()
            .map(|name| (name.clone(), self.record.deployments[name].clone()))
            .collect();
        let results = self
            .wait_for(&targets, Phase::Deploy, self.request.timeout, progress)
            .await?;
        let failures: Vec<(String, RolloutFailure)> = results
            .into_iter()
            .filter_map(|(name, result)| result.err().map(|failure| (name, failure)))
            .collect();
        if !failures.is_empty() {
            return Err(self.fail(failures, progress).await);
        }
        Ok(DeployReport {
            services: targets
                .into_iter()
                .map(|(service, deployment_id)| DeployedService {
                    task_definition: self.record.task_definitions[&service].clone(),
                    service,
                    deployment_id,
                })
                .collect(),
            polls: self.polls,
        })
    }

    /// prepare, update and wait in one call, for callers that record nothing in between.
    pub async fn run(&mut self, progress: Progress<'_>) -> Result<DeployReport, EcsError> {
        self.prepare(progress).await?;
        self.update(progress).await?;
        self.wait(progress).await
    }

    /// Polls so far (each one DescribeServices call per 10 services).
    pub fn polls(&self) -> u32 {
        self.polls
    }

    /// Turns failures into the stage's error, rolling back first when the policy says so.
    async fn fail(
        &mut self,
        failures: Vec<(String, RolloutFailure)>,
        progress: Progress<'_>,
    ) -> EcsError {
        let rollback = match self.request.on_failure {
            OnFailure::Stop => None,
            OnFailure::Rollback => {
                let reason = failures
                    .iter()
                    .map(|(service, failure)| format!("{service}: {failure}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                progress(DeployProgress::RollbackStarted { reason });
                Some(self.roll_back(progress).await)
            }
        };
        EcsError::Deploy(Box::new(DeployFailure {
            cluster: self.request.cluster.clone(),
            failures,
            rollback,
        }))
    }

    /// Puts every service of the release back on the revision it ran before, and waits.
    async fn roll_back(&mut self, progress: Progress<'_>) -> RollbackReport {
        let mut report = Vec::new();
        let mut targets = Vec::new();
        for name in self.request.services.clone() {
            let Some(previous) = self.record.previous_task_definitions.get(&name).cloned() else {
                continue;
            };
            if !self.record.deployments.contains_key(&name) {
                report.push(RolledBackService {
                    service: name,
                    task_definition: previous,
                    outcome: None,
                });
                continue;
            }
            match self.update_service(&name, &previous, Phase::Rollback).await {
                Ok(deployment_id) => {
                    progress(DeployProgress::Updated {
                        service: name.clone(),
                        phase: Phase::Rollback,
                        deployment_id: deployment_id.clone(),
                    });
                    targets.push((name.clone(), deployment_id));
                    report.push(RolledBackService {
                        service: name,
                        task_definition: previous,
                        outcome: Some(Ok(())),
                    });
                }
                Err(error) => report.push(RolledBackService {
                    service: name,
                    task_definition: previous,
                    outcome: Some(Err(RolloutFailure::NotStarted {
                        error: error.to_string(),
                    })),
                }),
            }
        }
        let results = match self
            .wait_for(
                &targets,
                Phase::Rollback,
                self.request.rollback_timeout,
                progress,
            )
            .await
        {
            Ok(results) => results,
            Err(error) => targets
                .iter()
                .map(|(name, _)| {
                    (
                        name.clone(),
                        Err(RolloutFailure::NotStarted {
                            error: format!("could not follow the rollback: {error}"),
                        }),
                    )
                })
                .collect(),
        };
        for (name, result) in results {
            if let Some(entry) = report.iter_mut().find(|s| s.service == name) {
                entry.outcome = Some(result);
            }
        }
        RollbackReport { services: report }
    }

    /// UpdateService to `task_definition`; returns the id of the PRIMARY deployment that runs
    /// it. When the service already runs it (a resumed run whose UpdateService went through,
    /// or ECS rolled back on its own), that deployment is adopted without a call.
    async fn update_service(
        &self,
        name: &str,
        task_definition: &str,
        phase: Phase,
    ) -> Result<String, EcsError> {
        let cluster = &self.request.cluster;
        if phase == Phase::Deploy
            && let Some(service) = self.described.get(name)
            && service.task_definition.as_deref() == Some(task_definition)
            && let Some(id) = deployment_running(service, task_definition)
        {
            return Ok(id);
        }
        let action = match phase {
            Phase::Deploy => "update the service to the new revision",
            Phase::Rollback => "roll the service back to its previous revision",
        };
        fence::check(
            self.fence,
            format!(
                "{action} (UpdateService of `{name}` to {})",
                short(task_definition)
            ),
        )
        .await?;
        let output = self
            .aws
            .call(
                Call::new(action, "ecs:UpdateService", name).idempotent(),
                || {
                    self.aws
                        .ecs()
                        .update_service()
                        .cluster(cluster)
                        .service(name)
                        .task_definition(task_definition)
                        .send()
                },
            )
            .await?;
        let service = output.service.ok_or_else(|| EcsError::Unexpected {
            what: format!("UpdateService for `{name}` returned no service"),
        })?;
        deployment_running(&service, task_definition).ok_or_else(|| EcsError::Unexpected {
            what: format!("after UpdateService, service `{name}` has no PRIMARY deployment of {task_definition}"),
        })
    }

    /// Polls until every target has a verdict, the first failure, or the timeout.
    async fn wait_for(
        &mut self,
        targets: &[(String, String)],
        phase: Phase,
        timeout: Duration,
        progress: Progress<'_>,
    ) -> Result<Vec<(String, Result<(), RolloutFailure>)>, EcsError> {
        let deadline = Instant::now() + timeout;
        let mut delays = self.request.poll.delays();
        let mut verdicts: BTreeMap<String, Result<(), RolloutFailure>> = BTreeMap::new();
        let mut latest: BTreeMap<String, Service> = BTreeMap::new();
        loop {
            let pending: Vec<String> = targets
                .iter()
                .filter(|(name, _)| !verdicts.contains_key(name))
                .map(|(name, _)| name.clone())
                .collect();
            if pending.is_empty() {
                break;
            }
            self.polls += 1;
            for chunk in pending.chunks(SERVICES_PER_CALL) {
                let output = self
                    .aws
                    .describe_services(&self.request.cluster, chunk)
                    .await?;
                let mut seen = HashSet::new();
                for service in output.services.unwrap_or_default() {
                    let Some(name) = service.service_name.clone() else {
                        continue;
                    };
                    let Some((_, deployment_id)) = targets.iter().find(|(n, _)| *n == name) else {
                        continue;
                    };
                    seen.insert(name.clone());
                    self.show_events(&name, &service, progress);
                    let rollout = rollout_of(&service, &name, phase, deployment_id);
                    if self.last_rollout.get(&name) != Some(&rollout) {
                        progress(DeployProgress::Rollout(rollout.clone()));
                        self.last_rollout.insert(name.clone(), rollout);
                    }
                    match judge(&service, deployment_id) {
                        Judgement::Rolling => {}
                        Judgement::Completed => {
                            progress(DeployProgress::Finished {
                                service: name.clone(),
                                phase,
                                outcome: Ok(()),
                            });
                            verdicts.insert(name.clone(), Ok(()));
                        }
                        Judgement::Failed(failure) => {
                            progress(DeployProgress::Finished {
                                service: name.clone(),
                                phase,
                                outcome: Err(failure.clone()),
                            });
                            verdicts.insert(name.clone(), Err(failure));
                        }
                    }
                    latest.insert(name, service);
                }
                for name in chunk {
                    if !seen.contains(name) {
                        let failure = RolloutFailure::ServiceGone {
                            status: "missing".to_owned(),
                        };
                        progress(DeployProgress::Finished {
                            service: name.clone(),
                            phase,
                            outcome: Err(failure.clone()),
                        });
                        verdicts.insert(name.clone(), Err(failure));
                    }
                }
            }
            // A failed deploy stops the wait at once: the rollback starts now, for all.
            if phase == Phase::Deploy && verdicts.values().any(Result::is_err) {
                break;
            }
            if verdicts.len() == targets.len() {
                break;
            }
            if Instant::now() >= deadline {
                for (name, deployment_id) in targets {
                    if verdicts.contains_key(name) {
                        continue;
                    }
                    let rollout = latest
                        .get(name)
                        .map(|service| rollout_of(service, name, phase, deployment_id));
                    let failure = RolloutFailure::TimedOut {
                        running: rollout.as_ref().map_or(0, |r| r.new.running),
                        desired: rollout.as_ref().map_or(0, |r| r.new.desired),
                        rollout_state: rollout.map(|r| r.rollout_state).unwrap_or_default(),
                    };
                    progress(DeployProgress::Finished {
                        service: name.clone(),
                        phase,
                        outcome: Err(failure.clone()),
                    });
                    verdicts.insert(name.clone(), Err(failure));
                }
                break;
            }
            let delay = delays.next().unwrap_or(self.request.poll.max);
            tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
        Ok(targets
            .iter()
            .filter_map(|(name, _)| verdicts.remove(name).map(|v| (name.clone(), v)))
            .collect())
    }

    fn remember_events(&mut self, name: &str, service: &Service) {
        let seen = self.seen_events.entry(name.to_owned()).or_default();
        for event in service.events.as_deref().unwrap_or_default() {
            if let Some(id) = &event.id {
                seen.insert(id.clone());
            }
        }
    }

    /// Emits the service's events not shown before, oldest first.
    fn show_events(&mut self, name: &str, service: &Service, progress: Progress<'_>) {
        let seen = self.seen_events.entry(name.to_owned()).or_default();
        let mut new = Vec::new();
        for event in service.events.as_deref().unwrap_or_default() {
            let Some(id) = &event.id else { continue };
            if seen.insert(id.clone()) {
                new.push(event);
            }
        }
        // ECS lists events newest first.
        for event in new.into_iter().rev() {
            progress(DeployProgress::ServiceEvent {
                service: name.to_owned(),
                at: event
                    .created_at
                    .and_then(|t| t.fmt(Format::DateTime).ok())
                    .unwrap_or_default(),
                message: event.message.clone().unwrap_or_default(),
            });
        }
    }
}

/// The id of the PRIMARY deployment that runs `task_definition`.
fn deployment_running(service: &Service, task_definition: &str) -> Option<String> {
    service
        .deployments
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|d| {
            d.status.as_deref() == Some("PRIMARY")
                && d.task_definition.as_deref() == Some(task_definition)
        })
        .and_then(|d| d.id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::{
        DeploymentCircuitBreaker, DeploymentConfiguration, DeploymentRolloutState,
    };

    const OLD_TD: &str = "arn:aws:ecs:eu-west-2:1:task-definition/envelope-prod-api:3";
    const NEW_TD: &str = "arn:aws:ecs:eu-west-2:1:task-definition/envelope-prod-api:4";

    /// (id, status, task definition, rollout state, running, desired, failed, reason)
    type D<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Option<&'a str>,
        i32,
        i32,
        i32,
        &'a str,
    );

    fn service(status: &str, breaker: bool, deployments: &[D<'_>]) -> Service {
        let mut builder = Service::builder()
            .service_name("envelope-prod-api")
            .status(status)
            .desired_count(2)
            .deployment_configuration(
                DeploymentConfiguration::builder()
                    .deployment_circuit_breaker(
                        DeploymentCircuitBreaker::builder()
                            .enable(breaker)
                            .rollback(breaker)
                            .build(),
                    )
                    .build(),
            );
        for (id, status, td, state, running, desired, failed, reason) in deployments {
            builder = builder.deployments(
                Deployment::builder()
                    .id(*id)
                    .status(*status)
                    .task_definition(*td)
                    .set_rollout_state(state.map(DeploymentRolloutState::from))
                    .running_count(*running)
                    .desired_count(*desired)
                    .failed_tasks(*failed)
                    .rollout_state_reason(*reason)
                    .build(),
            );
        }
        builder.build()
    }

    #[test]
    fn only_our_primary_completed_and_settled_deployment_is_success() {
        use Judgement::*;
        let ours = "ecs-svc/ours";
        let cases: Vec<(&str, Service, Judgement)> = vec![
            (
                "rolling: new tasks starting, old ones still running",
                service("ACTIVE", true, &[
                    (ours, "PRIMARY", NEW_TD, Some("IN_PROGRESS"), 1, 2, 0, ""),
                    ("ecs-svc/old", "ACTIVE", OLD_TD, Some("COMPLETED"), 2, 2, 0, ""),
                ]),
                Rolling,
            ),
            (
                "completed and settled",
                service("ACTIVE", true, &[(ours, "PRIMARY", NEW_TD, Some("COMPLETED"), 2, 2, 0, "ECS deployment completed.")]),
                Completed,
            ),
            (
                "COMPLETED with fewer tasks than wanted (a brand-new service reads like this)",
                service("ACTIVE", true, &[(ours, "PRIMARY", NEW_TD, Some("COMPLETED"), 0, 2, 0, "")]),
                Rolling,
            ),
            (
                "the circuit breaker rolled it back: one deployment, running == desired, and still a failure",
                service("ACTIVE", true, &[
                    ("ecs-svc/old", "PRIMARY", OLD_TD, Some("COMPLETED"), 2, 2, 0, ""),
                    (ours, "ACTIVE", NEW_TD, Some("FAILED"), 0, 0, 3, "ECS deployment circuit breaker was triggered after 3 consecutive task failures."),
                ]),
                Failed(RolloutFailure::RolledBack {
                    now_primary: Some("envelope-prod-api:3".into()),
                    reason: Some("ECS deployment circuit breaker was triggered after 3 consecutive task failures.".into()),
                }),
            ),
            (
                "rolled back and our deployment already dropped from the list",
                service("ACTIVE", true, &[("ecs-svc/old", "PRIMARY", OLD_TD, Some("COMPLETED"), 2, 2, 0, "")]),
                Failed(RolloutFailure::RolledBack {
                    now_primary: Some("envelope-prod-api:3".into()),
                    reason: Some("the deployment this run created is gone; a newer one replaced it".into()),
                }),
            ),
            (
                "someone else deployed on top",
                service("ACTIVE", true, &[
                    ("ecs-svc/theirs", "PRIMARY", "arn:aws:ecs:eu-west-2:1:task-definition/envelope-prod-api:5", Some("IN_PROGRESS"), 0, 2, 0, ""),
                    (ours, "ACTIVE", NEW_TD, Some("IN_PROGRESS"), 1, 2, 0, ""),
                ]),
                Failed(RolloutFailure::RolledBack { now_primary: Some("envelope-prod-api:5".into()), reason: None }),
            ),
            (
                "FAILED without rollback",
                service("ACTIVE", true, &[(ours, "PRIMARY", NEW_TD, Some("FAILED"), 0, 0, 3, "circuit breaker")]),
                Failed(RolloutFailure::Failed { reason: "circuit breaker".into() }),
            ),
            (
                "no breaker: tasks keep stopping",
                service("ACTIVE", false, &[
                    (ours, "PRIMARY", NEW_TD, Some("IN_PROGRESS"), 0, 2, 3, ""),
                    ("ecs-svc/old", "ACTIVE", OLD_TD, Some("COMPLETED"), 2, 2, 0, ""),
                ]),
                Failed(RolloutFailure::TasksKeepStopping { failed_tasks: 3 }),
            ),
            (
                "breaker on: a few failed tasks are ECS's to judge",
                service("ACTIVE", true, &[
                    (ours, "PRIMARY", NEW_TD, Some("IN_PROGRESS"), 0, 2, 3, ""),
                    ("ecs-svc/old", "ACTIVE", OLD_TD, Some("COMPLETED"), 2, 2, 0, ""),
                ]),
                Rolling,
            ),
            (
                "no rollout state: settled only once the old deployment drained",
                service("ACTIVE", false, &[
                    (ours, "PRIMARY", NEW_TD, None, 2, 2, 0, ""),
                    ("ecs-svc/old", "ACTIVE", OLD_TD, None, 1, 0, 0, ""),
                ]),
                Rolling,
            ),
            (
                "no rollout state, drained",
                service("ACTIVE", false, &[(ours, "PRIMARY", NEW_TD, None, 2, 2, 0, "")]),
                Completed,
            ),
            (
                "service deleted",
                service("INACTIVE", true, &[(ours, "PRIMARY", NEW_TD, Some("IN_PROGRESS"), 0, 2, 0, "")]),
                Failed(RolloutFailure::ServiceGone { status: "INACTIVE".into() }),
            ),
        ];
        for (name, service, expected) in cases {
            assert_eq!(judge(&service, ours), expected, "{name}");
        }
    }

    #[test]
    fn rollout_progress_splits_ours_from_the_rest() {
        let service = service(
            "ACTIVE",
            true,
            &[
                (
                    "ecs-svc/ours",
                    "PRIMARY",
                    NEW_TD,
                    Some("IN_PROGRESS"),
                    1,
                    2,
                    0,
                    "",
                ),
                (
                    "ecs-svc/old",
                    "ACTIVE",
                    OLD_TD,
                    Some("COMPLETED"),
                    2,
                    2,
                    0,
                    "",
                ),
            ],
        );
        let rollout = rollout_of(&service, "envelope-prod-api", Phase::Deploy, "ecs-svc/ours");
        assert_eq!(
            rollout.new,
            DeploymentCounts {
                running: 1,
                desired: 2,
                pending: 0,
                failed: 0
            }
        );
        assert_eq!(
            rollout.old,
            DeploymentCounts {
                running: 2,
                desired: 2,
                pending: 0,
                failed: 0
            }
        );
        assert_eq!(rollout.rollout_state, "IN_PROGRESS");
    }

    #[test]
    fn the_failed_tasks_limit_follows_ecs_breaker_thresholds() {
        for (desired, limit) in [(1, 3), (2, 3), (6, 3), (7, 4), (10, 5), (1000, 200)] {
            assert_eq!(failed_tasks_limit(desired), limit, "desired {desired}");
        }
    }

    #[test]
    fn the_failure_message_reports_both_outcomes() {
        let failure = DeployFailure {
            cluster: "envelope-prod-cluster".into(),
            failures: vec![(
                "envelope-prod-worker".into(),
                RolloutFailure::RolledBack {
                    now_primary: Some("envelope-prod-worker:7".into()),
                    reason: Some("ECS deployment circuit breaker was triggered after 3 consecutive task failures.".into()),
                },
            )],
            rollback: Some(RollbackReport {
                services: vec![
                    RolledBackService {
                        service: "envelope-prod-api".into(),
                        task_definition: OLD_TD.into(),
                        outcome: Some(Ok(())),
                    },
                    RolledBackService {
                        service: "envelope-prod-worker".into(),
                        task_definition: "arn:aws:ecs:eu-west-2:1:task-definition/envelope-prod-worker:7".into(),
                        outcome: Some(Err(RolloutFailure::TimedOut { running: 0, desired: 1, rollout_state: "IN_PROGRESS".into() })),
                    },
                    RolledBackService {
                        service: "envelope-prod-reverb".into(),
                        task_definition: "arn:aws:ecs:eu-west-2:1:task-definition/envelope-prod-reverb:2".into(),
                        outcome: None,
                    },
                ],
            }),
        };
        let text = failure.to_string();
        assert_eq!(
            text,
            "the deploy failed:\n  \
             envelope-prod-worker: ECS rolled the new deployment back (ECS deployment circuit breaker was triggered after 3 consecutive task failures.); it runs envelope-prod-worker:7 again\n\
             Rolled back every service of the release to the revision it ran before:\n  \
             envelope-prod-api: back on envelope-prod-api:3 (rollback completed)\n  \
             envelope-prod-worker: rollback to envelope-prod-worker:7 did NOT complete: timed out with 0 of 1 new tasks running (rollout IN_PROGRESS)\n  \
             envelope-prod-reverb: not updated, still on envelope-prod-reverb:2\n\
             Some services are not back on their previous revision: check them now (aws ecs describe-services --cluster envelope-prod-cluster --services …) and update them by hand if needed."
        );
    }
}
