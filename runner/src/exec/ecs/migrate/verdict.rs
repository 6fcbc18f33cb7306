//! How a task ended for the migration's container: the [`Verdict`] read from its exit code
//! together with the task's stop code. Pure.

use aws_sdk_ecs::types::Task;

/// How a stopped task is judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Succeeded,
    Exited { code: i32, reason: Option<String> },
    FailedToStart { reason: String },
    Interrupted { stop_code: String, reason: String },
    NoExitCode { stop_code: String, reason: String },
}

/// How the task ended for `container`, or `None` while it still runs. `essential`: whether
/// the container stops its task when it exits (if not, its own exit decides).
pub(crate) fn judge(task: &Task, container: &str, essential: bool) -> Option<Verdict> {
    let named = task
        .containers
        .iter()
        .flatten()
        .find(|c| c.name.as_deref() == Some(container));
    let stopped = task.last_status.as_deref() == Some("STOPPED");
    if !stopped {
        let finished =
            named.filter(|c| !essential && c.last_status.as_deref() == Some("STOPPED"))?;
        let code = finished.exit_code?;
        return Some(if code == 0 {
            Verdict::Succeeded
        } else {
            Verdict::Exited {
                code,
                reason: finished.reason.clone(),
            }
        });
    }
    let stop_code = task
        .stop_code
        .as_ref()
        .map(|c| c.as_str().to_owned())
        .unwrap_or_default();
    let mut reason = task.stopped_reason.clone().unwrap_or_default();
    if let Some(container_reason) = named
        .and_then(|c| c.reason.as_deref())
        .filter(|r| !r.is_empty() && !reason.contains(*r))
    {
        reason = if reason.is_empty() {
            container_reason.to_owned()
        } else {
            format!("{reason}; container: {container_reason}")
        };
    }
    if stop_code == "TaskFailedToStart" {
        return Some(Verdict::FailedToStart {
            reason: if reason.is_empty() {
                "no reason given".to_owned()
            } else {
                reason
            },
        });
    }
    let Some(code) = named.and_then(|c| c.exit_code) else {
        return Some(Verdict::NoExitCode { stop_code, reason });
    };
    // Stopped from outside (StopTask, the scheduler, Spot, maintenance): whatever the exit
    // code says, the migration did not finish on its own.
    if matches!(
        stop_code.as_str(),
        "UserInitiated" | "ServiceSchedulerInitiated" | "SpotInterruption" | "TerminationNotice"
    ) {
        return Some(Verdict::Interrupted { stop_code, reason });
    }
    Some(if code == 0 {
        Verdict::Succeeded
    } else {
        Verdict::Exited {
            code,
            reason: named.and_then(|c| c.reason.clone()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::{Container, TaskStopCode};

    fn task(
        status: &str,
        stop_code: Option<&str>,
        reason: &str,
        containers: &[(&str, &str, Option<i32>)],
    ) -> Task {
        let mut task = Task::builder().last_status(status).stopped_reason(reason);
        if let Some(code) = stop_code {
            task = task.stop_code(TaskStopCode::from(code));
        }
        for (name, status, exit_code) in containers {
            task = task.containers(
                Container::builder()
                    .name(*name)
                    .last_status(*status)
                    .set_exit_code(*exit_code)
                    .build(),
            );
        }
        task.build()
    }

    #[test]
    fn the_named_container_and_the_stop_code_decide_together() {
        use Verdict::*;
        let exited = Some("EssentialContainerExited");
        let cases: Vec<(&str, Task, Option<Verdict>)> = vec![
            (
                "still running",
                task("RUNNING", None, "", &[("api", "RUNNING", None)]),
                None,
            ),
            (
                "provisioning",
                task("PROVISIONING", None, "", &[("api", "PENDING", None)]),
                None,
            ),
            (
                "exit 0",
                task(
                    "STOPPED",
                    exited,
                    "Essential container exited",
                    &[("api", "STOPPED", Some(0))],
                ),
                Some(Succeeded),
            ),
            (
                "exit 1",
                task(
                    "STOPPED",
                    exited,
                    "Essential container exited",
                    &[("api", "STOPPED", Some(1))],
                ),
                Some(Exited {
                    code: 1,
                    reason: None,
                }),
            ),
            (
                "never started, no exit code",
                task(
                    "STOPPED",
                    Some("TaskFailedToStart"),
                    "CannotPullContainerError: pull access denied",
                    &[("api", "STOPPED", None)],
                ),
                Some(FailedToStart {
                    reason: "CannotPullContainerError: pull access denied".into(),
                }),
            ),
            (
                "never started even though some endpoint reports exit 0",
                task(
                    "STOPPED",
                    Some("TaskFailedToStart"),
                    "ResourceInitializationError: secrets",
                    &[("api", "STOPPED", Some(0))],
                ),
                Some(FailedToStart {
                    reason: "ResourceInitializationError: secrets".into(),
                }),
            ),
            (
                "stopped without an exit code",
                task(
                    "STOPPED",
                    exited,
                    "Essential container exited",
                    &[("api", "STOPPED", None)],
                ),
                Some(NoExitCode {
                    stop_code: "EssentialContainerExited".into(),
                    reason: "Essential container exited".into(),
                }),
            ),
            (
                "the named container is missing",
                task(
                    "STOPPED",
                    exited,
                    "Essential container exited",
                    &[("sidecar", "STOPPED", Some(0))],
                ),
                Some(NoExitCode {
                    stop_code: "EssentialContainerExited".into(),
                    reason: "Essential container exited".into(),
                }),
            ),
            (
                "stopped by a person: exit 0 is not success",
                task(
                    "STOPPED",
                    Some("UserInitiated"),
                    "Task stopped by user",
                    &[("api", "STOPPED", Some(0))],
                ),
                Some(Interrupted {
                    stop_code: "UserInitiated".into(),
                    reason: "Task stopped by user".into(),
                }),
            ),
            (
                "spot interruption",
                task(
                    "STOPPED",
                    Some("SpotInterruption"),
                    "Spot",
                    &[("api", "STOPPED", Some(143))],
                ),
                Some(Interrupted {
                    stop_code: "SpotInterruption".into(),
                    reason: "Spot".into(),
                }),
            ),
            (
                "a sidecar exited first: the named container's code counts",
                task(
                    "STOPPED",
                    exited,
                    "Essential container exited",
                    &[("sidecar", "STOPPED", Some(0)), ("api", "STOPPED", Some(2))],
                ),
                Some(Exited {
                    code: 2,
                    reason: None,
                }),
            ),
        ];
        for (name, task, expected) in cases {
            assert_eq!(judge(&task, "api", true), expected, "{name}");
        }
    }

    #[test]
    fn a_non_essential_container_is_judged_when_it_finishes() {
        let running = task(
            "RUNNING",
            None,
            "",
            &[("api", "STOPPED", Some(0)), ("sidecar", "RUNNING", None)],
        );
        assert_eq!(judge(&running, "api", false), Some(Verdict::Succeeded));
        assert_eq!(
            judge(&running, "api", true),
            None,
            "an essential one stops its task: wait for that"
        );
    }
}
