//! What can go wrong in the ECS stages, written for the people who read the run's output.

use std::fmt::Write as _;
use std::time::Duration;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::Call;
use super::deploy::DeployFailure;
use super::retry::Failure;
use super::taskdef::TaskDefinitionError;
use crate::aws_error::{AwsFailure, AwsFailureKind};

#[derive(Debug, thiserror::Error)]
pub enum EcsError {
    /// An AWS call failed, after retrying when another attempt could help.
    #[error("could not {action} ({operation} on {target}): {message}")]
    Aws {
        action: &'static str,
        operation: &'static str,
        target: String,
        code: Option<String>,
        message: String,
        attempts: u32,
        environment: bool,
        /// The request may have been carried out (a timeout or a 5xx, not a refusal).
        transient: bool,
        /// AWS gave no usable answer to the last attempt: no connection, a timeout, a 5xx or
        /// throttling that outlasted every retry.
        unanswered: bool,
    },

    /// UpdateService went unanswered part way through a release. Nothing was rolled back
    /// (that needs the same AWS), so the release is out on some services and not on others
    /// until the run is retried.
    #[error(
        "{error}\nAWS gave no usable answer, so nothing was rolled back: the release is out on {} \
         and not yet on {}. Once AWS answers again, retry the run: it re-attaches to the \
         deployments already started and updates the rest (or roll back to an earlier run).",
        list_or_none(.updated),
        list_or_none(.pending)
    )]
    DeployInterrupted {
        error: Box<EcsError>,
        /// Services whose UpdateService went through, in deploy order.
        updated: Vec<String>,
        /// Services not updated yet, the one that failed first.
        pending: Vec<String>,
    },

    #[error(
        "service `{service}` does not exist in cluster `{cluster}`; check the stage's cluster and service names"
    )]
    ServiceNotFound { cluster: String, service: String },

    #[error(
        "service `{service}` in cluster `{cluster}` is {status}, not ACTIVE; only an active service can be deployed"
    )]
    ServiceNotActive {
        cluster: String,
        service: String,
        status: String,
    },

    #[error(
        "service `{service}` in cluster `{cluster}` has a desired count of 0, so a rollout would never \
         prove the new revision runs; scale it up first or remove it from the stage"
    )]
    ServiceScaledToZero { cluster: String, service: String },

    #[error(
        "service `{service}` uses the {controller} deployment controller; envelope-runner deploys \
         services that use ECS rolling deployments (deploymentController ECS)"
    )]
    UnsupportedDeploymentController { service: String, controller: String },

    #[error("task definition of service `{service}`: {source}")]
    TaskDefinition {
        service: String,
        #[source]
        source: TaskDefinitionError,
    },

    #[error(
        "task definition `{task_definition}` has no container named `{container}` (it has: {containers}); \
         check the migrate stage's `container`"
    )]
    ContainerNotFound {
        task_definition: String,
        container: String,
        containers: String,
    },

    /// The run no longer holds its pipeline's deploy lease: the change was not made.
    #[error(
        "stopped before it would {change}: {reason}. Nothing more was changed in AWS by this run; \
         another run of the pipeline may be deploying now (see `envelope-runner history`)"
    )]
    LeaseLost { change: String, reason: String },

    #[error("ECS did not start the migration task: {reasons}")]
    RunTaskRefused { reasons: String },

    #[error(
        "the migration task {task} failed to start: {reason}\n\
         It never ran, so there is no exit code; fix the cause and run the pipeline again."
    )]
    MigrationFailedToStart { task: String, reason: String },

    #[error("{}", migration_failed(.task, .container, *.exit_code, .reason.as_deref(), .last_lines, .log_stream.as_deref()))]
    MigrationFailed {
        task: String,
        container: String,
        exit_code: i32,
        reason: Option<String>,
        last_lines: Vec<String>,
        log_stream: Option<String>,
    },

    #[error(
        "the migration task {task} stopped ({stop_code}: {reason}) before container `{container}` \
         finished on its own; treat the migration as not run, check the database, and run the \
         pipeline again"
    )]
    MigrationInterrupted {
        task: String,
        container: String,
        stop_code: String,
        reason: String,
    },

    #[error(
        "the migration task {task} stopped ({stop_code}: {reason}) and ECS reported no exit code for \
         container `{container}`; the migration cannot be assumed to have run"
    )]
    MigrationNoExitCode {
        task: String,
        container: String,
        stop_code: String,
        reason: String,
    },

    #[error(
        "the migration task {task} was still running after {}{}; look at its logs, \
         then raise the stage's timeout or fix the migration",
        humantime::format_duration(*.waited),
        if *.stopped { " and was stopped" } else { " (stopping it failed: it may still run)" }
    )]
    MigrationTimedOut {
        task: String,
        waited: Duration,
        stopped: bool,
    },

    #[error(transparent)]
    Deploy(Box<DeployFailure>),

    #[error("unexpected answer from AWS: {what}")]
    Unexpected { what: String },
}

