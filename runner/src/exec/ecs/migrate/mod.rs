//! The migrate stage on ECS: a one-off task from a new revision of the service's task
//! definition, on the service's own network, with a command override for one container.
//!
//! It is judged the way a person reading the task would: the named container's exit code
//! together with the task's stop code. A task that never started (`TaskFailedToStart`), one
//! stopped from outside, or one without an exit code is a failure, never "exit 0". Its
//! CloudWatch log lines are streamed while it runs and drained after it stops, until two
//! reads in a row bring nothing new, so the last lines are never lost.
//!
//! The steps are separate so that the caller can record each result before the next one:
//!
//! ```text
//! let mut migration = Migration::new(&aws, &request, recorded.unwrap_or_default());
//! migration.register(&progress).await?;   // record migration.record()
//! migration.start(&progress).await?;      // record migration.record()
//! let outcome = migration.wait(&progress).await?;
//! ```
//!
//! Each step does nothing when the record already holds its result, so a resumed run passes
//! the recorded [`MigrationRecord`] back and re-attaches to its task instead of starting a
//! second one.

mod start;
mod verdict;
mod wait;

use std::time::Duration;

use aws_sdk_ecs::types::{Service, TaskDefinition};
use serde::{Deserialize, Serialize};

use super::fence::Fence;
use super::taskdef::TaskDefinitionDiff;
use super::{EcsAws, EcsError, PollSchedule, started_by};
use start::client_token;

/// How many log lines a failed migration's error shows.
pub const LAST_LINES: usize = 20;

/// What to run.
#[derive(Debug, Clone)]
pub struct MigrationRequest {
    pub cluster: String,
    /// The service whose task definition and network configuration the task uses.
    pub service: String,
    /// The container whose command is overridden and whose exit code decides.
    pub container: String,
    pub command: Vec<String>,
    /// The built images, `repository@sha256:…`, swapped into the task definition.
    pub images: Vec<String>,
    pub run_id: String,
    pub pipeline: String,
    pub stage: String,
    pub timeout: Duration,
    pub poll: PollSchedule,
}

impl MigrationRequest {
    /// `startedBy` of the task: names the run, at most 36 characters.
    pub fn started_by(&self) -> String {
        started_by(&self.run_id)
    }

    /// RunTask's idempotency token: the same run and stage always send the same token, so a
    /// repeated call returns the task the first one started.
    pub fn client_token(&self) -> String {
        client_token(&self.run_id, &self.stage)
    }
}

/// What the migration did so far: store it with the stage and pass it back on resume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationRecord {
    /// The task definition revision registered for the migration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_definition: Option<String>,
    /// The task RunTask started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_arn: Option<String>,
}

/// Live progress, for the run's events.
#[derive(Debug, Clone, PartialEq)]
pub enum MigrationProgress {
    Registered {
        task_definition: String,
        diff: TaskDefinitionDiff,
    },
    Started {
        task_arn: String,
        /// True when an earlier attempt's task was found and followed instead.
        reattached: bool,
    },
    /// The task's lastStatus changed (PROVISIONING, PENDING, RUNNING, STOPPED, …).
    Status {
        task_arn: String,
        status: String,
    },
    /// One line the container wrote.
    Log {
        line: String,
    },
    Notice {
        message: String,
    },
}

/// A migration that succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationOutcome {
    pub task_arn: String,
    pub task_definition: String,
    /// Always 0: any other exit code is an error.
    pub exit_code: i32,
    /// `group stream` of its log, when it has one.
    pub log_stream: Option<String>,
    pub log_lines: usize,
}

/// Runs one migration; see the module documentation for the order of the steps.
pub struct Migration<'a> {
    aws: &'a EcsAws,
    request: &'a MigrationRequest,
    record: MigrationRecord,
    service: Option<Service>,
    task_definition: Option<TaskDefinition>,
    /// Passed before every change (registration, RunTask).
    fence: Option<&'a dyn Fence>,
}

impl<'a> Migration<'a> {
    /// Makes every change pass `fence` first (see [`fence`](super::fence)).
    pub fn fenced(mut self, fence: Option<&'a dyn Fence>) -> Self {
        self.fence = fence;
        self
    }

    pub fn new(aws: &'a EcsAws, request: &'a MigrationRequest, record: MigrationRecord) -> Self {
        Migration {
            aws,
            request,
            record,
            service: None,
            task_definition: None,
            fence: None,
        }
    }

    /// What to store for a resume.
    pub fn record(&self) -> &MigrationRecord {
        &self.record
    }

    /// register, start and wait in one call, for callers that record nothing in between.
    pub async fn run(
        &mut self,
        progress: &(dyn Fn(MigrationProgress) + Send + Sync),
    ) -> Result<MigrationOutcome, EcsError> {
        self.register(progress).await?;
        self.start(progress).await?;
        self.wait(progress).await
    }
}
