//! The verdict on one service's rollout at one poll, and the task counts reported as its
//! progress; pure functions of a described service.

use aws_sdk_ecs::types::{Deployment, Service};

use super::{DeploymentCounts, Phase, RolloutFailure, ServiceRollout, short};

/// The verdict on one service at one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Judgement {
    Rolling,
    Completed,
    Failed(RolloutFailure),
}

/// Judges `service`'s rollout of deployment `deployment_id`. Pure.
pub(crate) fn judge(service: &Service, deployment_id: &str) -> Judgement {
    let status = service.status.as_deref().unwrap_or("");
    if status != "ACTIVE" {
        return Judgement::Failed(RolloutFailure::ServiceGone {
            status: if status.is_empty() {
                "gone".to_owned()
            } else {
                status.to_owned()
            },
        });
    }
    let deployments = service.deployments.as_deref().unwrap_or_default();
    let primary = deployments
        .iter()
        .find(|d| d.status.as_deref() == Some("PRIMARY"));
    let Some(ours) = deployments
        .iter()
        .find(|d| d.id.as_deref() == Some(deployment_id))
    else {
        return Judgement::Failed(RolloutFailure::RolledBack {
            now_primary: primary
                .and_then(|d| d.task_definition.as_deref())
                .map(|td| short(td).to_owned()),
            reason: Some(
                "the deployment this run created is gone; a newer one replaced it".to_owned(),
            ),
        });
    };
    let rollout_state = ours
        .rollout_state
        .as_ref()
        .map(|s| s.as_str())
        .unwrap_or("");
    if ours.status.as_deref() != Some("PRIMARY") {
        return Judgement::Failed(RolloutFailure::RolledBack {
            now_primary: primary
                .and_then(|d| d.task_definition.as_deref())
                .map(|td| short(td).to_owned()),
            reason: ours.rollout_state_reason.clone().filter(|r| !r.is_empty()),
        });
    }
    if rollout_state == "FAILED" {
        return Judgement::Failed(RolloutFailure::Failed {
            reason: ours
                .rollout_state_reason
                .clone()
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "no reason given".to_owned()),
        });
    }
    let breaker_enabled = service
        .deployment_configuration
        .as_ref()
        .and_then(|c| c.deployment_circuit_breaker.as_ref())
        .is_some_and(|b| b.enable);
    if !breaker_enabled && ours.failed_tasks >= failed_tasks_limit(ours.desired_count) {
        return Judgement::Failed(RolloutFailure::TasksKeepStopping {
            failed_tasks: ours.failed_tasks,
        });
    }
    let settled = ours.running_count == ours.desired_count;
    let completed = match rollout_state {
        "COMPLETED" => settled,
        // Without a rollout state (a service behind a Classic Load Balancer): settled and the
        // old deployments drained.
        "" => settled && deployments.len() == 1,
        _ => false,
    };
    if completed {
        Judgement::Completed
    } else {
        Judgement::Rolling
    }
}

/// With no circuit breaker, ECS keeps replacing crashing tasks forever; this many failed
/// tasks (ECS's own breaker threshold: at least 3, half the desired count, at most 200)
/// ends the wait early.
fn failed_tasks_limit(desired: i32) -> i32 {
    ((desired + 1) / 2).clamp(3, 200)
}

/// The counts of deployment `deployment_id` and of all the others together.
pub(crate) fn rollout_of(
    service: &Service,
    name: &str,
    phase: Phase,
    deployment_id: &str,
) -> ServiceRollout {
    let mut rollout = ServiceRollout {
        service: name.to_owned(),
        phase,
        deployment_id: deployment_id.to_owned(),
        new: DeploymentCounts::default(),
        old: DeploymentCounts::default(),
        rollout_state: String::new(),
    };
    for deployment in service.deployments.as_deref().unwrap_or_default() {
        let counts = counts(deployment);
        if deployment.id.as_deref() == Some(deployment_id) {
            rollout.new = counts;
            rollout.rollout_state = deployment
                .rollout_state
                .as_ref()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default();
        } else {
            rollout.old.running += counts.running;
            rollout.old.desired += counts.desired;
            rollout.old.pending += counts.pending;
            rollout.old.failed += counts.failed;
        }
    }
    rollout
}

