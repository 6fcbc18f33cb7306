//! `verify:` checks of every new task of a service: the tasks of the service's new task
//! definition revision that are RUNNING (ListTasks + DescribeTasks, retried until there is at
//! least one or the check's deadline), each asked at the private address of its network
//! interface (the `privateIPv4Address` of its `ElasticNetworkInterface` attachment). A task
//! that still has no such address near the deadline (bridge or host network mode) fails the
//! check with a message saying so; it is never skipped.

use std::time::Duration;

use aws_sdk_ecs::types::{DesiredStatus, Task};
use tokio::time::Instant;

use super::Deploy;
use crate::exec::ecs::{Call, EcsError};
use crate::exec::verify::{self, CheckReport, TaskCheck};

/// DescribeTasks accepts at most this many tasks per call.
const TASKS_PER_CALL: usize = 100;
/// ListTasks pages read at most (100 tasks each).
const MAX_LIST_PAGES: usize = 10;

impl Deploy<'_> {
    /// Runs `check` against every new task of its service: one report per task (or one
    /// failed report when there is no new task, or the tasks cannot be listed).
    pub(super) async fn check_tasks(&self, check: &TaskCheck) -> Vec<CheckReport> {
        let start = Instant::now();
        let deadline = start + check.timeout;
        let expected =
            verify::expected_text(check.status, check.body_contains.as_deref(), &self.redactor);
        let what = format!(
            "GET {} on port {} of every new task of {}",
            check.path, check.port, check.service
        );
        let Some(revision) = self.record.task_definitions.get(&check.service).cloned() else {
            let error = format!(
                "`{}` is not a service of this deploy, so it has no new revision",
                check.service
            );
            return vec![verify::not_attempted(
                what,
                expected,
                start.elapsed(),
                error,
            )];
        };
        // Listed again until every new task has its address (an awsvpc task may show RUNNING
        // a moment before its attachment does) or the deadline is near.
        let tasks = loop {
            let more_time = Instant::now() + check.interval <= deadline;
            match self.new_tasks(&check.service, &revision).await {
                Ok(tasks) if !tasks.is_empty() && tasks.iter().all(|t| address_of(t).is_some()) => {
                    break tasks;
                }
                Ok(_) if more_time => tokio::time::sleep(check.interval).await,
                Ok(tasks) if !tasks.is_empty() => break tasks,
                Ok(_) => {
                    let error = format!(
                        "no task of {} is RUNNING on its new revision {}",
                        check.service,
                        short(&revision)
                    );
                    return vec![verify::not_attempted(
                        what,
                        expected,
                        start.elapsed(),
                        error,
                    )];
                }
                Err(error) => {
                    let error = format!("the new tasks could not be listed: {error}");
                    return vec![verify::not_attempted(
                        what,
                        expected,
                        start.elapsed(),
                        error,
                    )];
                }
            }
        };
        let runs = tasks.iter().map(|task| {
            let expected = expected.clone();
            async move {
                let arn = task.task_arn().unwrap_or("(no ARN)");
                let label = format!("task {} of {}", short(arn), check.service);
                let Some(address) = address_of(task) else {
                    let error = "the task has no network interface address (it does not use the \
                                 awsvpc network mode); a task check asks awsvpc tasks only, check \
                                 a URL instead"
                        .to_owned();
                    return verify::not_attempted(label, expected, start.elapsed(), error);
                };
                let remaining = deadline.saturating_duration_since(Instant::now());
                let http = check.at(address, remaining.max(Duration::from_secs(1)));
                let mut report = verify::run(&http, &self.redactor).await;
                report.url = format!("{} ({label})", report.url);
                report.elapsed = start.elapsed();
                report
            }
        });
        futures_util::future::join_all(runs).await
    }

    /// The RUNNING tasks of `service` on task definition `revision`.
    pub(super) async fn new_tasks(
        &self,
        service: &str,
        revision: &str,
    ) -> Result<Vec<Task>, EcsError> {
        let cluster = &self.request.cluster;
        let mut arns = Vec::new();
        let mut next: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let output = self
                .aws
                .call(
                    Call::new("list the new tasks to check", "ecs:ListTasks", service).idempotent(),
                    || {
                        self.aws
                            .ecs()
                            .list_tasks()
                            .cluster(cluster)
                            .service_name(service)
                            .desired_status(DesiredStatus::Running)
                            .set_next_token(next.clone())
                            .send()
                    },
                )
                .await?;
            arns.extend(output.task_arns.unwrap_or_default());
            next = output.next_token;
            if next.is_none() {
                break;
            }
        }
        let mut tasks = Vec::new();
        for chunk in arns.chunks(TASKS_PER_CALL) {
            let output = self
                .aws
                .call(
                    Call::new(
                        "describe the new tasks to check",
                        "ecs:DescribeTasks",
                        service,
                    )
                    .idempotent(),
                    || {
                        self.aws
                            .ecs()
                            .describe_tasks()
                            .cluster(cluster)
                            .set_tasks(Some(chunk.to_vec()))
                            .send()
                    },
                )
                .await?;
            tasks.extend(output.tasks.unwrap_or_default().into_iter().filter(|task| {
                task.task_definition_arn() == Some(revision)
                    && task.last_status() == Some("RUNNING")
            }));
        }
        tasks.sort_by(|a, b| a.task_arn().cmp(&b.task_arn()));
        Ok(tasks)
    }
}

/// The private IPv4 address of the task's network interface, if it has one.
pub(super) fn address_of(task: &Task) -> Option<&str> {
    task.attachments()
        .iter()
        .filter(|attachment| attachment.r#type() == Some("ElasticNetworkInterface"))
        .flat_map(|attachment| attachment.details())
        .find(|detail| detail.name() == Some("privateIPv4Address"))
        .and_then(|detail| detail.value())
        .filter(|address| !address.is_empty())
}

/// The last part of an ARN (a task id, or `family:revision`).
pub(super) fn short(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::{Attachment, KeyValuePair};

    fn task(attachment_type: &str, details: &[(&str, &str)]) -> Task {
        let mut attachment = Attachment::builder().r#type(attachment_type);
        for (name, value) in details {
            attachment =
                attachment.details(KeyValuePair::builder().name(*name).value(*value).build());
        }
        Task::builder().attachments(attachment.build()).build()
    }

    #[test]
    fn the_address_is_the_network_interfaces_private_ip() {
        let awsvpc = task(
            "ElasticNetworkInterface",
            &[
                ("subnetId", "subnet-1"),
                ("privateIPv4Address", "172.17.0.9"),
            ],
        );
        assert_eq!(address_of(&awsvpc), Some("172.17.0.9"));
        let other = task("Service Connect", &[("privateIPv4Address", "10.0.0.1")]);
        assert_eq!(address_of(&other), None);
        assert_eq!(address_of(&Task::builder().build()), None);
    }
}
