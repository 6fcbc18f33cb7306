//! The migrate and deploy stages, checkpointing what ECS did so a killed run re-attaches.

use crate::event::Event;
use crate::exec::driver::*;
use crate::exec::ecs;
use crate::plan::{self, Plan};
use crate::run::{RunRecord, StageOutputs};
use std::time::Duration;

impl Driver {
    /// Save what a stage did so far, so a process killed mid-stage resumes without redoing it.
    pub(in crate::exec::driver) async fn checkpoint(
        &self,
        record: &mut RunRecord,
        stage: &str,
        update: impl FnOnce(&mut StageOutputs),
    ) -> Result<(), StageFailure> {
        let entry = record.stage_mut(stage).expect("stage exists");
        update(&mut entry.outputs);
        let entry = entry.clone();
        self.save_stage(&record.id, &entry)
            .await
            .map_err(|error| StageFailure::environment(error.to_string()))
    }

    pub(in crate::exec::driver) fn built_images(
        &self,
        state: &RunState,
    ) -> Result<Vec<String>, StageFailure> {
        if state.images.is_empty() {
            return Err(StageFailure::new(
                "no pushed image: the build and push stages did not run",
            ));
        }
        Ok(state.images.values().cloned().collect())
    }

    pub(in crate::exec::driver) async fn migrate(
        &self,
        step: &plan::MigrateStep,
        plan: &Plan,
        record: &mut RunRecord,
        state: &RunState,
    ) -> Result<StepResult, StageFailure> {
        let aws = self.ecs().await?;
        let request = ecs::migrate::MigrationRequest {
            cluster: step.cluster.clone(),
            service: step.service.clone(),
            container: step.container.clone(),
            command: step.command.clone(),
            images: self.built_images(state)?,
            run_id: record.id.0.clone(),
            pipeline: plan.pipeline.clone(),
            stage: step.name.clone(),
            timeout: Duration::from_secs(step.timeout_seconds),
            poll: ecs::PollSchedule::MIGRATION,
        };
        let recorded = record
            .stage(&step.name)
            .map(|stage| ecs::migrate::MigrationRecord {
                task_definition: stage.outputs.task_definitions.get(&step.service).cloned(),
                task_arn: stage.outputs.task_arn.clone(),
            })
            .unwrap_or_default();
        let stage = step.name.clone();
        let events = self.events.clone();
        let progress = move |progress: ecs::migrate::MigrationProgress| {
            use ecs::migrate::MigrationProgress as P;
            events.emit(match progress {
                P::Registered {
                    task_definition,
                    diff,
                } => Event::Output {
                    stage: stage.clone(),
                    key: "task definition".into(),
                    value: format!("{task_definition}; {diff}"),
                },
                P::Started {
                    task_arn,
                    reattached,
                } => Event::Output {
                    stage: stage.clone(),
                    key: if reattached {
                        "task (re-attached)".into()
                    } else {
                        "task".into()
                    },
                    value: task_arn,
                },
                P::Status { status, .. } => Event::Log {
                    stage: stage.clone(),
                    line: format!("task {status}"),
                },
                P::Log { line } => Event::Log {
                    stage: stage.clone(),
                    line,
                },
                P::Notice { message } => Event::Notice {
                    stage: Some(stage.clone()),
                    message,
                },
            });
        };
        let lease = self.gate_lease.lock().expect("gate lease lock").clone();
        let mut migration = ecs::migrate::Migration::new(aws, &request, recorded)
            .fenced(lease.as_ref().map(|l| l as &dyn ecs::fence::Fence));
        let ecs_failure = |error: ecs::EcsError| {
            let environment = error.is_environment();
            StageFailure::of(error, environment)
        };
        migration.register(&progress).await.map_err(ecs_failure)?;
        let saved = migration.record().clone();
        let service = step.service.clone();
        self.checkpoint(record, &step.name, |outputs| {
            if let Some(definition) = &saved.task_definition {
                outputs.task_definitions.insert(service, definition.clone());
            }
        })
        .await?;
        migration.start(&progress).await.map_err(ecs_failure)?;
        let saved = migration.record().clone();
        self.checkpoint(record, &step.name, |outputs| {
            outputs.task_arn = saved.task_arn.clone()
        })
        .await?;
        let outcome = migration.wait(&progress).await.map_err(|error| {
            let mut failure = ecs_failure(error);
            let mut outputs = record
                .stage(&step.name)
                .map(|s| s.outputs.clone())
                .unwrap_or_default();
            outputs.task_arn = migration.record().task_arn.clone();
            failure.outputs = Some(Box::new(outputs));
            failure
        })?;
        let mut outputs = record
            .stage(&step.name)
            .map(|s| s.outputs.clone())
            .unwrap_or_default();
        outputs.task_arn = Some(outcome.task_arn);
        outputs.exit_code = Some(outcome.exit_code);
        outputs
            .task_definitions
            .insert(step.service.clone(), outcome.task_definition);
        Ok(StepResult::Done(Box::new(outputs)))
    }

