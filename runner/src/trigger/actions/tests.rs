//! The Actions session against writers it is given: a buffer for the command stream and job
//! files in a temporary folder, with the environment passed in.

use super::*;
use crate::event::Event;
use crate::plan::PlanError;
use crate::report::NullReporter;
use crate::run::TriggerKind;
use crate::run::{RunRecord, RunTrigger, StageKind, StageOutputs, StageRecord, StageStatus};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// A run waiting at its approval gate after its source stage, as the store has it.
pub(super) fn waiting_run() -> StoredRun {
    let stage = |name: &str, kind: StageKind, status, outputs| StageRecord {
        name: name.into(),
        kind,
        status,
        started_at: None,
        finished_at: None,
        outputs,
        error: None,
    };
    StoredRun {
        record: RunRecord {
            id: RunId("01run".into()),
            pipeline: "api".into(),
            status: RunStatus::Waiting,
            trigger: RunTrigger {
                kind: TriggerKind::GithubActions {
                    run_id: "42".into(),
                    actor: "octocat".into(),
                },
                git_ref: "refs/tags/v1.2.3".into(),
                sha: None,
                tag: Some("v1.2.3".into()),
            },
            created_at: "2026-11-26T09:00:00Z".into(),
            finished_at: None,
            context: BTreeMap::new(),
            stages: vec![
                stage(
                    "source",
                    StageKind::Source,
                    StageStatus::Succeeded,
                    StageOutputs {
                        sha: Some(SHA.into()),
                        ..StageOutputs::default()
                    },
                ),
                stage(
                    "approval",
                    StageKind::Approval,
                    StageStatus::Waiting,
                    StageOutputs::default(),
                ),
            ],
        },
        approvals: BTreeMap::new(),
    }
}

/// A command stream whose text the test reads back.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("not poisoned")
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().expect("not poisoned").clone();
        String::from_utf8(bytes)
            .expect("text")
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// A job in a temporary folder: its session, the command stream, the job files.
struct Job {
    session: ActionsSession,
    commands: Buffer,
    outputs: JobFile,
    summary: JobFile,
    _folder: tempfile::TempDir,
}

impl Job {
    fn new() -> Self {
        let folder = tempfile::tempdir().expect("a temporary folder");
        let variables: BTreeMap<&str, String> = [
            ("GITHUB_REPOSITORY", "acme/deploy".to_owned()),
            ("GITHUB_RUN_ID", "42".to_owned()),
            ("GITHUB_WORKSPACE", "/work/repo".to_owned()),
        ]
        .into();
        let environment =
            ActionsEnvironment::from_lookup(&|name| variables.get(name).cloned(), None);
        let paths = AnnotationPaths {
            workspace: environment.workspace.clone(),
            current_dir: "/work/repo/deploy".into(),
        };
        let commands = Buffer::default();
        let outputs = JobFile::new(folder.path().join("output"));
        let summary = JobFile::new(folder.path().join("summary"));
        let writers = JobWriters {
            commands: CommandStream::new(commands.clone()),
            step_outputs: Some(outputs.clone()),
            step_summary: Some(summary.clone()),
        };
        Job {
            session: ActionsSession::new(environment, paths, writers),
            commands,
            outputs,
            summary,
            _folder: folder,
        }
    }

    fn read(file: &JobFile) -> String {
        std::fs::read_to_string(file.path()).unwrap_or_default()
    }

    /// The stop token the session used, from its first `::stop-commands::` line.
    fn token(&self) -> String {
        self.commands
            .lines()
            .iter()
            .find_map(|line| line.strip_prefix("::stop-commands::").map(str::to_owned))
            .expect("commands were stopped")
    }
}

fn waiting_outcome() -> RunOutcome {
    RunOutcome {
        run: RunId("01run".into()),
        status: RunStatus::Waiting,
        stage: Some("approval".into()),
        error: None,
        environment: false,
        lock_lost: false,
    }
}

fn end(
    stored: Option<Result<Option<StoredRun>, StoreError>>,
    shared_store: bool,
) -> RunEnd<'static> {
    RunEnd {
        pipeline_file: Path::new("pipelines/api.yaml"),
        repository: "epactltd/api",
        stored,
        shared_store,
    }
}

