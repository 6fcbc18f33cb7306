//! Why a deploy failed: each service's [`RolloutFailure`], the [`DeployFailure`] the stage
//! ends with, what the rollback did, and the messages they read as.

use std::fmt::{self, Write as _};

use super::short;
use crate::exec::verify::CheckReport;

/// Why a service's rollout did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutFailure {
    /// Our deployment is no longer PRIMARY: ECS rolled it back (circuit breaker) or a newer
    /// deployment replaced it.
    RolledBack {
        now_primary: Option<String>,
        reason: Option<String>,
    },
    /// ECS marked the rollout FAILED.
    Failed { reason: String },
    /// Tasks of the new deployment keep stopping and no circuit breaker will end it.
    TasksKeepStopping { failed_tasks: i32 },
    /// The service was deleted or is draining.
    ServiceGone { status: String },
    TimedOut {
        running: i32,
        desired: i32,
        rollout_state: String,
    },
    /// UpdateService itself failed.
    NotStarted { error: String },
    /// Every rollout completed but a `verify:` check of the release did not pass.
    Verify(Box<CheckReport>),
}

impl fmt::Display for RolloutFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RolloutFailure::RolledBack {
                now_primary,
                reason,
            } => {
                write!(f, "ECS rolled the new deployment back")?;
                if let Some(reason) = reason.as_deref().filter(|r| !r.is_empty()) {
                    write!(f, " ({reason})")?;
                }
                if let Some(primary) = now_primary {
                    write!(f, "; it runs {primary} again")?;
                }
                Ok(())
            }
            RolloutFailure::Failed { reason } => {
                write!(f, "ECS marked the rollout FAILED: {reason}")
            }
            RolloutFailure::TasksKeepStopping { failed_tasks } => {
                write!(
                    f,
                    "{failed_tasks} tasks of the new revision stopped soon after starting"
                )
            }
            RolloutFailure::ServiceGone { status } => write!(f, "the service is {status}"),
            RolloutFailure::TimedOut {
                running,
                desired,
                rollout_state,
            } => write!(
                f,
                "timed out with {running} of {desired} new tasks running (rollout {})",
                if rollout_state.is_empty() {
                    "state unknown"
                } else {
                    rollout_state
                }
            ),
            RolloutFailure::NotStarted { error } => write!(f, "UpdateService failed: {error}"),
            RolloutFailure::Verify(report) => write!(f, "{report}"),
        }
    }
}

/// A deploy that failed, and what the rollback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployFailure {
    pub cluster: String,
    /// The services that failed, and why.
    pub failures: Vec<(String, RolloutFailure)>,
    /// `None` when `on_failure` is `stop`.
    pub rollback: Option<RollbackReport>,
}

/// Where each service of the release ended after the rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackReport {
    pub services: Vec<RolledBackService>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolledBackService {
    pub service: String,
    /// The revision it was rolled back to.
    pub task_definition: String,
    /// `None`: the service was never updated, so there was nothing to roll back.
    pub outcome: Option<Result<(), RolloutFailure>>,
}

impl RollbackReport {
    /// Each service the rollback put back, and the revision (`family:revision`) it runs.
    pub fn rolled_back(&self) -> std::collections::BTreeMap<String, String> {
        self.services
            .iter()
            .filter(|s| matches!(s.outcome, Some(Ok(()))))
            .map(|s| (s.service.clone(), short(&s.task_definition).to_string()))
            .collect()
    }

    /// Whether every service runs its previous revision again.
    pub fn complete(&self) -> bool {
        self.services
            .iter()
            .all(|s| !matches!(s.outcome, Some(Err(_))))
    }
}

impl std::error::Error for DeployFailure {}

impl fmt::Display for DeployFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::from("the deploy failed:");
        for (service, failure) in &self.failures {
            let _ = write!(out, "\n  {service}: {failure}");
        }
        match &self.rollback {
            None => out.push_str(
                "\nThe stage's on_failure is `stop`: the services were left as they are. \
                 Check them in ECS before the next deploy.",
            ),
            Some(report) => {
                out.push_str(
                    "\nRolled back every service of the release to the revision it ran before:",
                );
                for service in &report.services {
                    let _ = write!(out, "\n  {}: ", service.service);
                    match &service.outcome {
                        None => {
                            let _ = write!(
                                out,
                                "not updated, still on {}",
                                short(&service.task_definition)
                            );
                        }
                        Some(Ok(())) => {
                            let _ = write!(
                                out,
                                "back on {} (rollback completed)",
                                short(&service.task_definition)
                            );
                        }
                        Some(Err(failure)) => {
                            let _ = write!(
                                out,
                                "rollback to {} did NOT complete: {failure}",
                                short(&service.task_definition)
                            );
                        }
                    }
                }
                if report.complete() {
                    out.push_str(
                        "\nAll services run their previous revisions. The service events above show \
                         what went wrong; fix the release and run the pipeline again.",
                    );
                } else {
                    let _ = write!(
                        out,
                        "\nSome services are not back on their previous revision: check them now \
                         (aws ecs describe-services --cluster {} --services …) and update them by hand \
                         if needed.",
                        self.cluster
                    );
                }
            }
        }
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD_TD: &str = "arn:aws:ecs:eu-west-2:1:task-definition/envelope-prod-api:3";

    #[test]
    fn the_failure_message_reports_both_outcomes() {
        let failure = DeployFailure {
            cluster: "envelope-prod-cluster".into(),
            failures: vec![(
                "envelope-prod-worker".into(),
                RolloutFailure::RolledBack {
                    now_primary: Some("envelope-prod-worker:7".into()),
                    reason: Some("ECS deployment circuit breaker was triggered after 3 consecutive task failures.".into()),
                },
            )],
            rollback: Some(RollbackReport {
                services: vec![
                    RolledBackService {
                        service: "envelope-prod-api".into(),
                        task_definition: OLD_TD.into(),
                        outcome: Some(Ok(())),
                    },
                    RolledBackService {
                        service: "envelope-prod-worker".into(),
                        task_definition: "arn:aws:ecs:eu-west-2:1:task-definition/envelope-prod-worker:7".into(),
                        outcome: Some(Err(RolloutFailure::TimedOut { running: 0, desired: 1, rollout_state: "IN_PROGRESS".into() })),
                    },
                    RolledBackService {
                        service: "envelope-prod-reverb".into(),
                        task_definition: "arn:aws:ecs:eu-west-2:1:task-definition/envelope-prod-reverb:2".into(),
                        outcome: None,
                    },
                ],
            }),
        };
        let text = failure.to_string();
        assert_eq!(
            text,
            "the deploy failed:\n  \
             envelope-prod-worker: ECS rolled the new deployment back (ECS deployment circuit breaker was triggered after 3 consecutive task failures.); it runs envelope-prod-worker:7 again\n\
             Rolled back every service of the release to the revision it ran before:\n  \
             envelope-prod-api: back on envelope-prod-api:3 (rollback completed)\n  \
             envelope-prod-worker: rollback to envelope-prod-worker:7 did NOT complete: timed out with 0 of 1 new tasks running (rollout IN_PROGRESS)\n  \
             envelope-prod-reverb: not updated, still on envelope-prod-reverb:2\n\
             Some services are not back on their previous revision: check them now (aws ecs describe-services --cluster envelope-prod-cluster --services …) and update them by hand if needed."
        );
    }
}
