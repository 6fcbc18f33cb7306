//! Folding BuildKit's status messages into build steps, progress events and log lines.
//!
//! BuildKit reports a vertex (a step) many times as it changes, and its output in arbitrary
//! chunks. The tracker keeps one record per vertex, reports a step only when something about it
//! changed, cuts output into whole lines, and passes every string through the secret scrubber
//! before anyone sees it.

use crate::redact::Redactor;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bollard::grpc::build::moby::buildkit::v1::StatusResponse;

use super::{BuildProgress, BuildStep};

/// How BuildKit names the step that imports a `cache_from` image's cache.
pub(crate) const CACHE_IMPORT_STEP: &str = "importing cache manifest from ";

/// How many of a step's last output lines are kept for an error message.
pub(crate) const TAIL_LINES: usize = 10;

/// A protobuf timestamp as (seconds, nanoseconds).
type Instant = (i64, i32);

#[derive(Debug, Default)]
struct StepState {
    name: String,
    cached: bool,
    started: Option<Instant>,
    completed: Option<Instant>,
    error: Option<String>,
    /// What was last reported: (cached, started, completed, error).
    reported: Option<(bool, bool, bool, bool)>,
    /// Output not yet ended by a newline, per stream (stdout, stderr).
    partial: [Vec<u8>; 2],
    tail: VecDeque<String>,
}

impl StepState {
    fn duration(&self) -> Option<Duration> {
        let (start_s, start_n) = self.started?;
        let (end_s, end_n) = self.completed?;
        let nanos = (i128::from(end_s) * 1_000_000_000 + i128::from(end_n))
            - (i128::from(start_s) * 1_000_000_000 + i128::from(start_n));
        u64::try_from(nanos).ok().map(Duration::from_nanos)
    }
}

/// The state of one build, fed with status messages as they arrive.
pub(crate) struct ProgressTracker<'a> {
    callback: &'a (dyn Fn(BuildProgress) + Send + Sync),
    scrubber: Redactor,
    steps: Vec<StepState>,
    by_digest: HashMap<String, usize>,
    image_id_from_status: Option<String>,
}

impl<'a> ProgressTracker<'a> {
    pub(crate) fn new(
        callback: &'a (dyn Fn(BuildProgress) + Send + Sync),
        scrubber: Redactor,
    ) -> Self {
        ProgressTracker {
            callback,
            scrubber,
            steps: Vec::new(),
            by_digest: HashMap::new(),
            image_id_from_status: None,
        }
    }

    pub(crate) fn scrubber(&self) -> &Redactor {
        &self.scrubber
    }

    fn step_index(&mut self, digest: &str) -> usize {
        if let Some(&index) = self.by_digest.get(digest) {
            return index;
        }
        self.steps.push(StepState::default());
        let index = self.steps.len() - 1;
        self.by_digest.insert(digest.to_owned(), index);
        index
    }

    pub(crate) fn apply(&mut self, status: StatusResponse) {
        for vertex in status.vertexes {
            let index = self.step_index(&vertex.digest);
            let step = &mut self.steps[index];
            step.name = self.scrubber.redact(&vertex.name);
            step.cached = vertex.cached;
            step.started = vertex.started.map(|t| (t.seconds, t.nanos));
            step.completed = vertex.completed.map(|t| (t.seconds, t.nanos));
            if !vertex.error.is_empty() {
                step.error = Some(self.scrubber.redact(&vertex.error));
            }
            if step.completed.is_some() {
                self.flush_partial(index);
            }
            self.report_step(index);
        }
        for log in status.logs {
            let index = self.step_index(&log.vertex);
            let stream = usize::from(log.stream == 2);
            self.steps[index].partial[stream].extend_from_slice(&log.msg);
            self.emit_complete_lines(index, stream);
        }
        for item in status.statuses {
            if let Some(id) = item.id.strip_prefix("writing image ") {
                self.image_id_from_status = Some(id.trim().to_owned());
            }
            let step = self
                .by_digest
                .get(&item.vertex)
                .map(|&index| self.steps[index].name.clone())
                .unwrap_or_default();
            (self.callback)(BuildProgress::Status {
                step,
                name: self.scrubber.redact(&item.id),
                current: u64::try_from(item.current).unwrap_or(0),
                total: u64::try_from(item.total).unwrap_or(0),
                completed: item.completed.is_some(),
            });
        }
        for warning in status.warnings {
            let step = self
                .by_digest
                .get(&warning.vertex)
                .map(|&index| self.steps[index].name.clone())
                .unwrap_or_default();
            let message = self
                .scrubber
                .redact(String::from_utf8_lossy(&warning.short).trim());
            (self.callback)(BuildProgress::Warning { step, message });
        }
    }

