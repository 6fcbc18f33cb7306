//! What a target group says of a service's new tasks, for a `verify: target_group` check
//! (pure): each new task's `IP:PORT` target looked up in DescribeTargetHealth's answer. Only
//! `healthy` passes; a new task the group does not list (yet) is `not registered`; every
//! other state (`initial`, `unhealthy`, `draining`, …) fails with the reason the load
//! balancer gave. Targets of other tasks (the old revision's, draining) are ignored.

use std::fmt;

use aws_sdk_elasticloadbalancingv2::types::{TargetHealthDescription, TargetHealthStateEnum};

use crate::redact::Redactor;

/// One new task's target, and what the target group said of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSeen {
    /// `IP:PORT`: the task's private address and the container port the service registers.
    pub target: String,
    pub health: TargetHealth,
}

/// The state of one target in its target group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetHealth {
    Healthy,
    /// The target group does not list the task's address and port.
    NotRegistered,
    /// Any other state, with the reason code and the description the load balancer gave
    /// (`unhealthy`, `Target.ResponseCodeMismatch`, `Health checks failed with these codes:
    /// [500]`).
    Other {
        state: String,
        reason: Option<String>,
        description: Option<String>,
    },
}

impl TargetSeen {
    pub fn is_healthy(&self) -> bool {
        self.health == TargetHealth::Healthy
    }
}

impl fmt::Display for TargetSeen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.target)?;
        match &self.health {
            TargetHealth::Healthy => write!(f, "healthy"),
            TargetHealth::NotRegistered => write!(f, "not registered"),
            TargetHealth::Other {
                state,
                reason,
                description,
            } => {
                write!(f, "{state}")?;
                match (reason, description) {
                    (Some(reason), Some(description)) => write!(f, " ({reason}: {description})"),
                    (Some(text), None) | (None, Some(text)) => write!(f, " ({text})"),
                    (None, None) => Ok(()),
                }
            }
        }
    }
}

/// What `answer` (DescribeTargetHealth of one target group) says of each new task's target:
/// `addresses` (the tasks' private IPv4 addresses, in the order of the tasks) on `port`.
/// Reasons and descriptions pass through `redactor`.
pub fn targets_seen(
    addresses: &[&str],
    port: i32,
    answer: &[TargetHealthDescription],
    redactor: &Redactor,
) -> Vec<TargetSeen> {
    addresses
        .iter()
        .map(|address| {
            let listed = answer.iter().find(|description| {
                description.target().is_some_and(|target| {
                    target.id() == Some(*address) && target.port().is_none_or(|p| p == port)
                })
            });
            let health = match listed.and_then(|description| description.target_health()) {
                None if listed.is_none() => TargetHealth::NotRegistered,
                None => TargetHealth::Other {
                    state: "unknown".into(),
                    reason: None,
                    description: None,
                },
                Some(health) => match health.state() {
                    Some(TargetHealthStateEnum::Healthy) => TargetHealth::Healthy,
                    state => TargetHealth::Other {
                        state: state.map_or("unknown", |s| s.as_str()).to_owned(),
                        reason: health.reason().map(|r| redactor.redact(r.as_str())),
                        description: health
                            .description()
                            .filter(|d| !d.is_empty())
                            .map(|d| redactor.redact(d)),
                    },
                },
            };
            TargetSeen {
                target: format!("{address}:{port}"),
                health,
            }
        })
        .collect()
}

/// Whether the check passes: there is a new task and every one is healthy.
pub fn all_healthy(seen: &[TargetSeen]) -> bool {
    !seen.is_empty() && seen.iter().all(TargetSeen::is_healthy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_elasticloadbalancingv2::types::{
        TargetDescription, TargetHealth as ElbHealth, TargetHealthReasonEnum,
    };

    fn listed(id: &str, port: i32, health: ElbHealth) -> TargetHealthDescription {
        TargetHealthDescription::builder()
            .target(TargetDescription::builder().id(id).port(port).build())
            .target_health(health)
            .build()
    }

    fn state(state: TargetHealthStateEnum) -> ElbHealth {
        ElbHealth::builder().state(state).build()
    }

    fn shown(seen: &[TargetSeen]) -> Vec<String> {
        seen.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn every_new_task_healthy_passes_and_old_targets_are_ignored() {
        let answer = [
            listed("10.0.3.7", 8080, state(TargetHealthStateEnum::Healthy)),
            listed("10.0.3.8", 8080, state(TargetHealthStateEnum::Healthy)),
            // An old task, draining: not one of the new tasks.
            listed("10.0.1.2", 8080, state(TargetHealthStateEnum::Draining)),
        ];
        let seen = targets_seen(&["10.0.3.7", "10.0.3.8"], 8080, &answer, &Redactor::new());
        assert!(all_healthy(&seen), "{seen:?}");
        assert_eq!(
            shown(&seen),
            ["10.0.3.7:8080 healthy", "10.0.3.8:8080 healthy"]
        );
    }

    #[test]
    fn unhealthy_initial_and_unregistered_targets_fail_with_what_was_seen() {
        let unhealthy = ElbHealth::builder()
            .state(TargetHealthStateEnum::Unhealthy)
            .reason(TargetHealthReasonEnum::ResponseCodeMismatch)
            .description("Health checks failed with these codes: [500]")
            .build();
        let initial = ElbHealth::builder()
            .state(TargetHealthStateEnum::Initial)
            .reason(TargetHealthReasonEnum::RegistrationInProgress)
            .build();
        let answer = [
            listed("10.0.3.7", 8080, unhealthy),
            listed("10.0.3.9", 8080, initial),
            // The right address on another port is another target.
            listed("10.0.3.8", 9000, state(TargetHealthStateEnum::Healthy)),
        ];
        let seen = targets_seen(
            &["10.0.3.7", "10.0.3.8", "10.0.3.9"],
            8080,
            &answer,
            &Redactor::new(),
        );
        assert!(!all_healthy(&seen));
        assert_eq!(
            shown(&seen),
            [
                "10.0.3.7:8080 unhealthy (Target.ResponseCodeMismatch: Health checks failed \
                 with these codes: [500])",
                "10.0.3.8:8080 not registered",
                "10.0.3.9:8080 initial (Elb.RegistrationInProgress)",
            ]
        );
    }

    #[test]
    fn no_new_task_is_no_pass_and_descriptions_are_redacted() {
        assert!(!all_healthy(&[]));
        let health = ElbHealth::builder()
            .state(TargetHealthStateEnum::Unhealthy)
            .reason(TargetHealthReasonEnum::Timeout)
            .description("no answer from secret-host-123")
            .build();
        let seen = targets_seen(
            &["10.0.3.7"],
            80,
            &[listed("10.0.3.7", 80, health)],
            &Redactor::from_values(["secret-host-123"]),
        );
        assert_eq!(
            shown(&seen),
            ["10.0.3.7:80 unhealthy (Target.Timeout: no answer from [REDACTED])"]
        );
    }
}
