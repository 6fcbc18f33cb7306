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

use std::time::Duration;

use aws_sdk_ecs::types::{
    ContainerOverride, DesiredStatus, Service, Tag, Task, TaskDefinition, TaskOverride,
};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::fence::{self, Fence};
use super::logs::{AwsLogsTarget, LogTail};
use super::reattach;
use super::taskdef::TaskDefinitionDiff;
use super::{Call, EcsAws, EcsError, PollSchedule, deploy, started_by};

/// How many log lines a failed migration's error shows.
pub const LAST_LINES: usize = 20;

/// After the task stopped, the log is read until this many reads in a row bring nothing.
const DRAIN_EMPTY_READS: u32 = 2;
/// The pause between those reads: awslogs delivers a container's last lines a little after
/// the container exits.
const DRAIN_PAUSE: Duration = Duration::from_millis(1500);
/// Draining gives up after this long even if lines keep coming.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

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

/// How a stopped task is judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Succeeded,
    Exited { code: i32, reason: Option<String> },
    FailedToStart { reason: String },
    Interrupted { stop_code: String, reason: String },
    NoExitCode { stop_code: String, reason: String },
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
    /// Makes every change pass `fence` first (see [`fence`]).
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

    /// Registers the migration's task definition revision (skipped when recorded).
    pub async fn register(
        &mut self,
        progress: &(dyn Fn(MigrationProgress) + Send + Sync),
    ) -> Result<(), EcsError> {
        if self.record.task_definition.is_some() {
            return Ok(());
        }
        let service = self.service().await?.clone();
        let (current, next) = deploy::next_revision_for(
            self.aws,
            &self.request.service,
            &service,
            &self.request.images,
        )
        .await?;
        check_container(&current, &self.request.container)?;
        let (run, stage) = (&self.request.run_id, &self.request.stage);
        let based_on = service.task_definition.clone().unwrap_or_default();
        if let Some(arn) = reattach::find_registered(self.aws, &based_on, run, stage).await? {
            // An earlier attempt registered it and was killed before recording it.
            progress(MigrationProgress::Registered {
                task_definition: arn.clone(),
                diff: next.diff,
            });
            self.record.task_definition = Some(arn);
            return Ok(());
        }
        let mut input = next.input;
        reattach::stamp(&mut input, run, stage);
        fence::check(
            self.fence,
            format!(
                "register the migration's task definition revision (service `{}`)",
                self.request.service
            ),
        )
        .await?;
        let registered = self.aws.register(&input).await?;
        let arn = registered.task_definition_arn.clone().unwrap_or_default();
        progress(MigrationProgress::Registered {
            task_definition: arn.clone(),
            diff: next.diff,
        });
        self.record.task_definition = Some(arn);
        self.task_definition = Some(registered);
        Ok(())
    }

    /// Starts the task (skipped when recorded). Before starting, and before repeating a
    /// RunTask whose answer was lost, it looks for a task this run already started
    /// (`startedBy`), so a retried or resumed run never starts a second migration even where
    /// the client token is not honoured.
    pub async fn start(
        &mut self,
        progress: &(dyn Fn(MigrationProgress) + Send + Sync),
    ) -> Result<(), EcsError> {
        if self.record.task_arn.is_some() {
            return Ok(());
        }
        self.register(progress).await?;
        let task_definition = self
            .record
            .task_definition
            .clone()
            .expect("registered above");
        if let Some(task_arn) = self.find_started().await? {
            progress(MigrationProgress::Started {
                task_arn: task_arn.clone(),
                reattached: true,
            });
            self.record.task_arn = Some(task_arn);
            return Ok(());
        }
        let service = self.service().await?.clone();
        let request = self.request;
        let overrides = TaskOverride::builder()
            .container_overrides(
                ContainerOverride::builder()
                    .name(&request.container)
                    .set_command(Some(request.command.clone()))
                    .build(),
            )
            .build();
        let tags = vec![
            Tag::builder()
                .key("envelope:run")
                .value(&request.run_id)
                .build(),
            Tag::builder()
                .key("envelope:pipeline")
                .value(&request.pipeline)
                .build(),
            Tag::builder()
                .key("envelope:stage")
                .value(&request.stage)
                .build(),
        ];
        let strategy = service
            .capacity_provider_strategy
            .clone()
            .filter(|s| !s.is_empty());
        let launch_type = if strategy.is_some() {
            None
        } else {
            service.launch_type.clone()
        };
        let platform_version = service.platform_version.clone().filter(|v| !v.is_empty());
        let target = format!("{} in {}", task_definition, request.cluster);
        fence::check(
            self.fence,
            format!("start the migration task (RunTask of {target})"),
        )
        .await?;
        let mut attempts = 0;
        let output = loop {
            attempts += 1;
            let result = self
                .aws
                .call(
                    Call::new("start the migration task", "ecs:RunTask", &target),
                    || {
                        self.aws
                            .ecs()
                            .run_task()
                            .cluster(&request.cluster)
                            .task_definition(&task_definition)
                            .count(1)
                            .started_by(request.started_by())
                            .client_token(request.client_token())
                            .overrides(overrides.clone())
                            .set_network_configuration(service.network_configuration.clone())
                            .set_launch_type(launch_type.clone())
                            .set_capacity_provider_strategy(strategy.clone())
                            .set_platform_version(platform_version.clone())
                            .set_tags(Some(tags.clone()))
                            .send()
                    },
                )
                .await;
            match result {
                Ok(output) => break output,
                Err(EcsError::Aws {
                    transient: true, ..
                }) if attempts < 3 => {
                    // The lost request may have started the task: look before asking again.
                    if let Some(task_arn) = self.find_started().await? {
                        progress(MigrationProgress::Started {
                            task_arn: task_arn.clone(),
                            reattached: true,
                        });
                        self.record.task_arn = Some(task_arn);
                        return Ok(());
                    }
                }
                Err(error) => return Err(error),
            }
        };
        let failures: Vec<String> = output
            .failures
            .unwrap_or_default()
            .into_iter()
            .map(|f| {
                format!(
                    "{}{}",
                    f.reason.unwrap_or_else(|| "unknown reason".to_owned()),
                    f.detail.map(|d| format!(" ({d})")).unwrap_or_default()
                )
            })
            .collect();
        let Some(task_arn) = output
            .tasks
            .unwrap_or_default()
            .into_iter()
            .find_map(|task| task.task_arn)
        else {
            return Err(EcsError::RunTaskRefused {
                reasons: if failures.is_empty() {
                    "RunTask returned neither a task nor a reason".to_owned()
                } else {
                    failures.join("; ")
                },
            });
        };
        progress(MigrationProgress::Started {
            task_arn: task_arn.clone(),
            reattached: false,
        });
        self.record.task_arn = Some(task_arn);
        Ok(())
    }

    /// Follows the task until it stops (or the timeout passes), streaming its log lines, and
    /// judges it.
    pub async fn wait(
        &mut self,
        progress: &(dyn Fn(MigrationProgress) + Send + Sync),
    ) -> Result<MigrationOutcome, EcsError> {
        if self.record.task_arn.is_none() {
            self.start(progress).await?;
        }
        let task_arn = self.record.task_arn.clone().expect("started above");
        let task_definition_arn = self.record.task_definition.clone().unwrap_or_default();
        let task_definition = self.task_definition().await?;
        let container = task_definition
            .container_definitions
            .iter()
            .flatten()
            .find(|c| c.name.as_deref() == Some(self.request.container.as_str()))
            .cloned();
        let essential = container.as_ref().and_then(|c| c.essential).unwrap_or(true);
        let target = container.as_ref().and_then(AwsLogsTarget::of);
        let mut tail = match target
            .as_ref()
            .and_then(|t| Some((t, t.stream(&task_arn)?)))
        {
            Some((target, stream)) => Some(LogTail::new(self.aws, target, stream, LAST_LINES)),
            None => {
                progress(MigrationProgress::Notice {
                    message: format!(
                        "container `{}` has no awslogs log configuration with a stream prefix; its output is not shown",
                        self.request.container
                    ),
                });
                None
            }
        };
        let mut lines_seen = 0;
        let deadline = Instant::now() + self.request.timeout;
        let mut delays = self.request.poll.delays();
        let mut last_status = String::new();
        let verdict = loop {
            let task = self.describe_task(&task_arn).await?;
            let status = task.last_status.clone().unwrap_or_default();
            if status != last_status {
                progress(MigrationProgress::Status {
                    task_arn: task_arn.clone(),
                    status: status.clone(),
                });
                last_status = status;
            }
            if let Some(tail) = tail.as_mut() {
                for line in tail.read_available(self.aws).await? {
                    lines_seen += 1;
                    progress(MigrationProgress::Log { line });
                }
            }
            if let Some(verdict) = judge(&task, &self.request.container, essential) {
                if task.last_status.as_deref() != Some("STOPPED") {
                    // The named container finished but a sidecar keeps the task alive.
                    let _ = self
                        .stop_task(
                            &task_arn,
                            "envelope-runner: the migration container finished",
                        )
                        .await;
                }
                break verdict;
            }
            if Instant::now() >= deadline {
                let stopped = self
                    .stop_task(&task_arn, "envelope-runner: the migration timed out")
                    .await
                    .is_ok();
                if let Some(tail) = tail.as_mut() {
                    drain(self.aws, tail, progress).await?;
                }
                return Err(EcsError::MigrationTimedOut {
                    task: task_arn,
                    waited: self.request.timeout,
                    stopped,
                });
            }
            let delay = delays.next().unwrap_or(self.request.poll.max);
            tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
        };
        if let Some(tail) = tail.as_mut() {
            lines_seen += drain(self.aws, tail, progress).await?;
        }
        let container_name = self.request.container.clone();
        match verdict {
            Verdict::Succeeded => Ok(MigrationOutcome {
                task_arn,
                task_definition: task_definition_arn,
                exit_code: 0,
                log_stream: tail.as_ref().map(LogTail::location),
                log_lines: lines_seen,
            }),
            Verdict::Exited { code, reason } => Err(EcsError::MigrationFailed {
                task: task_arn,
                container: container_name,
                exit_code: code,
                reason,
                last_lines: tail.as_ref().map(LogTail::last_lines).unwrap_or_default(),
                log_stream: tail.as_ref().map(LogTail::location),
            }),
            Verdict::FailedToStart { reason } => Err(EcsError::MigrationFailedToStart {
                task: task_arn,
                reason,
            }),
            Verdict::Interrupted { stop_code, reason } => Err(EcsError::MigrationInterrupted {
                task: task_arn,
                container: container_name,
                stop_code,
                reason,
            }),
            Verdict::NoExitCode { stop_code, reason } => Err(EcsError::MigrationNoExitCode {
                task: task_arn,
                container: container_name,
                stop_code,
                reason,
            }),
        }
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

    async fn service(&mut self) -> Result<&Service, EcsError> {
        if self.service.is_none() {
            let service =
                deploy::describe_one(self.aws, &self.request.cluster, &self.request.service)
                    .await?;
            self.service = Some(service);
        }
        Ok(self.service.as_ref().expect("set above"))
    }

    async fn task_definition(&mut self) -> Result<TaskDefinition, EcsError> {
        if let Some(td) = &self.task_definition {
            return Ok(td.clone());
        }
        let arn = self.record.task_definition.clone().unwrap_or_default();
        let described = self.aws.describe_task_definition(&arn).await?;
        let td = described
            .task_definition
            .ok_or_else(|| EcsError::Unexpected {
                what: format!("DescribeTaskDefinition returned nothing for {arn}"),
            })?;
        self.task_definition = Some(td.clone());
        Ok(td)
    }

    /// A task this run already started, running or stopped.
    async fn find_started(&self) -> Result<Option<String>, EcsError> {
        let started_by = self.request.started_by();
        for status in [DesiredStatus::Running, DesiredStatus::Stopped] {
            let output = self
                .aws
                .call(
                    Call::new(
                        "look for a migration task this run started",
                        "ecs:ListTasks",
                        &started_by,
                    )
                    .idempotent(),
                    || {
                        self.aws
                            .ecs()
                            .list_tasks()
                            .cluster(&self.request.cluster)
                            .started_by(&started_by)
                            .desired_status(status.clone())
                            .send()
                    },
                )
                .await?;
            if let Some(arn) = output.task_arns.unwrap_or_default().into_iter().next() {
                return Ok(Some(arn));
            }
        }
        Ok(None)
    }

    async fn describe_task(&self, task_arn: &str) -> Result<Task, EcsError> {
        let output = self
            .aws
            .call(
                Call::new("follow the migration task", "ecs:DescribeTasks", task_arn).idempotent(),
                || {
                    self.aws
                        .ecs()
                        .describe_tasks()
                        .cluster(&self.request.cluster)
                        .tasks(task_arn)
                        .send()
                },
            )
            .await?;
        output
            .tasks
            .unwrap_or_default()
            .into_iter()
            .next()
            .ok_or_else(|| EcsError::Unexpected {
                what: format!(
                    "ECS no longer knows the migration task {task_arn} (stopped tasks are forgotten after about an hour)"
                ),
            })
    }

    async fn stop_task(&self, task_arn: &str, reason: &str) -> Result<(), EcsError> {
        self.aws
            .call(
                Call::new("stop the migration task", "ecs:StopTask", task_arn).idempotent(),
                || {
                    self.aws
                        .ecs()
                        .stop_task()
                        .cluster(&self.request.cluster)
                        .task(task_arn)
                        .reason(reason)
                        .send()
                },
            )
            .await
            .map(|_| ())
    }
}