    pub(in crate::exec::driver) async fn deploy(
        &self,
        step: &plan::DeployStep,
        record: &mut RunRecord,
        state: &RunState,
    ) -> Result<StepResult, StageFailure> {
        let aws = self.ecs().await?;
        let timeout = Duration::from_secs(step.timeout_seconds);
        let request = ecs::deploy::DeployRequest {
            cluster: step.cluster.clone(),
            services: step.services.clone(),
            images: self.built_images(state)?,
            run_id: record.id.0.clone(),
            stage: step.name.clone(),
            timeout,
            rollback_timeout: timeout,
            on_failure: step.on_failure,
            poll: ecs::PollSchedule::DEPLOY,
        };
        let recorded = record
            .stage(&step.name)
            .map(|stage| ecs::deploy::DeployRecord {
                previous_task_definitions: stage.outputs.previous_task_definitions.clone(),
                task_definitions: stage.outputs.task_definitions.clone(),
                deployments: stage.outputs.deployments.clone(),
            })
            .unwrap_or_default();
        let stage = step.name.clone();
        let events = self.events.clone();
        let progress = move |progress: ecs::deploy::DeployProgress| {
            use ecs::deploy::DeployProgress as P;
            let event = match progress {
                P::Preflight(preflight) => Event::Log {
                    stage: stage.clone(),
                    line: format!(
                        "{}: {} of {} running on {}; circuit breaker {}",
                        preflight.service,
                        preflight.running,
                        preflight.desired,
                        preflight.task_definition,
                        match preflight.circuit_breaker {
                            Some(breaker) if breaker.rollback => "on (with rollback)",
                            Some(_) => "on (without rollback)",
                            None => "off",
                        }
                    ),
                },
                P::Registered {
                    service,
                    task_definition,
                    diff,
                } => Event::Output {
                    stage: stage.clone(),
                    key: format!("{service} task definition"),
                    value: format!("{task_definition}; {diff}"),
                },
                P::Updated {
                    service,
                    phase,
                    deployment_id,
                } => Event::Output {
                    stage: stage.clone(),
                    key: format!(
                        "{service} {}",
                        match phase {
                            ecs::deploy::Phase::Deploy => "deployment",
                            ecs::deploy::Phase::Rollback => "rollback",
                        }
                    ),
                    value: deployment_id,
                },
                P::Rollout(rollout) => Event::ServiceProgress {
                    stage: stage.clone(),
                    service: rollout.service,
                    running: rollout.new.running,
                    desired: rollout.new.desired,
                    pending: rollout.new.pending,
                    rollout: if rollout.old.running > 0 {
                        format!(
                            "{} (old deployment: {} running)",
                            rollout.rollout_state, rollout.old.running
                        )
                    } else {
                        rollout.rollout_state
                    },
                },
                P::ServiceEvent {
                    service, message, ..
                } => Event::Log {
                    stage: stage.clone(),
                    line: format!("{service}: {message}"),
                },
                P::Finished {
                    service,
                    phase,
                    outcome,
                } => Event::Log {
                    stage: stage.clone(),
                    line: match (phase, outcome) {
                        (ecs::deploy::Phase::Deploy, Ok(())) => format!("{service}: deployed"),
                        (ecs::deploy::Phase::Rollback, Ok(())) => {
                            format!("{service}: rolled back to its previous revision")
                        }
                        (_, Err(failure)) => format!("{service}: {failure}"),
                    },
                },
                P::RollbackStarted { reason } => Event::Notice {
                    stage: Some(stage.clone()),
                    message: format!("rolling back every service of the release: {reason}"),
                },
                P::Verified(report) => Event::Notice {
                    stage: Some(stage.clone()),
                    message: report.to_string(),
                },
            };
            events.emit(event);
        };
        let lease = self.gate_lease.lock().expect("gate lease lock").clone();
        let mut deploy = ecs::deploy::Deploy::new(aws, &request, recorded)
            .fenced(lease.as_ref().map(|l| l as &dyn ecs::fence::Fence))
            .verified(checks(step), self.events.redactor().clone());
        let save = |outputs: &mut StageOutputs, record: &ecs::deploy::DeployRecord| {
            outputs.previous_task_definitions = record.previous_task_definitions.clone();
            outputs.task_definitions = record.task_definitions.clone();
            outputs.deployments = record.deployments.clone();
        };
        let ecs_failure = |error: ecs::EcsError| {
            let environment = error.is_environment();
            StageFailure::of(error, environment)
        };
        deploy.prepare(&progress).await.map_err(ecs_failure)?;
        let saved = deploy.record().clone();
        self.checkpoint(record, &step.name, |outputs| save(outputs, &saved))
            .await?;
        let updated = deploy.update(&progress).await;
        let saved = deploy.record().clone();
        self.checkpoint(record, &step.name, |outputs| save(outputs, &saved))
            .await?;
        updated.map_err(ecs_failure)?;
        match deploy.wait(&progress).await {
            Ok(_) => {
                let mut outputs = record
                    .stage(&step.name)
                    .map(|s| s.outputs.clone())
                    .unwrap_or_default();
                save(&mut outputs, deploy.record());
                outputs.checks = check_lines(&deploy);
                Ok(StepResult::Done(Box::new(outputs)))
            }
            Err(error) => {
                let rolled_back = match &error {
                    ecs::EcsError::Deploy(failure) => failure
                        .rollback
                        .as_ref()
                        .map(|report| report.rolled_back())
                        .unwrap_or_default(),
                    _ => Default::default(),
                };
                let mut failure = ecs_failure(error);
                let mut outputs = record
                    .stage(&step.name)
                    .map(|s| s.outputs.clone())
                    .unwrap_or_default();
                save(&mut outputs, deploy.record());
                outputs.rolled_back = rolled_back;
                outputs.checks = check_lines(&deploy);
                failure.outputs = Some(Box::new(outputs));
                Err(failure)
            }
        }
    }
}

