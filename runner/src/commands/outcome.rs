//! How a run command's run ended: what it prints ([`report`]) and its exit code
//! ([`exit_code`], the one place a run's result becomes a process exit code).

use crate::exec::driver::{Driver, DriverError, RunOutcome};
use crate::exit_codes;
use crate::run::RunStatus;
use std::io::Write;

/// Print how the run ended: its status (and what to do next) on standard output and a failed
/// stage's error on standard error; or the error that stopped the driver, redacted.
pub(super) fn report(driver: &Driver, result: &Result<RunOutcome, DriverError>) {
    match result {
        Ok(outcome) => report_outcome(outcome),
        Err(error) => {
            let message = driver.events.redactor().redact(&error.to_string());
            eprintln!("error: {message}");
        }
    }
}

fn report_outcome(outcome: &RunOutcome) {
    let mut stdout = std::io::stdout().lock();
    let _ = match (&outcome.status, &outcome.stage) {
        (RunStatus::Waiting, Some(stage)) => writeln!(
            stdout,
            "run {} is waiting at `{stage}`: approve with `envelope-runner approve {}`, then `envelope-runner resume {}`",
            outcome.run, outcome.run, outcome.run
        ),
        (RunStatus::Waiting, None) => writeln!(
            stdout,
            "run {} stopped as asked; continue with `envelope-runner resume {}`",
            outcome.run, outcome.run
        ),
        (status, _) => writeln!(stdout, "run {} {}", outcome.run, status.as_str()),
    };
    if let Some(error) = &outcome.error {
        let _ = writeln!(
            std::io::stderr(),
            "error: stage `{}` failed: {error}",
            outcome.stage.as_deref().unwrap_or("?")
        );
    }
}

/// The exit code of a run command. `paused_as_asked`: in GitHub Actions, a run that stopped at
/// the approval gate `--until` named did what was asked and exits 0, so the job is green (see
/// [`crate::trigger::actions::paused_as_asked`]).
pub(super) fn exit_code(result: &Result<RunOutcome, DriverError>, paused_as_asked: bool) -> i32 {
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(error) => return error_code(error),
    };
    if paused_as_asked && outcome.status == RunStatus::Waiting {
        return exit_codes::OK;
    }
    if outcome.lock_lost {
        return exit_codes::LOCKED_OR_SUPERSEDED;
    }
    if outcome.environment && outcome.status == RunStatus::Failed {
        return exit_codes::ENVIRONMENT;
    }
    status_code(outcome.status, outcome.stage.is_some())
}

/// The exit code for a run's status; `at_stage`: a waiting run waits at a stage (an approval
/// gate) rather than having stopped after `--until`.
pub(super) fn status_code(status: RunStatus, at_stage: bool) -> i32 {
    match status {
        RunStatus::Succeeded => exit_codes::OK,
        RunStatus::Waiting if at_stage => exit_codes::WAITING,
        RunStatus::Waiting | RunStatus::Queued | RunStatus::Running => exit_codes::OK,
        RunStatus::Failed => exit_codes::STAGE_FAILED,
        RunStatus::Rejected => exit_codes::APPROVAL_DENIED,
        RunStatus::Cancelled => exit_codes::CANCELLED,
        RunStatus::Superseded => exit_codes::LOCKED_OR_SUPERSEDED,
    }
}

/// The exit code for an error that stopped the driver before or outside the run's stages.
fn error_code(error: &DriverError) -> i32 {
    match error {
        DriverError::Plan(_)
        | DriverError::UnknownRun(_)
        | DriverError::WrongPipeline { .. }
        | DriverError::NothingToRollBackTo(_) => exit_codes::INVALID_INPUT,
        DriverError::Store(error) => error.exit_code(),
        DriverError::AwsTarget(error) if error.is_environment() => exit_codes::ENVIRONMENT,
        DriverError::AwsTarget(_) => exit_codes::INVALID_INPUT,
    }
}