/// Reads what the log still delivers after the task stopped: until [`DRAIN_EMPTY_READS`]
/// reads in a row bring nothing, at most [`DRAIN_LIMIT`].
async fn drain(
    aws: &EcsAws,
    tail: &mut LogTail,
    progress: &(dyn Fn(MigrationProgress) + Send + Sync),
) -> Result<usize, EcsError> {
    let limit = Instant::now() + DRAIN_LIMIT;
    let mut empty_reads = 0;
    let mut lines_seen = 0;
    while Instant::now() < limit {
        let page = tail.page(aws).await?;
        if page.is_empty() {
            empty_reads += 1;
            if empty_reads >= DRAIN_EMPTY_READS {
                break;
            }
            tokio::time::sleep(DRAIN_PAUSE).await;
            continue;
        }
        empty_reads = 0;
        for line in page {
            lines_seen += 1;
            progress(MigrationProgress::Log { line });
        }
    }
    Ok(lines_seen)
}

/// How the task ended for `container`, or `None` while it still runs. `essential`: whether
/// the container stops its task when it exits (if not, its own exit decides).
pub(crate) fn judge(task: &Task, container: &str, essential: bool) -> Option<Verdict> {
    let named = task
        .containers
        .iter()
        .flatten()
        .find(|c| c.name.as_deref() == Some(container));
    let stopped = task.last_status.as_deref() == Some("STOPPED");
    if !stopped {
        let finished =
            named.filter(|c| !essential && c.last_status.as_deref() == Some("STOPPED"))?;
        let code = finished.exit_code?;
        return Some(if code == 0 {
            Verdict::Succeeded
        } else {
            Verdict::Exited {
                code,
                reason: finished.reason.clone(),
            }
        });
    }
    let stop_code = task
        .stop_code
        .as_ref()
        .map(|c| c.as_str().to_owned())
        .unwrap_or_default();
    let mut reason = task.stopped_reason.clone().unwrap_or_default();
    if let Some(container_reason) = named
        .and_then(|c| c.reason.as_deref())
        .filter(|r| !r.is_empty() && !reason.contains(*r))
    {
        reason = if reason.is_empty() {
            container_reason.to_owned()
        } else {
            format!("{reason}; container: {container_reason}")
        };
    }
    if stop_code == "TaskFailedToStart" {
        return Some(Verdict::FailedToStart {
            reason: if reason.is_empty() {
                "no reason given".to_owned()
            } else {
                reason
            },
        });
    }
    let Some(code) = named.and_then(|c| c.exit_code) else {
        return Some(Verdict::NoExitCode { stop_code, reason });
    };
    // Stopped from outside (StopTask, the scheduler, Spot, maintenance): whatever the exit
    // code says, the migration did not finish on its own.
    if matches!(
        stop_code.as_str(),
        "UserInitiated" | "ServiceSchedulerInitiated" | "SpotInterruption" | "TerminationNotice"
    ) {
        return Some(Verdict::Interrupted { stop_code, reason });
    }
    Some(if code == 0 {
        Verdict::Succeeded
    } else {
        Verdict::Exited {
            code,
            reason: named.and_then(|c| c.reason.clone()),
        }
    })
}