impl EcsError {
    /// Whether the environment (AWS unreachable, throttled beyond retrying, credentials,
    /// permissions, a task that could not pull its image) is at fault rather than the pipeline
    /// or the release: maps to [`crate::exit_codes::ENVIRONMENT`].
    pub fn is_environment(&self) -> bool {
        match self {
            EcsError::Aws { environment, .. } => *environment,
            EcsError::MigrationFailedToStart { .. }
            | EcsError::RunTaskRefused { .. }
            | EcsError::DeployInterrupted { .. }
            | EcsError::Unexpected { .. } => true,
            EcsError::ServiceNotFound { .. }
            | EcsError::ServiceNotActive { .. }
            | EcsError::ServiceScaledToZero { .. }
            | EcsError::UnsupportedDeploymentController { .. }
            | EcsError::TaskDefinition { .. }
            | EcsError::ContainerNotFound { .. }
            | EcsError::MigrationFailed { .. }
            | EcsError::MigrationInterrupted { .. }
            | EcsError::MigrationNoExitCode { .. }
            | EcsError::MigrationTimedOut { .. }
            | EcsError::LeaseLost { .. }
            | EcsError::Deploy(_) => false,
        }
    }

    /// Whether AWS gave no usable answer (see [`EcsError::Aws`]'s `unanswered`): any other
    /// change made now would most likely go unanswered too.
    pub fn is_unanswered(&self) -> bool {
        matches!(
            self,
            EcsError::Aws {
                unanswered: true,
                ..
            }
        )
    }

    /// The AWS error code, when an AWS call failed.
    pub fn aws_code(&self) -> Option<&str> {
        match self {
            EcsError::Aws { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    pub(crate) fn from_sdk<E>(
        call: &Call<'_>,
        error: &SdkError<E, HttpResponse>,
        failure: Failure,
        attempts: u32,
    ) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let read = AwsFailure::during(error, &crate::timeouts::call_name(call.operation));
        let code = read.code.clone();
        let message = read.message().to_owned();
        let access = read.kind == AwsFailureKind::AccessDenied;
        let environment = read.is_environment()
            || matches!(failure, Failure::Throttled | Failure::Transient)
            || matches!(error, SdkError::ConstructionFailure(_));
        let hint = if read.is_credentials() {
            // The message already says what to do.
            String::new()
        } else if matches!(failure, Failure::Throttled) {
            format!(
                " (still throttled after {attempts} attempts; try again when fewer deploys run at once)"
            )
        } else if matches!(failure, Failure::Transient) && attempts > 1 {
            format!(" (after {attempts} attempts)")
        } else if access {
            format!(
                "; check that the runner's AWS identity may call {}",
                call.operation
            )
        } else {
            String::new()
        };
        EcsError::Aws {
            action: call.action,
            operation: call.operation,
            target: call.target.to_owned(),
            code,
            message: message + &hint,
            attempts,
            environment,
            transient: matches!(failure, Failure::Transient),
            unanswered: matches!(failure, Failure::Transient | Failure::Throttled),
        }
    }
}

/// `a, b and c`, or `no service`.
fn list_or_none(names: &[String]) -> String {
    match names {
        [] => "no service".to_owned(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

fn migration_failed(
    task: &str,
    container: &str,
    exit_code: i32,
    reason: Option<&str>,
    last_lines: &[String],
    log_stream: Option<&str>,
) -> String {
    let mut out = format!(
        "the migration failed: container `{container}` of task {task} exited with code {exit_code}"
    );
    if let Some(reason) = reason.filter(|r| !r.is_empty()) {
        let _ = write!(out, " ({reason})");
    }
    if last_lines.is_empty() {
        out.push_str("\nIt wrote no log lines");
        match log_stream {
            Some(stream) => {
                let _ = write!(out, " to {stream}");
            }
            None => out.push_str(" (its container has no awslogs log configuration)"),
        }
        out.push('.');
    } else {
        let _ = write!(out, "\nLast {} log lines", last_lines.len());
        if let Some(stream) = log_stream {
            let _ = write!(out, " ({stream})");
        }
        out.push(':');
        for line in last_lines {
            let _ = write!(out, "\n  {line}");
        }
    }
    out.push_str("\nThe deploy did not start. Fix the migration and run the pipeline again.");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unanswered() -> EcsError {
        EcsError::Aws {
            action: "update the service to the new revision",
            operation: "ecs:UpdateService",
            target: "envelope-prod-worker".into(),
            code: None,
            message: "no usable answer from AWS: connection refused (after 8 attempts)".into(),
            attempts: 8,
            environment: true,
            transient: true,
            unanswered: true,
        }
    }

    #[test]
    fn an_interrupted_deploy_names_the_services_on_each_side() {
        let error = EcsError::DeployInterrupted {
            error: Box::new(unanswered()),
            updated: vec!["envelope-prod-api".into()],
            pending: vec![
                "envelope-prod-worker".into(),
                "envelope-prod-scheduler".into(),
                "envelope-prod-reverb".into(),
            ],
        };
        assert!(error.is_environment());
        assert!(!error.is_unanswered(), "the stage's error, not a call's");
        assert_eq!(
            error.to_string(),
            "could not update the service to the new revision (ecs:UpdateService on \
             envelope-prod-worker): no usable answer from AWS: connection refused (after 8 \
             attempts)\nAWS gave no usable answer, so nothing was rolled back: the release is \
             out on envelope-prod-api and not yet on envelope-prod-worker, envelope-prod-scheduler \
             and envelope-prod-reverb. Once AWS answers again, retry the run: it re-attaches to \
             the deployments already started and updates the rest (or roll back to an earlier \
             run)."
        );
        let none = EcsError::DeployInterrupted {
            error: Box::new(unanswered()),
            updated: vec![],
            pending: vec!["envelope-prod-api".into()],
        };
        assert!(
            none.to_string()
                .contains("the release is out on no service and not yet on envelope-prod-api.")
        );
    }
}
