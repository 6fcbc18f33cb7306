//! Events that execution emits and reporters consume.
//!
//! The executor never formats output; it sends these. Reporters (terminal, plain lines,
//! JSON, GitHub Actions) render them, so every output mode sees the same facts.

use crate::run::{RunId, StageStatus};
use serde::{Deserialize, Serialize};

/// Something that happened during a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run: RunId,
        pipeline: String,
        git_ref: String,
    },
    StageStarted {
        stage: String,
        kind: crate::run::StageKind,
    },
    StageFinished {
        stage: String,
        status: StageStatus,
        seconds: f64,
        error: Option<String>,
    },
    /// A line of output from a stage (buildspec command, build step, migration task log).
    Log { stage: String, line: String },
    /// A build step (BuildKit vertex) changed state.
    BuildStep {
        stage: String,
        step: String,
        cached: bool,
        completed: bool,
        seconds: Option<f64>,
        /// Why the step failed, short (`exit code 3`); `None` while it has not failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// Layer upload progress of a push.
    PushProgress {
        stage: String,
        layer: String,
        status: String,
    },
    /// A value a stage produced that people care about (digest, task definition, deployment).
    Output {
        stage: String,
        key: String,
        value: String,
    },
    /// The run is paused at an approval gate.
    AwaitingApproval { stage: String, run: RunId },
    /// Rollout progress of one ECS service.
    ServiceProgress {
        stage: String,
        service: String,
        running: i32,
        desired: i32,
        pending: i32,
        rollout: String,
    },
    /// A message worth showing that is not an error.
    Notice {
        stage: Option<String>,
        message: String,
    },
    /// Something went wrong that does not stop the run but that people must see (an approval
    /// notice that could not be sent): one readable line, shown in every output mode and kept
    /// in the stage's record.
    Warning {
        stage: Option<String>,
        message: String,
    },
    /// The end of the run was told to the pipeline's `notify:` targets that took it
    /// (`sns:<topic>`, `webhook:<origin>`). Kept with the run's events, so one ending is told
    /// once even when the process is killed after sending.
    Notified {
        ending: crate::pipeline::model::RunEnding,
        to: Vec<String>,
    },
    RunFinished {
        run: RunId,
        status: crate::run::RunStatus,
        seconds: f64,
    },
}