    fn report_step(&mut self, index: usize) {
        let step = &mut self.steps[index];
        if step.name.is_empty() {
            return;
        }
        let now = (
            step.cached,
            step.started.is_some(),
            step.completed.is_some(),
            step.error.is_some(),
        );
        if step.reported == Some(now) {
            return;
        }
        step.reported = Some(now);
        (self.callback)(BuildProgress::Step {
            name: step.name.clone(),
            cached: step.cached,
            started: now.1,
            completed: now.2,
            duration: step.duration(),
            error: step.error.clone(),
        });
    }

    fn emit_complete_lines(&mut self, index: usize, stream: usize) {
        let Some(end) = self.steps[index].partial[stream]
            .iter()
            .rposition(|&b| b == b'\n')
        else {
            return;
        };
        let complete: Vec<u8> = self.steps[index].partial[stream].drain(..end).collect();
        self.steps[index].partial[stream].remove(0);
        for line in String::from_utf8_lossy(&complete).split('\n') {
            self.emit_line(index, line);
        }
    }

    fn flush_partial(&mut self, index: usize) {
        for stream in 0..2 {
            if self.steps[index].partial[stream].is_empty() {
                continue;
            }
            let rest = std::mem::take(&mut self.steps[index].partial[stream]);
            self.emit_line(index, &String::from_utf8_lossy(&rest));
        }
    }

    fn emit_line(&mut self, index: usize, line: &str) {
        let line = self
            .scrubber
            .redact(line.strip_suffix('\r').unwrap_or(line));
        let step = &mut self.steps[index];
        if step.tail.len() == TAIL_LINES {
            step.tail.pop_front();
        }
        step.tail.push_back(line.clone());
        let name = step.name.clone();
        (self.callback)(BuildProgress::Log { step: name, line });
    }

    /// The image id the exporter printed, for daemons that send no `moby.image.id` message.
    pub(crate) fn image_id_from_status(&self) -> Option<&str> {
        self.image_id_from_status.as_deref()
    }

    /// The last step that started and has not completed, if any.
    pub(crate) fn running_step(&self) -> Option<String> {
        self.steps
            .iter()
            .filter(|step| step.started.is_some() && step.completed.is_none())
            .max_by_key(|step| step.started)
            .map(|step| step.name.clone())
    }

    /// The step that failed the build, with its last output lines: the one whose error the
    /// build's final `message` repeats, else the last failed step of the Dockerfile's own (a
    /// cache import that found nothing fails its step without failing the build).
    pub(crate) fn failed_step(&self, message: &str) -> Option<(String, Vec<String>)> {
        let failed = || self.steps.iter().filter(|step| step.error.is_some());
        let named = failed().find(|step| {
            step.error
                .as_deref()
                .is_some_and(|error| !error.is_empty() && message.contains(error))
        });
        let own = || {
            failed().rfind(|step| {
                !step.name.starts_with("[internal]") && !step.name.starts_with(CACHE_IMPORT_STEP)
            })
        };
        named
            .or_else(own)
            .or_else(|| failed().next_back())
            .map(|step| {
                let mut tail: Vec<String> = step.tail.iter().cloned().collect();
                // The partial last line, if the step died before ending it.
                for partial in &step.partial {
                    if !partial.is_empty() {
                        tail.push(self.scrubber.redact(&String::from_utf8_lossy(partial)));
                    }
                }
                (step.name.clone(), tail)
            })
    }

