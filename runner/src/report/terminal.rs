//! A live view for terminals: a spinner line per running stage with its latest activity, and
//! finished stages and important lines printed above it.

use crate::event::Event;
use crate::report::Reporter;
use crate::report::plain::describe;
use crate::run::StageStatus;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::time::Duration;

pub struct TerminalReporter {
    progress: MultiProgress,
    bars: BTreeMap<String, ProgressBar>,
}

impl Default for TerminalReporter {
    fn default() -> Self {
        Self::new()
    }
}

impl TerminalReporter {
    pub fn new() -> Self {
        TerminalReporter {
            progress: MultiProgress::new(),
            bars: BTreeMap::new(),
        }
    }

    fn bar(&mut self, stage: &str) -> &ProgressBar {
        let progress = &self.progress;
        self.bars.entry(stage.to_owned()).or_insert_with(|| {
            let bar = progress.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:.bold} {elapsed:>4} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(stage.to_owned());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        })
    }

    fn print(&self, line: &str) {
        let _ = self.progress.println(line);
    }
}

impl Reporter for TerminalReporter {
    fn event(&mut self, event: &Event) {
        match event {
            Event::StageStarted { stage, .. } => {
                self.bar(stage).set_message("started");
            }
            Event::StageFinished { stage, status, .. } => {
                if let Some(bar) = self.bars.remove(stage) {
                    bar.finish_and_clear();
                }
                let mark = match status {
                    StageStatus::Succeeded => "✔",
                    StageStatus::Failed => "✘",
                    StageStatus::Waiting => "⏸",
                    _ => "·",
                };
                if let Some(text) = describe(event) {
                    self.print(&format!("{mark} {text}"));
                }
            }
            Event::Log { stage, line } => {
                let line = line.clone();
                self.bar(stage).set_message(line);
            }
            Event::BuildStep {
                stage,
                step,
                cached,
                completed,
                error,
                ..
            } => {
                let message = format!("{}{step}", if *cached { "CACHED " } else { "" });
                self.bar(stage).set_message(message);
                if (*completed || error.is_some())
                    && let Some(text) = describe(event)
                {
                    self.print(&text);
                }
            }
            Event::PushProgress {
                stage,
                layer,
                status,
            } => {
                let message = format!("{layer}: {status}");
                self.bar(stage).set_message(message);
            }
            Event::ServiceProgress { stage, .. } => {
                if let Some(text) = describe(event) {
                    self.bar(stage).set_message(text);
                }
            }
            other => {
                if let Some(text) = describe(other) {
                    self.print(&text);
                }
            }
        }
    }

    fn finish(&mut self) {
        for (_, bar) in std::mem::take(&mut self.bars) {
            bar.finish_and_clear();
        }
    }
}
