//! Follows one CloudWatch Logs stream (a task container's awslogs output) from its start,
//! page by page with nextForwardToken, and keeps the last lines for error messages.

use std::collections::VecDeque;

use aws_sdk_ecs::types::{ContainerDefinition, LogDriver};

use super::{Call, EcsAws, EcsError};

/// Where a container's awslogs driver writes, from its task definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AwsLogsTarget {
    pub(crate) group: String,
    pub(crate) region: Option<String>,
    /// `awslogs-stream-prefix`; without one the stream is named after the Docker container
    /// id, which ECS does not report, so the lines cannot be followed.
    pub(crate) prefix: Option<String>,
    pub(crate) container: String,
}

impl AwsLogsTarget {
    pub(crate) fn of(container: &ContainerDefinition) -> Option<Self> {
        let config = container.log_configuration.as_ref()?;
        if config.log_driver != LogDriver::Awslogs {
            return None;
        }
        let options = config.options.as_ref()?;
        Some(AwsLogsTarget {
            group: options.get("awslogs-group")?.clone(),
            region: options.get("awslogs-region").cloned(),
            prefix: options.get("awslogs-stream-prefix").cloned(),
            container: container.name.clone()?,
        })
    }

    /// `prefix/container/task-id`, the stream ECS names for a task's container.
    pub(crate) fn stream(&self, task_arn: &str) -> Option<String> {
        let task_id = task_arn.rsplit('/').next()?;
        Some(format!(
            "{}/{}/{task_id}",
            self.prefix.as_deref()?,
            self.container
        ))
    }
}

/// A reader that returns each line of a stream once, in order.
pub(crate) struct LogTail {
    client: aws_sdk_cloudwatchlogs::Client,
    group: String,
    stream: String,
    next_token: Option<String>,
    last: VecDeque<String>,
    keep: usize,
}

impl LogTail {
    pub(crate) fn new(aws: &EcsAws, target: &AwsLogsTarget, stream: String, keep: usize) -> Self {
        LogTail {
            client: aws.logs(target.region.as_deref()),
            group: target.group.clone(),
            stream,
            next_token: None,
            last: VecDeque::new(),
            keep,
        }
    }

    pub(crate) fn location(&self) -> String {
        format!("{} {}", self.group, self.stream)
    }

    /// The last lines read, oldest first.
    pub(crate) fn last_lines(&self) -> Vec<String> {
        self.last.iter().cloned().collect()
    }

    /// One page of new lines (empty when there is nothing new, or the stream does not exist
    /// yet because the container has not started).
    pub(crate) async fn page(&mut self, aws: &EcsAws) -> Result<Vec<String>, EcsError> {
        let target = format!("{} {}", self.group, self.stream);
        let result = aws
            .call(
                Call::new(
                    "read the migration's log lines",
                    "logs:GetLogEvents",
                    &target,
                )
                .idempotent(),
                || {
                    self.client
                        .get_log_events()
                        .log_group_name(&self.group)
                        .log_stream_name(&self.stream)
                        .start_from_head(true)
                        .set_next_token(self.next_token.clone())
                        .send()
                },
            )
            .await;
        let output = match result {
            Ok(output) => output,
            Err(error) if error.aws_code() == Some("ResourceNotFoundException") => {
                return Ok(Vec::new());
            }
            Err(error) => return Err(error),
        };
        let lines: Vec<String> = output
            .events
            .unwrap_or_default()
            .into_iter()
            .filter_map(|event| event.message)
            .collect();
        if let Some(token) = output.next_forward_token {
            self.next_token = Some(token);
        }
        for line in &lines {
            if self.last.len() == self.keep {
                self.last.pop_front();
            }
            self.last.push_back(line.clone());
        }
        Ok(lines)
    }

    /// Every new line available now: pages until one comes back empty.
    pub(crate) async fn read_available(&mut self, aws: &EcsAws) -> Result<Vec<String>, EcsError> {
        let mut all = Vec::new();
        loop {
            let page = self.page(aws).await?;
            if page.is_empty() {
                return Ok(all);
            }
            all.extend(page);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::LogConfiguration;

    fn container(options: &[(&str, &str)], driver: LogDriver) -> ContainerDefinition {
        let mut config = LogConfiguration::builder().log_driver(driver);
        for (k, v) in options {
            config = config.options(*k, *v);
        }
        ContainerDefinition::builder()
            .name("api")
            .log_configuration(config.build().unwrap())
            .build()
    }

    #[test]
    fn the_stream_is_prefix_container_task_id() {
        let target = AwsLogsTarget::of(&container(
            &[
                ("awslogs-group", "/ecs/envelope-prod-api"),
                ("awslogs-region", "eu-west-2"),
                ("awslogs-stream-prefix", "ecs"),
            ],
            LogDriver::Awslogs,
        ))
        .unwrap();
        assert_eq!(target.group, "/ecs/envelope-prod-api");
        assert_eq!(target.region.as_deref(), Some("eu-west-2"));
        assert_eq!(
            target
                .stream(
                    "arn:aws:ecs:eu-west-2:123456789012:task/envelope-prod-cluster/0123456789abcdef"
                )
                .as_deref(),
            Some("ecs/api/0123456789abcdef")
        );
    }

    #[test]
    fn no_awslogs_means_no_target_and_no_prefix_means_no_stream() {
        assert_eq!(AwsLogsTarget::of(&container(&[], LogDriver::Awslogs)), None);
        assert_eq!(
            AwsLogsTarget::of(&container(
                &[("awslogs-group", "/x")],
                LogDriver::Awsfirelens
            )),
            None
        );
        let no_prefix =
            AwsLogsTarget::of(&container(&[("awslogs-group", "/x")], LogDriver::Awslogs)).unwrap();
        assert_eq!(no_prefix.stream("arn:aws:ecs:r:1:task/c/id"), None);
    }
}
