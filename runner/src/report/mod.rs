//! Reporters: render events for people and machines. They only consume events.
//!
//! `EventSink` is what execution holds: it redacts each event's secrets, numbers it, hands it to
//! the reporter, and keeps a JSON copy for the run's event log in the store.

mod github;
mod plain;
mod terminal;

pub use github::{
    CommandToken, GithubActionsReporter, SummaryLinks, diagnostic_annotation, escape_data,
    escape_property, job_summary, output_entry, run_outputs, workflow_command,
};
pub use plain::{JsonReporter, PlainReporter, describe};
pub use terminal::TerminalReporter;

use crate::event::Event;
use crate::redact::Redactor;
use std::sync::{Arc, Mutex};

/// Renders events.
pub trait Reporter: Send {
    fn event(&mut self, event: &Event);
    /// Called once when the run ends, to flush or close progress displays.
    fn finish(&mut self) {}
}

/// A reporter that drops everything (tests, `--quiet`).
pub struct NullReporter;

impl Reporter for NullReporter {
    fn event(&mut self, _: &Event) {}
}

/// Where execution sends events. Cloning shares the same reporter and log.
#[derive(Clone)]
pub struct EventSink {
    inner: Arc<Mutex<SinkState>>,
    /// The run's secrets: no event reaches the reporter or the store before it is redacted.
    redactor: Redactor,
}

struct SinkState {
    reporter: Box<dyn Reporter>,
    next_seq: u64,
    /// Events not yet written to the store: (sequence number, JSON).
    unsaved: Vec<(u64, String)>,
    /// Every event, kept for callers that inspect a finished run (tests, summaries).
    history: Vec<Event>,
}

impl EventSink {
    pub fn new(reporter: Box<dyn Reporter>) -> Self {
        EventSink {
            inner: Arc::new(Mutex::new(SinkState {
                reporter,
                next_seq: 1,
                unsaved: Vec::new(),
                history: Vec::new(),
            })),
            redactor: Redactor::new(),
        }
    }

    /// The sink's redactor: register a secret here the moment the run learns it.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Continue numbering after events a run already has in the store (resume).
    pub fn start_at(&self, next_seq: u64) {
        self.lock().next_seq = next_seq;
    }

    pub fn emit(&self, event: Event) {
        let event = redact_event(&self.redactor, event);
        let mut state = self.lock();
        state.reporter.event(&event);
        let seq = state.next_seq;
        state.next_seq += 1;
        if let Ok(json) = serde_json::to_string(&event) {
            state.unsaved.push((seq, json));
        }
        state.history.push(event);
    }

    /// Take the events not yet saved, for the store.
    pub fn take_unsaved(&self) -> Vec<(u64, String)> {
        std::mem::take(&mut self.lock().unsaved)
    }

    pub fn history(&self) -> Vec<Event> {
        self.lock().history.clone()
    }

    pub fn finish(&self) {
        self.lock().reporter.finish();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SinkState> {
        // A panic while rendering must not stop the run from recording its state.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `event` with every secret in any of its texts replaced.
fn redact_event(redactor: &Redactor, event: Event) -> Event {
    // Never hand on an event that could not be checked.
    redactor
        .redact_texts(&event)
        .unwrap_or_else(|| Event::Notice {
            stage: None,
            message: "(an event was withheld: it could not be checked for secrets)".into(),
        })
}
