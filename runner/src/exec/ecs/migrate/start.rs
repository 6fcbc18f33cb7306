//! Registering the migration's task definition revision and starting its task with RunTask,
//! re-attaching to a revision or task an earlier attempt of this run already made.

use aws_sdk_ecs::types::{
    ContainerOverride, DesiredStatus, Service, Tag, TaskDefinition, TaskOverride,
};

use super::{Migration, MigrationProgress};
use crate::exec::ecs::fence;
use crate::exec::ecs::reattach;
use crate::exec::ecs::{Call, EcsError, deploy};

impl Migration<'_> {
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
        if self.adopt_started(progress).await? {
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
                    if self.adopt_started(progress).await? {
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

    async fn service(&mut self) -> Result<&Service, EcsError> {
        if self.service.is_none() {
            let service =
                deploy::describe_one(self.aws, &self.request.cluster, &self.request.service)
                    .await?;
            self.service = Some(service);
        }
        Ok(self.service.as_ref().expect("set above"))
    }

    /// Records a task this run already started (running or stopped) as the migration's and
    /// reports it re-attached: whether there was one.
    async fn adopt_started(
        &mut self,
        progress: &(dyn Fn(MigrationProgress) + Send + Sync),
    ) -> Result<bool, EcsError> {
        let Some(task_arn) = self.find_started().await? else {
            return Ok(false);
        };
        progress(MigrationProgress::Started {
            task_arn: task_arn.clone(),
            reattached: true,
        });
        self.record.task_arn = Some(task_arn);
        Ok(true)
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
pub(super) fn client_token(run_id: &str, stage: &str) -> String {
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
