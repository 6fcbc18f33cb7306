//! Following the started task until it stops or times out: its status and log lines
//! reported, the log drained after it stopped, and the verdict turned into the outcome.

use std::time::Duration;

use aws_sdk_ecs::types::{Task, TaskDefinition};
use tokio::time::Instant;

use super::verdict::{Verdict, judge};
use super::{LAST_LINES, Migration, MigrationOutcome, MigrationProgress};
use crate::exec::ecs::logs::{AwsLogsTarget, LogTail};
use crate::exec::ecs::{Call, EcsAws, EcsError};

/// After the task stopped, the log is read until this many reads in a row bring nothing.
const DRAIN_EMPTY_READS: u32 = 2;
/// The pause between those reads: awslogs delivers a container's last lines a little after
/// the container exits.
const DRAIN_PAUSE: Duration = Duration::from_millis(1500);
/// Draining gives up after this long even if lines keep coming.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

impl Migration<'_> {
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
