//! GitHub Actions mode (`GITHUB_ACTIONS=true`): the release or ref to build comes from the
//! Actions environment and event file, and a job gets what a native action gives it: secret
//! values masked before anything could print them, pipeline errors as annotations on the file,
//! a log group per stage with untrusted output unable to issue workflow commands, step outputs
//! in `$GITHUB_OUTPUT` and a Markdown job summary in `$GITHUB_STEP_SUMMARY`.
//!
//! This file holds [`ActionsSession`], one command's session in a job: it masks, stops and
//! resumes workflow commands, gives the run its reporter (which turns the run's events into
//! groups and annotations), and at the end turns the run's outcome into annotations and the
//! job's files. It writes only through the [`JobWriters`] it is given and never decides an exit
//! code. `env` is what the environment says (read once by the command line), `annotations`
//! how pipeline errors are printed, `summary` what the job's files say, `writers` where it all
//! goes.

mod annotations;
mod env;
mod summary;
mod writers;

pub use annotations::{
    AnnotationPaths, DiagnosticFormat, plan_error_annotation, render_diagnostics,
};
pub use env::{ActionsEnvironment, ActionsTrigger};
pub use summary::StoredRun;
pub use writers::{CommandStream, JobFile, JobWriters};

use crate::exec::driver::{DriverError, RunOutcome};
use crate::report::{CommandToken, GithubActionsReporter, Reporter, workflow_command};
use crate::run::{RunId, RunStatus};
use crate::store::StoreError;
use std::collections::BTreeSet;
use std::path::Path;

/// One command's session in a GitHub Actions job.
pub struct ActionsSession {
    environment: ActionsEnvironment,
    paths: AnnotationPaths,
    writers: JobWriters,
    token: CommandToken,
    /// Lines registered with `::add-mask::` so far.
    masked: BTreeSet<String>,
}

/// How a run command's run ended, beyond its result: what the session needs to report it.
pub struct RunEnd<'a> {
    /// The pipeline file, where a plan error is annotated.
    pub pipeline_file: &'a Path,
    /// The pipeline's `source.repository`, for the summary's commit and release links.
    pub repository: &'a str,
    /// The run as the store has it after the command; `None` when the driver stopped with an
    /// error before or outside the run.
    pub stored: Option<Result<Option<StoredRun>, StoreError>>,
    /// Whether the store is shared between jobs (DynamoDB) rather than kept on this machine.
    pub shared_store: bool,
}

impl ActionsSession {
    /// The session of a job with `environment`, naming files in annotations by `paths` and
    /// writing to `writers`. Writes nothing yet.
    pub fn new(
        environment: ActionsEnvironment,
        paths: AnnotationPaths,
        writers: JobWriters,
    ) -> Self {
        ActionsSession {
            environment,
            paths,
            writers,
            token: CommandToken::random(),
            masked: BTreeSet::new(),
        }
    }

    pub fn environment(&self) -> &ActionsEnvironment {
        &self.environment
    }

    /// Register secret `values` with `::add-mask::` (each line once per session), so the runner
    /// hides them wherever they appear. Mask the environment's secrets first thing, and a
    /// pipeline's as soon as it is loaded; secrets a run fetches are masked by its redactor.
    pub fn mask(&mut self, values: &[String]) {
        let mut lines = Vec::new();
        for value in values {
            for line in mask_lines(value) {
                if self.masked.insert(line.clone()) {
                    lines.push(workflow_command("add-mask", &[], &line));
                }
            }
        }
        self.writers.commands.write_lines(&lines);
    }

    /// Replace every masked value in `text` with `***`, longest first.
    pub fn redact(&self, text: &str) -> String {
        let mut secrets: Vec<&String> = self.masked.iter().collect();
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        secrets.into_iter().fold(text.to_owned(), |text, secret| {
            text.replace(secret.as_str(), "***")
        })
    }