fn check_container(task_definition: &TaskDefinition, container: &str) -> Result<(), EcsError> {
    let names: Vec<&str> = task_definition
        .container_definitions
        .iter()
        .flatten()
        .filter_map(|c| c.name.as_deref())
        .collect();
    if names.contains(&container) {
        return Ok(());
    }
    Err(EcsError::ContainerNotFound {
        task_definition: task_definition
            .task_definition_arn
            .clone()
            .unwrap_or_default(),
        container: container.to_owned(),
        containers: names.join(", "),
    })
}

/// At most 64 ASCII characters, the same for the same run and stage.
fn client_token(run_id: &str, stage: &str) -> String {
    let readable = format!("envelope-{run_id}-{stage}");
    if readable.len() <= 64 && readable.chars().all(|c| c.is_ascii_graphic()) {
        return readable;
    }
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(
        format!("{run_id}\n{stage}").as_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::{Container, TaskStopCode};

    fn task(
        status: &str,
        stop_code: Option<&str>,
        reason: &str,
        containers: &[(&str, &str, Option<i32>)],
    ) -> Task {
        let mut task = Task::builder().last_status(status).stopped_reason(reason);
        if let Some(code) = stop_code {
            task = task.stop_code(TaskStopCode::from(code));
        }
        for (name, status, exit_code) in containers {
            task = task.containers(
                Container::builder()
                    .name(*name)
                    .last_status(*status)
                    .set_exit_code(*exit_code)
                    .build(),
            );
        }
        task.build()
    }

    #[test]
    fn the_named_container_and_the_stop_code_decide_together() {
        use Verdict::*;
        let exited = Some("EssentialContainerExited");
        let cases: Vec<(&str, Task, Option<Verdict>)> = vec![
            (
                "still running",
                task("RUNNING", None, "", &[("api", "RUNNING", None)]),
                None,
            ),
            (
                "provisioning",
                task("PROVISIONING", None, "", &[("api", "PENDING", None)]),
                None,
            ),
            (
                "exit 0",
                task(
                    "STOPPED",
                    exited,
                    "Essential container exited",
                    &[("api", "STOPPED", Some(0))],
                ),
                Some(Succeeded),
            ),
            (
                "exit 1",
                task(
                    "STOPPED",
                    exited,
                    "Essential container exited",
                    &[("api", "STOPPED", Some(1))],
                ),
                Some(Exited {
                    code: 1,
                    reason: None,
                }),
            ),
            (
                "never started, no exit code",
                task(
                    "STOPPED",
                    Some("TaskFailedToStart"),
                    "CannotPullContainerError: pull access denied",
                    &[("api", "STOPPED", None)],
                ),
                Some(FailedToStart {
                    reason: "CannotPullContainerError: pull access denied".into(),
                }),
            ),
            (
                "never started even though some endpoint reports exit 0",
                task(
                    "STOPPED",
                    Some("TaskFailedToStart"),
                    "ResourceInitializationError: secrets",
                    &[("api", "STOPPED", Some(0))],
                ),
                Some(FailedToStart {
                    reason: "ResourceInitializationError: secrets".into(),
                }),
            ),
            (
                "stopped without an exit code",
                task(
                    "STOPPED",
                    exited,
                    "Essential container exited",
                    &[("api", "STOPPED", None)],
                ),
                Some(NoExitCode {
                    stop_code: "EssentialContainerExited".into(),
                    reason: "Essential container exited".into(),
                }),
            ),
            (
                "the named container is missing",
                task(
                    "STOPPED",
                    exited,
                    "Essential container exited",
                    &[("sidecar", "STOPPED", Some(0))],
                ),
                Some(NoExitCode {
                    stop_code: "EssentialContainerExited".into(),
                    reason: "Essential container exited".into(),
                }),
            ),
            (
                "stopped by a person: exit 0 is not success",
                task(
                    "STOPPED",
                    Some("UserInitiated"),
                    "Task stopped by user",
                    &[("api", "STOPPED", Some(0))],
                ),
                Some(Interrupted {
                    stop_code: "UserInitiated".into(),
                    reason: "Task stopped by user".into(),
                }),
            ),
            (
                "spot interruption",
                task(
                    "STOPPED",
                    Some("SpotInterruption"),
                    "Spot",
                    &[("api", "STOPPED", Some(143))],
                ),
                Some(Interrupted {
                    stop_code: "SpotInterruption".into(),
                    reason: "Spot".into(),
                }),
            ),
            (
                "a sidecar exited first: the named container's code counts",
                task(
                    "STOPPED",
                    exited,
                    "Essential container exited",
                    &[("sidecar", "STOPPED", Some(0)), ("api", "STOPPED", Some(2))],
                ),
                Some(Exited {
                    code: 2,
                    reason: None,
                }),
            ),
        ];
        for (name, task, expected) in cases {
            assert_eq!(judge(&task, "api", true), expected, "{name}");
        }
    }

    #[test]
    fn a_non_essential_container_is_judged_when_it_finishes() {
        let running = task(
            "RUNNING",
            None,
            "",
            &[("api", "STOPPED", Some(0)), ("sidecar", "RUNNING", None)],
        );
        assert_eq!(judge(&running, "api", false), Some(Verdict::Succeeded));
        assert_eq!(
            judge(&running, "api", true),
            None,
            "an essential one stops its task: wait for that"
        );
    }

    #[test]
    fn client_tokens_are_stable_and_short() {
        let token = client_token("01jd6y5m1qz1d1x4g9r1w8w3kq", "migrate");
        assert_eq!(token, "envelope-01jd6y5m1qz1d1x4g9r1w8w3kq-migrate");
        assert_eq!(token, client_token("01jd6y5m1qz1d1x4g9r1w8w3kq", "migrate"));
        assert_ne!(
            token,
            client_token("01jd6y5m1qz1d1x4g9r1w8w3kq", "migrate-tenant")
        );
        let long = client_token(&"x".repeat(60), "migrate");
        assert_eq!(long.len(), 64);
        assert!(long.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
