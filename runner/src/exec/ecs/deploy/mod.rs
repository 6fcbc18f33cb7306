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
//! With [`Deploy::verified`], `wait` then runs the stage's checks (HTTP of URLs and of every
//! new task at its own address, the health of every new task in its service's target
//! groups, and CloudWatch alarms watched for a while); a check that does not pass fails the
//! release like a failed rollout.
//!
//! A resumed run passes the recorded [`DeployRecord`] back: registration and UpdateService
//! are skipped for the services that have their results recorded, and `wait` re-attaches to
//! the recorded deployments. Old revisions are never deregistered.

mod alarm_checks;
mod failure;
mod judge;
mod pace;
mod preflight;
mod rollback;
mod target_group_checks;
mod task_checks;
mod update;
mod verify;
mod wait;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use aws_sdk_ecs::types::Service;
use serde::{Deserialize, Serialize};

use super::fence::Fence;
use super::taskdef::TaskDefinitionDiff;
use super::{EcsAws, EcsError, PollSchedule};
use crate::exec::verify::{Check, CheckReport};
pub use crate::pipeline::model::OnFailure;
use crate::redact::Redactor;
pub use failure::{DeployFailure, RollbackReport, RolledBackService, RolloutFailure};
pub use preflight::preview;
pub(crate) use preflight::{describe_one, next_revision_for};

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
    /// A `verify:` check reached its verdict.
    Verified(CheckReport),
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

/// `family:revision` of a task definition ARN.
fn short(task_definition: &str) -> &str {
    task_definition
        .rsplit('/')
        .next()
        .unwrap_or(task_definition)
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
    /// HTTP checks (of URLs and of the new tasks) run once every rollout completed (see
    /// [`verify`]).
    checks: Vec<Check>,
    redactor: Redactor,
    check_reports: Vec<CheckReport>,
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
            checks: Vec::new(),
            redactor: Redactor::default(),
            check_reports: Vec::new(),
        }
    }

    /// Makes every change pass `fence` first (see [`fence`](super::fence)).
    pub fn fenced(mut self, fence: Option<&'a dyn Fence>) -> Self {
        self.fence = fence;
        self
    }

    /// What to store for a resume.
    pub fn record(&self) -> &DeployRecord {
        &self.record
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
}