    /// Flushes unfinished output and returns the steps in the order they started (steps that
    /// never started last), ties in the order they first appeared.
    pub(crate) fn finish(mut self) -> Vec<BuildStep> {
        for index in 0..self.steps.len() {
            self.flush_partial(index);
        }
        self.steps
            .sort_by_key(|step| step.started.unwrap_or((i64::MAX, i32::MAX)));
        self.steps
            .into_iter()
            .filter(|step| !step.name.is_empty())
            .map(|step| BuildStep {
                duration: step.duration(),
                name: step.name,
                cached: step.cached,
                error: step.error,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bollard::grpc::build::moby::buildkit::v1::{Vertex, VertexLog, VertexStatus};

    use super::*;

    fn vertex(digest: &str, name: &str) -> Vertex {
        Vertex {
            digest: digest.to_owned(),
            name: name.to_owned(),
            ..Vertex::default()
        }
    }

    fn log(digest: &str, msg: &str) -> VertexLog {
        VertexLog {
            vertex: digest.to_owned(),
            stream: 1,
            msg: msg.as_bytes().to_vec(),
            ..VertexLog::default()
        }
    }

    fn status(vertexes: Vec<Vertex>, logs: Vec<VertexLog>) -> StatusResponse {
        StatusResponse {
            vertexes,
            logs,
            ..StatusResponse::default()
        }
    }

    fn record(events: &Mutex<Vec<String>>) -> impl Fn(BuildProgress) + Send + Sync + '_ {
        move |event| {
            let line = match event {
                BuildProgress::Step {
                    name,
                    cached,
                    started,
                    completed,
                    error,
                    ..
                } => format!(
                    "step {name} cached={cached} started={started} completed={completed} error={error:?}"
                ),
                BuildProgress::Log { step, line } => format!("log {step}: {line}"),
                other => format!("{other:?}"),
            };
            events.lock().expect("lock").push(line);
        }
    }

    #[test]
    fn reports_each_change_once_and_cuts_output_into_scrubbed_lines() {
        let events = Mutex::new(Vec::new());
        let callback = record(&events);
        let mut tracker = ProgressTracker::new(&callback, Redactor::from_values(["hunter2-token"]));
        let name = "[2/3] RUN ./configure";
        let mut running = vertex("d1", name);
        running.started = Some(Default::default());
        tracker.apply(status(vec![vertex("d1", name)], vec![]));
        tracker.apply(status(vec![running.clone(), running.clone()], vec![]));
        tracker.apply(status(
            vec![],
            vec![
                log("d1", "checking... hunt"),
                log("d1", "er2-token ok\r\nsecond"),
            ],
        ));
        let mut done = running;
        done.completed = Some(Default::default());
        tracker.apply(status(vec![done], vec![]));
        let steps = tracker.finish();
        assert_eq!(
            events.lock().expect("lock").clone(),
            [
                "step [2/3] RUN ./configure cached=false started=false completed=false error=None",
                "step [2/3] RUN ./configure cached=false started=true completed=false error=None",
                "log [2/3] RUN ./configure: checking... [REDACTED] ok",
                "log [2/3] RUN ./configure: second",
                "step [2/3] RUN ./configure cached=false started=true completed=true error=None",
            ]
        );
        assert_eq!(
            steps,
            [BuildStep {
                name: name.to_owned(),
                cached: false,
                duration: Some(Duration::ZERO),
                error: None
            }]
        );
    }

    #[test]
    fn keeps_the_last_lines_of_the_failed_step() {
        let callback = |_event: BuildProgress| {};
        let mut tracker = ProgressTracker::new(&callback, Redactor::from_values(["s3cr3t"]));
        tracker.apply(status(
            vec![vertex("ctx", "[internal] load build context")],
            vec![],
        ));
        let output: String = (1..=30).map(|n| format!("line {n}\n")).collect();
        let mut failed = vertex("run", "[3/4] RUN make s3cr3t");
        failed.error = "exit code: 2".to_owned();
        tracker.apply(status(
            vec![vertex("run", "[3/4] RUN make s3cr3t")],
            vec![log("run", &output), log("run", "no newline s3cr3t")],
        ));
        let mut cache = vertex(
            "cache",
            "importing cache manifest from 127.0.0.1:5000/app:1",
        );
        cache.error = "127.0.0.1:5000/app:1: not found".to_owned();
        tracker.apply(status(vec![failed], vec![]));
        tracker.apply(status(vec![cache], vec![]));
        let (name, tail) = tracker
            .failed_step("executor failed running [/bin/sh -c make]: exit code: 2")
            .expect("a failed step");
        assert_eq!(name, "[3/4] RUN make [REDACTED]");
        assert_eq!(tail.len(), TAIL_LINES + 1);
        assert_eq!(tail.first().map(String::as_str), Some("line 21"));
        assert_eq!(
            tail.last().map(String::as_str),
            Some("no newline [REDACTED]")
        );
    }

    #[test]
    fn remembers_the_image_written_and_forwards_statuses() {
        let events = Mutex::new(Vec::new());
        let callback = record(&events);
        let mut tracker = ProgressTracker::new(&callback, Redactor::default());
        tracker.apply(status(vec![vertex("e", "exporting to image")], vec![]));
        tracker.apply(StatusResponse {
            statuses: vec![VertexStatus {
                id: "writing image sha256:abc".to_owned(),
                vertex: "e".to_owned(),
                ..VertexStatus::default()
            }],
            ..StatusResponse::default()
        });
        assert_eq!(tracker.image_id_from_status(), Some("sha256:abc"));
        assert!(
            events
                .lock()
                .expect("lock")
                .clone()
                .iter()
                .any(|event| event.contains(
                    "Status { step: \"exporting to image\", name: \"writing image sha256:abc\""
                ))
        );
    }

    #[test]
    fn scrubs_multi_line_secrets_line_by_line_and_longest_first() {
        let scrubber =
            Redactor::from_values(["-----BEGIN KEY-----\nabcdef\n-----END KEY-----", "abc", ""]);
        assert_eq!(scrubber.redact("key abcdef here"), "key [REDACTED] here");
        assert_eq!(scrubber.redact("abc"), "abc");
        assert_eq!(scrubber.redact("nothing"), "nothing");
    }
}