#[test]
fn a_run_that_waits_is_masked_grouped_and_reported_in_the_job_files() {
    let mut job = Job::new();
    job.session
        .mask(&["ghs_secret".into(), "line one\r\n\nline two".into()]);
    job.session.mask(&["ghs_secret".into()]);
    let mut reporter = job.session.run_reporter(Box::new(NullReporter), true);
    for event in [
        Event::StageStarted {
            stage: "source".into(),
            kind: StageKind::Source,
        },
        Event::StageFinished {
            stage: "source".into(),
            status: StageStatus::Succeeded,
            seconds: 1.0,
            error: None,
        },
    ] {
        reporter.event(&event);
    }
    reporter.finish();
    job.session.end_run(
        &Ok(waiting_outcome()),
        end(Some(Ok(Some(waiting_run()))), false),
    );

    let token = job.token();
    assert_eq!(
        job.commands.lines(),
        [
            "::add-mask::ghs_secret".to_owned(),
            "::add-mask::line one".to_owned(),
            "::add-mask::line two".to_owned(),
            format!("::stop-commands::{token}"),
            format!("::{token}::"),
            "::group::source".to_owned(),
            format!("::stop-commands::{token}"),
            "[source] succeeded in 1.0s".to_owned(),
            format!("::{token}::"),
            "::endgroup::".to_owned(),
            format!("::stop-commands::{token}"),
            format!("::{token}::"),
            "::warning title=envelope-runner%3A run state stays on this runner::Run 01run is \
             waiting in a store on this machine, which a later job cannot reach. Share the \
             store between jobs with --store dynamodb://TABLE (or ENVELOPE_STORE)."
                .to_owned(),
        ]
    );
    assert_eq!(Job::read(&job.outputs), "run-id=01run\nstatus=waiting\n");
    let summary = Job::read(&job.summary);
    assert!(
        summary.starts_with("## ⏸️ envelope-runner: `api` waiting\n"),
        "{summary}"
    );
    assert!(
        summary.ends_with(&format!(
            "\n[Workflow run](https://github.com/acme/deploy/actions/runs/42) · \
             [Commit](https://github.com/epactltd/api/commit/{SHA}) · \
             [Release](https://github.com/epactltd/api/releases/tag/v1.2.3)\n"
        )),
        "{summary}"
    );
    assert_eq!(job.session.redact("a ghs_secret b"), "a *** b");
}

#[test]
fn a_shared_store_needs_no_warning_and_json_logs_keep_their_reporter() {
    let job = Job::new();
    let _reporter = job.session.run_reporter(Box::new(NullReporter), false);
    job.session.end_run(
        &Ok(waiting_outcome()),
        end(Some(Ok(Some(waiting_run()))), true),
    );
    let token = job.token();
    assert_eq!(
        job.commands.lines(),
        [format!("::stop-commands::{token}"), format!("::{token}::")]
    );
    assert_eq!(Job::read(&job.outputs), "run-id=01run\nstatus=waiting\n");
}

#[test]
fn a_plan_error_is_annotated_on_the_pipeline_file_and_writes_no_job_files() {
    let job = Job::new();
    job.session.fence();
    let error = PlanError::BadSha("abc".into());
    job.session
        .end_run(&Err(DriverError::Plan(error)), end(None, false));
    let token = job.token();
    assert_eq!(
        job.commands.lines(),
        [
            format!("::stop-commands::{token}"),
            format!("::{token}::"),
            "::error file=deploy/pipelines/api.yaml,title=envelope-runner%3A cannot plan the run::\
             `abc` is not a 40-character hexadecimal commit sha"
                .to_owned(),
        ]
    );
    assert_eq!(Job::read(&job.outputs), "");
    assert_eq!(Job::read(&job.summary), "");
}

#[test]
fn job_files_that_cannot_be_read_or_written_are_warnings() {
    let job = Job::new();
    let run = RunId("01run".into());
    job.session
        .write_job_files(&run, Err(StoreError::RunNotFound { id: run.clone() }), None);
    job.session.write_job_files(&run, Ok(None), None);
    let broken = ActionsSession::new(
        ActionsEnvironment::default(),
        AnnotationPaths::default(),
        JobWriters {
            commands: CommandStream::new(job.commands.clone()),
            step_outputs: Some(JobFile::new("/nonexistent/folder/output")),
            step_summary: None,
        },
    );
    broken.write_job_files(&run, Ok(Some(waiting_run())), None);
    let lines = job.commands.lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with(
            "::warning title=envelope-runner::cannot read run 01run for the job outputs and summary: "
        ),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with(
            "::warning title=envelope-runner::cannot write the step outputs to /nonexistent/folder/output: "
        ),
        "{lines:?}"
    );
}

#[test]
fn multi_line_secrets_are_masked_line_by_line() {
    assert_eq!(
        mask_lines("-----BEGIN KEY-----\r\nabc%def\n\n  \n-----END KEY-----\n"),
        ["-----BEGIN KEY-----", "abc%def", "-----END KEY-----"]
    );
    assert!(mask_lines("").is_empty());
}
