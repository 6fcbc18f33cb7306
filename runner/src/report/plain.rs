//! Plain-text lines with timestamps (logs, CI without a terminal) and JSON lines.

use crate::event::Event;
use crate::report::Reporter;
use crate::run::StageStatus;
use std::io::Write;

/// One line per event, prefixed with the time and the stage.
pub struct PlainReporter<W: Write + Send> {
    out: W,
    timestamps: bool,
}

impl<W: Write + Send> PlainReporter<W> {
    pub fn new(out: W, timestamps: bool) -> Self {
        PlainReporter { out, timestamps }
    }
}

/// The text of an event for people, or `None` for events not worth a line.
pub fn describe(event: &Event) -> Option<String> {
    Some(match event {
        Event::RunStarted {
            run,
            pipeline,
            git_ref,
        } => {
            format!("run {run} of pipeline `{pipeline}` at {git_ref}")
        }
        Event::StageStarted { stage, kind } if stage == kind.as_str() => {
            format!("[{stage}] started")
        }
        Event::StageStarted { stage, kind } => format!("[{stage}] started ({kind})"),
        Event::StageFinished {
            stage,
            status,
            seconds,
            error,
        } => match (status, error) {
            (StageStatus::Failed, Some(error)) => {
                format!("[{stage}] failed after {seconds:.1}s: {error}")
            }
            (StageStatus::Waiting, _) => format!("[{stage}] waiting"),
            (status, _) => format!("[{stage}] {} in {seconds:.1}s", status.as_str()),
        },
        Event::Log { stage, line } => format!("[{stage}] {line}"),
        Event::BuildStep {
            stage,
            step,
            cached,
            completed,
            seconds,
            error,
        } => {
            if let Some(error) = error {
                return Some(match seconds {
                    Some(seconds) => format!("[{stage}] FAILED {step} ({seconds:.1}s): {error}"),
                    None => format!("[{stage}] FAILED {step}: {error}"),
                });
            }
            if !completed {
                return None;
            }
            match (cached, seconds) {
                (true, _) => format!("[{stage}] CACHED {step}"),
                (false, Some(seconds)) => format!("[{stage}] DONE {step} ({seconds:.1}s)"),
                (false, None) => format!("[{stage}] DONE {step}"),
            }
        }
        Event::PushProgress {
            stage,
            layer,
            status,
        } => format!("[{stage}] {layer}: {status}"),
        Event::Output { stage, key, value } => format!("[{stage}] {key}: {value}"),
        Event::AwaitingApproval { stage, run } => {
            format!("[{stage}] waiting for approval: envelope-runner approve {run} (or --reject)")
        }
        Event::ServiceProgress {
            stage,
            service,
            running,
            desired,
            pending,
            rollout,
        } => format!(
            "[{stage}] {service}: {running}/{desired} running, {pending} pending, rollout {rollout}"
        ),
        Event::Notice {
            stage: Some(stage),
            message,
        } => format!("[{stage}] note: {message}"),
        Event::Notice {
            stage: None,
            message,
        } => format!("note: {message}"),
        Event::Warning {
            stage: Some(stage),
            message,
        } => format!("[{stage}] warning: {message}"),
        Event::Warning {
            stage: None,
            message,
        } => format!("warning: {message}"),
        Event::Notified { ending, to } => format!(
            "notified how the run ended ({}): {}",
            ending.as_str(),
            to.join(", ")
        ),
        Event::RunFinished {
            run,
            status,
            seconds,
        } => {
            format!(
                "run {run} {} in {seconds:.1}s",
                serde_json::to_value(status).ok()?.as_str()?
            )
        }
    })
}

impl<W: Write + Send> Reporter for PlainReporter<W> {
    fn event(&mut self, event: &Event) {
        let Some(text) = describe(event) else { return };
        let _ = if self.timestamps {
            let now = chrono::Utc::now().format("%H:%M:%S%.3f");
            writeln!(self.out, "{now} {text}")
        } else {
            writeln!(self.out, "{text}")
        };
    }

    fn finish(&mut self) {
        let _ = self.out.flush();
    }
}

/// One JSON object per line, with a timestamp.
pub struct JsonReporter<W: Write + Send> {
    out: W,
}

impl<W: Write + Send> JsonReporter<W> {
    pub fn new(out: W) -> Self {
        JsonReporter { out }
    }
}

impl<W: Write + Send> Reporter for JsonReporter<W> {
    fn event(&mut self, event: &Event) {
        let mut value = serde_json::to_value(event).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.insert("time".into(), chrono::Utc::now().to_rfc3339().into());
        }
        let _ = writeln!(self.out, "{value}");
    }

    fn finish(&mut self) {
        let _ = self.out.flush();
    }
}
