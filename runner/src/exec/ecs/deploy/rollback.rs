//! A failed deploy turned into the stage's error, after rolling every service of the
//! release back to the revision it ran before when `on_failure` says so.

use super::{
    Deploy, DeployFailure, DeployProgress, OnFailure, Phase, Progress, RollbackReport,
    RolledBackService, RolloutFailure,
};
use crate::exec::ecs::EcsError;

impl Deploy<'_> {
    /// Turns failures into the stage's error, rolling back first when the policy says so.
    pub(super) async fn fail(
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
}
