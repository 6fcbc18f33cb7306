//! What a stage's result makes of the stage and of the run: the one mapping from a step's
//! result (done, waiting at a gate, stopped from outside, failed, or cancelled by a signal) to
//! the stage's final status, outputs and error, and whether the run stops there and how.

use super::{RunOutcome, StageFailure, StepResult};
use crate::run::{RunId, RunStatus, StageOutputs, StageStatus};

/// How a stage ends: what its record says, and the run's outcome if the run stops here.
#[derive(Debug)]
pub(super) struct StageEnd {
    pub(super) status: StageStatus,
    pub(super) outputs: StageOutputs,
    pub(super) error: Option<String>,
    /// `None`: the run goes on to its next stage.
    pub(super) stop: Option<RunOutcome>,
}

/// The end of stage `stage` of run `run`. `result` is `None` when the run was cancelled
/// (Ctrl-C, SIGTERM) during the stage; `lock_lost` says whether the run had lost its deploy
/// lease by then, which a failure reports. A failed stage's later stages are the caller's to
/// skip.
pub(super) fn stage_end(
    run: &RunId,
    stage: &str,
    result: Option<Result<StepResult, StageFailure>>,
    lock_lost: bool,
) -> StageEnd {
    let stopping = |status, error: Option<String>| {
        Some(RunOutcome::of(
            run.clone(),
            status,
            Some(stage.to_owned()),
            error,
        ))
    };
    match result {
        None => {
            let message = format!(
                "cancelled during `{stage}`; `envelope-runner resume {run}` continues from this stage"
            );
            StageEnd {
                status: StageStatus::Cancelled,
                outputs: StageOutputs::default(),
                error: Some(message.clone()),
                stop: stopping(RunStatus::Cancelled, Some(message)),
            }
        }
        Some(Ok(StepResult::Done(outputs))) => StageEnd {
            status: StageStatus::Succeeded,
            outputs: *outputs,
            error: None,
            stop: None,
        },
        Some(Ok(StepResult::Waiting)) => StageEnd {
            status: StageStatus::Waiting,
            outputs: StageOutputs::default(),
            error: None,
            stop: stopping(RunStatus::Waiting, None),
        },
        Some(Ok(StepResult::Stopped(stopped))) => StageEnd {
            status: StageStatus::Cancelled,
            outputs: StageOutputs::default(),
            error: stopped.error.clone(),
            stop: Some(stopped),
        },
        Some(Err(failure)) => StageEnd {
            status: StageStatus::Failed,
            outputs: failure.outputs.map(|outputs| *outputs).unwrap_or_default(),
            error: Some(failure.message.clone()),
            stop: Some(RunOutcome {
                run: run.clone(),
                status: failure.status,
                stage: Some(stage.to_owned()),
                error: Some(failure.message),
                environment: failure.environment,
                lock_lost,
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> RunId {
        RunId("01jd0000000000000000000000".into())
    }

    fn outputs() -> StageOutputs {
        StageOutputs {
            image: Some("r/app@sha256:1".into()),
            ..StageOutputs::default()
        }
    }

    /// A stop from outside, as `stopped_from_outside` reports a superseded run.
    fn superseded() -> RunOutcome {
        RunOutcome::of(
            run(),
            RunStatus::Superseded,
            Some("deploy".into()),
            Some("superseded by a newer run".into()),
        )
    }

    fn failure(status: RunStatus, environment: bool) -> StageFailure {
        StageFailure {
            status,
            environment,
            outputs: Some(Box::new(outputs())),
            ..StageFailure::new("it broke")
        }
    }

    /// (what happened, the step's result, lease lost, stage status, outputs kept, error,
    /// run stops with (status, environment, lock lost)).
    type Row = (
        &'static str,
        Option<Result<StepResult, StageFailure>>,
        bool,
        StageStatus,
        StageOutputs,
        Option<&'static str>,
        Option<(RunStatus, bool, bool)>,
    );

    #[test]
    fn each_result_ends_the_stage_and_stops_the_run_or_not() {
        let cancelled = "cancelled during `deploy`; `envelope-runner resume 01jd0000000000000000000000` continues from this stage";
        let rows: Vec<Row> = vec![
            (
                "done: succeeded with its outputs, the run goes on",
                Some(Ok(StepResult::Done(Box::new(outputs())))),
                false,
                StageStatus::Succeeded,
                outputs(),
                None,
                None,
            ),
            (
                "waiting at a gate (`--until`): the run waits there",
                Some(Ok(StepResult::Waiting)),
                false,
                StageStatus::Waiting,
                StageOutputs::default(),
                None,
                Some((RunStatus::Waiting, false, false)),
            ),
            (
                "stopped from outside: cancelled with the stop's reason",
                Some(Ok(StepResult::Stopped(superseded()))),
                true,
                StageStatus::Cancelled,
                StageOutputs::default(),
                Some("superseded by a newer run"),
                Some((RunStatus::Superseded, false, false)),
            ),
            (
                "a signal: cancelled, and how to go on",
                None,
                false,
                StageStatus::Cancelled,
                StageOutputs::default(),
                Some(cancelled),
                Some((RunStatus::Cancelled, false, false)),
            ),
            (
                "a failure keeps what the stage did",
                Some(Err(failure(RunStatus::Failed, false))),
                false,
                StageStatus::Failed,
                outputs(),
                Some("it broke"),
                Some((RunStatus::Failed, false, false)),
            ),
            (
                "the environment's failure after the lease was lost says both",
                Some(Err(failure(RunStatus::Failed, true))),
                true,
                StageStatus::Failed,
                outputs(),
                Some("it broke"),
                Some((RunStatus::Failed, true, true)),
            ),
            (
                "a rejected or timed-out gate fails the stage and rejects the run",
                Some(Err(StageFailure {
                    status: RunStatus::Rejected,
                    ..StageFailure::new("approval timed out after 1h")
                })),
                false,
                StageStatus::Failed,
                StageOutputs::default(),
                Some("approval timed out after 1h"),
                Some((RunStatus::Rejected, false, false)),
            ),
        ];
        for (case, result, lock_lost, status, kept, error, stop) in rows {
            let end = stage_end(&run(), "deploy", result, lock_lost);
            assert_eq!(end.status, status, "{case}");
            assert_eq!(end.outputs, kept, "{case}");
            assert_eq!(end.error.as_deref(), error, "{case}");
            let Some((run_status, environment, lost)) = stop else {
                assert_eq!(end.stop, None, "{case}");
                continue;
            };
            let outcome = end.stop.expect(case);
            assert_eq!(outcome.run, run(), "{case}");
            assert_eq!(outcome.status, run_status, "{case}");
            assert_eq!(outcome.stage.as_deref(), Some("deploy"), "{case}");
            assert_eq!(outcome.error.as_deref(), error, "{case}");
            assert_eq!(
                (outcome.environment, outcome.lock_lost),
                (environment, lost),
                "{case}"
            );
        }
    }
}