/// The deploy step's `verify:` checks, for [`ecs::deploy::Deploy::verified`].
fn checks(step: &plan::DeployStep) -> Vec<crate::exec::verify::Check> {
    use crate::exec::verify::{AlarmCheck, Check, HttpCheck, TargetGroupCheck, TaskCheck};
    step.verify
        .iter()
        .map(|check| {
            let timeout = Duration::from_secs(check.timeout_seconds);
            let interval = Duration::from_secs(check.interval_seconds);
            let status = check
                .status
                .unwrap_or(crate::pipeline::verify::DEFAULT_STATUS);
            match &check.target {
                plan::CheckTarget::Url(url) => Check::Url(HttpCheck {
                    url: url.clone(),
                    status,
                    body_contains: check.body_contains.clone(),
                    timeout,
                    interval,
                }),
                plan::CheckTarget::Task(task) => Check::Task(TaskCheck {
                    service: task.service.clone(),
                    port: task.port,
                    path: task.path.clone(),
                    status,
                    body_contains: check.body_contains.clone(),
                    timeout,
                    interval,
                }),
                plan::CheckTarget::TargetGroup(target_group) => {
                    Check::TargetGroup(TargetGroupCheck {
                        service: target_group.service.clone(),
                        timeout,
                        interval,
                    })
                }
                plan::CheckTarget::Alarm(alarm) => Check::Alarm(AlarmCheck {
                    name: alarm.name.clone(),
                    watch: timeout,
                    interval,
                }),
            }
        })
        .collect()
}

/// How each check ended, for the stage's outputs.
fn check_lines(deploy: &ecs::deploy::Deploy<'_>) -> Vec<String> {
    deploy
        .check_reports()
        .iter()
        .map(ToString::to_string)
        .collect()
}