fn counts(deployment: &Deployment) -> DeploymentCounts {
    DeploymentCounts {
        running: deployment.running_count,
        desired: deployment.desired_count,
        pending: deployment.pending_count,
        failed: deployment.failed_tasks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::{
        DeploymentCircuitBreaker, DeploymentConfiguration, DeploymentRolloutState,
    };

    const OLD_TD: &str = "arn:aws:ecs:eu-west-2:1:task-definition/envelope-prod-api:3";
    const NEW_TD: &str = "arn:aws:ecs:eu-west-2:1:task-definition/envelope-prod-api:4";

    /// (id, status, task definition, rollout state, running, desired, failed, reason)
    type D<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Option<&'a str>,
        i32,
        i32,
        i32,
        &'a str,
    );

    fn service(status: &str, breaker: bool, deployments: &[D<'_>]) -> Service {
        let mut builder = Service::builder()
            .service_name("envelope-prod-api")
            .status(status)
            .desired_count(2)
            .deployment_configuration(
                DeploymentConfiguration::builder()
                    .deployment_circuit_breaker(
                        DeploymentCircuitBreaker::builder()
                            .enable(breaker)
                            .rollback(breaker)
                            .build(),
                    )
                    .build(),
            );
        for (id, status, td, state, running, desired, failed, reason) in deployments {
            builder = builder.deployments(
                Deployment::builder()
                    .id(*id)
                    .status(*status)
                    .task_definition(*td)
                    .set_rollout_state(state.map(DeploymentRolloutState::from))
                    .running_count(*running)
                    .desired_count(*desired)
                    .failed_tasks(*failed)
                    .rollout_state_reason(*reason)
                    .build(),
            );
        }
        builder.build()
    }

    #[test]
    fn only_our_primary_completed_and_settled_deployment_is_success() {
        use Judgement::*;
        let ours = "ecs-svc/ours";
        let cases: Vec<(&str, Service, Judgement)> = vec![
            (
                "rolling: new tasks starting, old ones still running",
                service("ACTIVE", true, &[
                    (ours, "PRIMARY", NEW_TD, Some("IN_PROGRESS"), 1, 2, 0, ""),
                    ("ecs-svc/old", "ACTIVE", OLD_TD, Some("COMPLETED"), 2, 2, 0, ""),
                ]),
                Rolling,
            ),
            (
                "completed and settled",
                service("ACTIVE", true, &[(ours, "PRIMARY", NEW_TD, Some("COMPLETED"), 2, 2, 0, "ECS deployment completed.")]),
                Completed,
            ),
            (
                "COMPLETED with fewer tasks than wanted (a brand-new service reads like this)",
                service("ACTIVE", true, &[(ours, "PRIMARY", NEW_TD, Some("COMPLETED"), 0, 2, 0, "")]),
                Rolling,
            ),
            (
                "the circuit breaker rolled it back: one deployment, running == desired, and still a failure",
                service("ACTIVE", true, &[
                    ("ecs-svc/old", "PRIMARY", OLD_TD, Some("COMPLETED"), 2, 2, 0, ""),
                    (ours, "ACTIVE", NEW_TD, Some("FAILED"), 0, 0, 3, "ECS deployment circuit breaker was triggered after 3 consecutive task failures."),
                ]),
                Failed(RolloutFailure::RolledBack {
                    now_primary: Some("envelope-prod-api:3".into()),
                    reason: Some("ECS deployment circuit breaker was triggered after 3 consecutive task failures.".into()),
                }),
            ),
            (
                "rolled back and our deployment already dropped from the list",
                service("ACTIVE", true, &[("ecs-svc/old", "PRIMARY", OLD_TD, Some("COMPLETED"), 2, 2, 0, "")]),
                Failed(RolloutFailure::RolledBack {
                    now_primary: Some("envelope-prod-api:3".into()),
                    reason: Some("the deployment this run created is gone; a newer one replaced it".into()),
                }),
            ),
            (
                "someone else deployed on top",
                service("ACTIVE", true, &[
                    ("ecs-svc/theirs", "PRIMARY", "arn:aws:ecs:eu-west-2:1:task-definition/envelope-prod-api:5", Some("IN_PROGRESS"), 0, 2, 0, ""),
                    (ours, "ACTIVE", NEW_TD, Some("IN_PROGRESS"), 1, 2, 0, ""),
                ]),
                Failed(RolloutFailure::RolledBack { now_primary: Some("envelope-prod-api:5".into()), reason: None }),
            ),
            (
                "FAILED without rollback",
                service("ACTIVE", true, &[(ours, "PRIMARY", NEW_TD, Some("FAILED"), 0, 0, 3, "circuit breaker")]),
                Failed(RolloutFailure::Failed { reason: "circuit breaker".into() }),
            ),
            (
                "no breaker: tasks keep stopping",
                service("ACTIVE", false, &[
                    (ours, "PRIMARY", NEW_TD, Some("IN_PROGRESS"), 0, 2, 3, ""),
                    ("ecs-svc/old", "ACTIVE", OLD_TD, Some("COMPLETED"), 2, 2, 0, ""),
                ]),
                Failed(RolloutFailure::TasksKeepStopping { failed_tasks: 3 }),
            ),
            (
                "breaker on: a few failed tasks are ECS's to judge",
                service("ACTIVE", true, &[
                    (ours, "PRIMARY", NEW_TD, Some("IN_PROGRESS"), 0, 2, 3, ""),
                    ("ecs-svc/old", "ACTIVE", OLD_TD, Some("COMPLETED"), 2, 2, 0, ""),
                ]),
                Rolling,
            ),
            (
                "no rollout state: settled only once the old deployment drained",
                service("ACTIVE", false, &[
                    (ours, "PRIMARY", NEW_TD, None, 2, 2, 0, ""),
                    ("ecs-svc/old", "ACTIVE", OLD_TD, None, 1, 0, 0, ""),
                ]),
                Rolling,
            ),
            (
                "no rollout state, drained",
                service("ACTIVE", false, &[(ours, "PRIMARY", NEW_TD, None, 2, 2, 0, "")]),
                Completed,
            ),
            (
                "service deleted",
                service("INACTIVE", true, &[(ours, "PRIMARY", NEW_TD, Some("IN_PROGRESS"), 0, 2, 0, "")]),
                Failed(RolloutFailure::ServiceGone { status: "INACTIVE".into() }),
            ),
        ];
        for (name, service, expected) in cases {
            assert_eq!(judge(&service, ours), expected, "{name}");
        }
    }

    #[test]
    fn rollout_progress_splits_ours_from_the_rest() {
        let service = service(
            "ACTIVE",
            true,
            &[
                (
                    "ecs-svc/ours",
                    "PRIMARY",
                    NEW_TD,
                    Some("IN_PROGRESS"),
                    1,
                    2,
                    0,
                    "",
                ),
                (
                    "ecs-svc/old",
                    "ACTIVE",
                    OLD_TD,
                    Some("COMPLETED"),
                    2,
                    2,
                    0,
                    "",
                ),
            ],
        );
        let rollout = rollout_of(&service, "envelope-prod-api", Phase::Deploy, "ecs-svc/ours");
        assert_eq!(
            rollout.new,
            DeploymentCounts {
                running: 1,
                desired: 2,
                pending: 0,
                failed: 0
            }
        );
        assert_eq!(
            rollout.old,
            DeploymentCounts {
                running: 2,
                desired: 2,
                pending: 0,
                failed: 0
            }
        );
        assert_eq!(rollout.rollout_state, "IN_PROGRESS");
    }

    #[test]
    fn the_failed_tasks_limit_follows_ecs_breaker_thresholds() {
        for (desired, limit) in [(1, 3), (2, 3), (6, 3), (7, 4), (10, 5), (1000, 200)] {
            assert_eq!(failed_tasks_limit(desired), limit, "desired {desired}");
        }
    }
}