    /// Stop workflow commands, so nothing the command prints (stored runs, logs) is read as
    /// one. [`Self::resume_commands`] ends it.
    pub fn fence(&self) {
        self.writers.commands.write_lines(&[self.token.stop_line()]);
    }

    /// Process workflow commands again after [`Self::fence`].
    pub fn resume_commands(&self) {
        self.writers
            .commands
            .write_lines(&[self.token.resume_line()]);
    }

    /// Stop workflow commands and return the reporter for the run's events: the Actions
    /// reporter (groups, annotations) for text logs, `fallback` (JSON lines) otherwise.
    /// Everything printed until [`Self::end_run`] is inert to the runner except the reporter's
    /// own commands.
    pub fn run_reporter(&self, fallback: Box<dyn Reporter>, text_logs: bool) -> Box<dyn Reporter> {
        self.fence();
        if text_logs {
            Box::new(GithubActionsReporter::new(
                self.writers.commands.clone(),
                self.token.clone(),
            ))
        } else {
            fallback
        }
    }

    /// After a `run`, `resume` or `retry` with its `result`: resume workflow commands; annotate
    /// a plan error on the pipeline file; write the step outputs and the job summary; warn when
    /// a waiting run's state stays on this machine. The exit code is the command's.
    pub fn end_run(&self, result: &Result<RunOutcome, DriverError>, end: RunEnd<'_>) {
        self.resume_commands();
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(DriverError::Plan(error)) => {
                let annotation = plan_error_annotation(end.pipeline_file, error, &self.paths);
                self.writers.commands.write_lines(&[annotation]);
                return;
            }
            Err(_) => return,
        };
        if let Some(stored) = end.stored {
            self.write_job_files(&outcome.run, stored, Some(end.repository));
        }
        if outcome.status == RunStatus::Waiting && !end.shared_store {
            self.writers.commands.write_lines(&[workflow_command(
                "warning",
                &[("title", "envelope-runner: run state stays on this runner")],
                &format!(
                    "Run {} is waiting in a store on this machine, which a later job cannot reach. Share the store between jobs with --store dynamodb://TABLE (or ENVELOPE_STORE).",
                    outcome.run
                ),
            )]);
        }
    }

    /// Append run `run`'s step outputs to `$GITHUB_OUTPUT` and its summary to
    /// `$GITHUB_STEP_SUMMARY`, from the run as the store has it (`stored`; nothing when the
    /// store has no such run). `repository`: the pipeline's, for the summary's links. Problems
    /// become `::warning` annotations: the run itself is not affected.
    pub fn write_job_files(
        &self,
        run: &RunId,
        stored: Result<Option<StoredRun>, StoreError>,
        repository: Option<&str>,
    ) {
        let stored = match stored {
            Ok(Some(stored)) => stored,
            Ok(None) => return,
            Err(error) => {
                self.warn(&format!(
                    "cannot read run {run} for the job outputs and summary: {error}"
                ));
                return;
            }
        };
        if let Some(file) = &self.writers.step_outputs
            && let Err(error) = file.append(&stored.outputs())
        {
            self.warn(&format!(
                "cannot write the step outputs to {}: {error}",
                file.path().display()
            ));
        }
        if let Some(file) = &self.writers.step_summary {
            let links = stored.links(self.environment.run_url(), repository);
            let summary = stored.summary(&links, &|text| self.redact(text));
            if let Err(error) = file.append(&summary) {
                self.warn(&format!(
                    "cannot write the job summary to {}: {error}",
                    file.path().display()
                ));
            }
        }
    }

    fn warn(&self, message: &str) {
        self.writers.commands.write_lines(&[workflow_command(
            "warning",
            &[("title", "envelope-runner")],
            message,
        )]);
    }
}

/// The lines `::add-mask::` must register for a secret value: GitHub masks line by line, so a
/// multi-line value is masked one line at a time; blank lines are not secrets.
pub fn mask_lines(value: &str) -> Vec<String> {
    value
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .filter(|line| !line.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests;
