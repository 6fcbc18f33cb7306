//! UpdateService: every service moved to its new revision (or, for a rollback, back to its
//! previous one), adopting a deployment that already runs the target.

use aws_sdk_ecs::types::Service;

use super::{Deploy, DeployProgress, Phase, Progress, RolloutFailure, short};
use crate::exec::ecs::fence;
use crate::exec::ecs::{Call, EcsError};

impl Deploy<'_> {
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

    /// UpdateService to `task_definition`; returns the id of the PRIMARY deployment that runs
    /// it. When the service already runs it (a resumed run whose UpdateService went through,
    /// or ECS rolled back on its own), that deployment is adopted without a call.
    pub(super) async fn update_service(
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
