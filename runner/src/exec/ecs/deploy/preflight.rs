//! Preflight and registration: the services described and checked, the next task
//! definition revision of each registered (or adopted from an earlier attempt), and the
//! preview of that change for the approval page.

use std::collections::BTreeMap;

use aws_sdk_ecs::types::{Service, TaskDefinition};

use super::{
    CircuitBreaker, Deploy, DeployProgress, Progress, SERVICES_PER_CALL, ServicePreflight,
};
use crate::exec::ecs::fence;
use crate::exec::ecs::reattach;
use crate::exec::ecs::taskdef::{NextRevision, TaskDefinitionDiff, next_revision};
use crate::exec::ecs::{EcsAws, EcsError};

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

impl Deploy<'_> {
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
}
