//! buildspec end-to-end tests: real buildspecs run by real bash (and dash as `/bin/sh`) in
//! temporary source directories, with CodeBuild's phase semantics checked line by line: the
//! phases' order and failures (`phases`), the shell's state across commands (`shell`),
//! variables, secrets and notices (`variables`), and the processes commands start
//! (`processes`). The Docker test skips (with a note) when `docker info` fails, unless
//! ENVELOPE_TEST_REQUIRE_DOCKER is set.

mod phases;
mod processes;
mod shell;
mod variables;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use envelope_runner::buildspec::{self, Buildspec};
use envelope_runner::exec::buildspec::{
    BuildspecContext, BuildspecOutcome, BuildspecProgress, PhaseStatus, run,
};
use envelope_runner::pipeline::diagnostic::SourceFile;
use tempfile::TempDir;

/// `text` as a checked buildspec; fails the test on a diagnostic.
fn compile(text: &str) -> Buildspec {
    buildspec::compile(&SourceFile::new("buildspec.yml", text))
        .unwrap_or_else(|diagnostics| panic!("{}", diagnostics.render(false)))
}

/// What happened, in order, as short strings: `start install`, `$ echo hi`, `hi`,
/// `end install succeeded`, `notice …`, `image build`.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, entry: String) {
        self.0.lock().unwrap().push(entry);
    }

    fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Only the output lines.
    fn lines(&self) -> Vec<String> {
        self.entries()
            .into_iter()
            .filter(|entry| !is_marker(entry))
            .collect()
    }

    fn record(&self, progress: BuildspecProgress) {
        self.push(match progress {
            BuildspecProgress::PhaseStarted { phase } => format!("start {phase}"),
            BuildspecProgress::Command { command, .. } => format!("$ {command}"),
            BuildspecProgress::Line { line, .. } => line,
            BuildspecProgress::PhaseFinished { phase, status, .. } => {
                format!("end {phase} {status}")
            }
            BuildspecProgress::Notice { message } => format!("notice {message}"),
        });
    }
}

fn is_marker(entry: &str) -> bool {
    ["start ", "$ ", "end ", "notice ", "image build"]
        .iter()
        .any(|prefix| entry.starts_with(prefix))
}

struct Run {
    outcome: BuildspecOutcome,
    log: Log,
    /// The environment the image build was called with, if it was called.
    image_build_env: Option<BTreeMap<String, String>>,
}

impl Run {
    fn statuses(&self) -> Vec<(String, PhaseStatus)> {
        self.outcome
            .phases
            .iter()
            .map(|phase| (phase.name.clone(), phase.status))
            .collect()
    }

    fn phase(&self, name: &str) -> &envelope_runner::exec::buildspec::PhaseResult {
        self.outcome
            .phases
            .iter()
            .find(|phase| phase.name == name)
            .unwrap_or_else(|| panic!("no phase {name} in {:?}", self.outcome.phases))
    }
}

/// A context with no variables and no secrets, in `source`.
fn context(source: &Path) -> BuildspecContext {
    BuildspecContext {
        source_dir: source.to_path_buf(),
        env: BTreeMap::new(),
        secret_env: BTreeMap::new(),
    }
}

/// Run `text` in `context`; the image build succeeds unless `image_build_error` is given.
async fn run_with(text: &str, context: &BuildspecContext, image_build_error: Option<&str>) -> Run {
    let spec = compile(text);
    let log = Log::default();
    let image_build_env = Arc::new(Mutex::new(None));
    let progress = {
        let log = log.clone();
        move |progress: BuildspecProgress| log.record(progress)
    };
    let outcome = run(&spec, context, &progress, |env| {
        log.push("image build".into());
        *image_build_env.lock().unwrap() = Some(env);
        let result = match image_build_error {
            Some(error) => Err(error.to_string()),
            None => Ok(()),
        };
        async move { result }
    })
    .await
    .expect("the buildspec runs");
    let image_build_env = image_build_env.lock().unwrap().take();
    Run {
        outcome,
        log,
        image_build_env,
    }
}

/// [`run_with`] in a fresh temporary source directory, kept alive with the run.
async fn run_in_temp(text: &str) -> (TempDir, Run) {
    let source = TempDir::new().unwrap();
    let run = run_with(text, &context(source.path()), None).await;
    (source, run)
}

/// `ok`, `failed` or (anything else) skipped.
fn s(status: &str) -> PhaseStatus {
    match status {
        "ok" => PhaseStatus::Succeeded,
        "failed" => PhaseStatus::Failed,
        _ => PhaseStatus::Skipped,
    }
}

/// Phase names with [`s`] statuses, as [`Run::statuses`] gives them.
fn statuses(expected: &[(&str, &str)]) -> Vec<(String, PhaseStatus)> {
    expected
        .iter()
        .map(|(name, status)| (name.to_string(), s(status)))
        .collect()
}
