//! How a run command's run ended: what it prints ([`report`]) and its exit code
//! ([`exit_code`], the one place a run's result becomes a process exit code).

use crate::exec::driver::{DriverError, RunOutcome};
use crate::exit_codes;
use crate::pipeline::CompiledPipeline;
use crate::pipeline::model::Stage;
use crate::redact::Redactor;
use crate::run::RunStatus;
use std::io::Write;

/// Print how the run ended: its status (and what to do next) on standard output and a failed
/// stage's error on standard error; or the error that stopped the driver, with the run's
/// secrets (`redactor`) taken out.
pub(super) fn report(redactor: &Redactor, result: &Result<RunOutcome, DriverError>) {
    match result {
        Ok(outcome) => report_outcome(outcome),
        Err(error) => {
            let message = redactor.redact(&error.to_string());
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

/// The exit code of a run command of `compiled`. `actions_until`: in GitHub Actions, the
/// `--until` the run was given; a run that waits at the approval gate it names did what was
/// asked and exits 0, so the job is green (its `status` output says `waiting`). Elsewhere a run
/// waiting at a gate exits `WAITING`.
pub(super) fn exit_code(
    result: &Result<RunOutcome, DriverError>,
    actions_until: Option<&str>,
    compiled: &CompiledPipeline,
) -> i32 {
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(error) => return error_code(error),
    };
    if paused_as_asked(outcome, actions_until, compiled) {
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

/// Whether a waiting run stopped at the approval gate `until` named (by name or kind).
fn paused_as_asked(outcome: &RunOutcome, until: Option<&str>, compiled: &CompiledPipeline) -> bool {
    let (RunStatus::Waiting, Some(until), Some(stage)) =
        (outcome.status, until, outcome.stage.as_deref())
    else {
        return false;
    };
    compiled.pipeline.stages.iter().any(|candidate| {
        matches!(candidate, Stage::Approval(_))
            && candidate.name() == stage
            && (until == stage || until == candidate.kind().as_str())
    })
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
pub(super) fn error_code(error: &DriverError) -> i32 {
    match error {
        DriverError::Plan(_)
        | DriverError::UnknownRun(_)
        | DriverError::WrongPipeline { .. }
        | DriverError::NothingToRollBackTo(_)
        | DriverError::NothingToPromote(_) => exit_codes::INVALID_INPUT,
        DriverError::Store(error) => error.exit_code(),
        DriverError::AwsTarget(error) if error.is_environment() => exit_codes::ENVIRONMENT,
        DriverError::AwsTarget(_) => exit_codes::INVALID_INPUT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::RunId;

    fn waiting_at(stage: Option<&str>) -> Result<RunOutcome, DriverError> {
        Ok(RunOutcome {
            run: RunId("01run".into()),
            status: RunStatus::Waiting,
            stage: stage.map(str::to_owned),
            error: None,
            environment: false,
            lock_lost: false,
        })
    }

    #[test]
    fn in_github_actions_a_run_waiting_at_the_gate_until_names_exits_0() {
        let compiled = crate::pipeline::compile_text(
            "source:\n  repository: acme/app\n  tags: [\"v*\"]\nstages:\n  - build:\n      image: app\n  \
             - approval:\n      name: staging-gate\n      timeout: 1h\n  \
             - approval:\n      name: prod-gate\n      timeout: 1h\n",
        );
        // (waiting at, --until in GitHub Actions, exit code)
        let cases = [
            (Some("staging-gate"), Some("staging-gate"), exit_codes::OK),
            (Some("staging-gate"), Some("approval"), exit_codes::OK),
            (Some("prod-gate"), Some("staging-gate"), exit_codes::WAITING),
            (Some("staging-gate"), Some("build"), exit_codes::WAITING),
            // Outside GitHub Actions, or without --until, a gate keeps its exit code.
            (Some("staging-gate"), None, exit_codes::WAITING),
            // Stopped after --until at a stage that is not a gate.
            (None, Some("push"), exit_codes::OK),
            (None, None, exit_codes::OK),
        ];
        for (stage, until, code) in cases {
            assert_eq!(
                exit_code(&waiting_at(stage), until, &compiled),
                code,
                "waiting at {stage:?}, --until {until:?}"
            );
        }
        let failed = Ok(RunOutcome {
            status: RunStatus::Failed,
            ..waiting_at(Some("staging-gate")).expect("an outcome")
        });
        assert_eq!(
            exit_code(&failed, Some("staging-gate"), &compiled),
            exit_codes::STAGE_FAILED
        );
    }
}
