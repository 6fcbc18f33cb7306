//! Run events as the agent's log lines: one line per event, tagged with the run and pipeline,
//! so that several runs executing at once stay readable.

use envelope_runner::event::Event;
use envelope_runner::report::{Reporter, describe};
use envelope_runner::run::RunId;

/// Writes each event through `tracing`.
pub struct LogReporter {
    run: RunId,
    pipeline: String,
}

impl LogReporter {
    pub fn new(run: RunId, pipeline: String) -> Self {
        LogReporter { run, pipeline }
    }
}

impl Reporter for LogReporter {
    fn event(&mut self, event: &Event) {
        let Some(line) = describe(event) else {
            return;
        };
        match event {
            Event::StageFinished { error: Some(_), .. } => {
                tracing::warn!(run = %self.run, pipeline = %self.pipeline, "{line}")
            }
            _ => tracing::info!(run = %self.run, pipeline = %self.pipeline, "{line}"),
        }
    }
}
