//! GitHub Actions mode (`GITHUB_ACTIONS=true`): the release or ref to build comes from the
//! Actions environment and event file, and a job gets what a native action gives it: secret
//! values masked before anything could print them, pipeline errors as annotations on the file,
//! a log group per stage with untrusted output unable to issue workflow commands, step outputs
//! in `$GITHUB_OUTPUT` and a Markdown job summary in `$GITHUB_STEP_SUMMARY`.
//!
//! [`ActionsEnvironment`] is the pure part: what the environment variables and event file say.
//! [`ActionsMode`] is one command's session in a job: it writes the workflow commands (to
//! standard error, see `report::github` for why) and the job files.

use crate::exec::driver::{Driver, DriverError, RunOutcome};
use crate::pipeline::diagnostic::Diagnostics;
use crate::pipeline::model::Stage;
use crate::pipeline::{CompiledPipeline, names};
use crate::plan::PlanError;
use crate::report::{
    CommandToken, GithubActionsReporter, Reporter, SummaryLinks, diagnostic_annotation,
    job_summary, output_entry, run_outputs, workflow_command,
};
use crate::run::StageKind;

use crate::run::{RunId, RunStatus, TriggerKind};
use crate::store::Store;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What the GitHub Actions environment says about the job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionsEnvironment {
    /// `GITHUB_RUN_ID`.
    pub run_id: String,
    /// `GITHUB_ACTOR`: who triggered the workflow.
    pub actor: String,
    /// `GITHUB_SERVER_URL` (default `https://github.com`).
    pub server_url: String,
    /// `GITHUB_REPOSITORY`: `owner/repo` of the workflow.
    pub repository: Option<String>,
    /// `GITHUB_WORKSPACE`: where the repository is checked out; annotations are relative to it.
    pub workspace: Option<PathBuf>,
    /// `GITHUB_EVENT_NAME`.
    pub event_name: Option<String>,
    /// `GITHUB_REF`: the full ref (`refs/tags/v1.2.3`, `refs/heads/main`, `refs/pull/7/merge`).
    pub git_ref: Option<String>,
    /// `GITHUB_REF_NAME`: its short name.
    pub ref_name: Option<String>,
    /// `GITHUB_SHA`: the commit.
    pub sha: Option<String>,
    /// `release.tag_name` of a release event.
    pub release_tag: Option<String>,
    /// `GITHUB_OUTPUT`: the step outputs file.
    pub output_file: Option<PathBuf>,
    /// `GITHUB_STEP_SUMMARY`: the job summary file.
    pub summary_file: Option<PathBuf>,
}

/// The ref a job builds, as the Actions environment gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionsTrigger {
    /// A full ref: `refs/tags/<tag>` for releases and tag pushes (so that the tag is a tag
    /// whatever the pipeline's tag patterns say), `refs/heads/<branch>` for branch pushes.
    pub git_ref: String,
    pub sha: Option<String>,
    pub tag: Option<String>,
}

impl ActionsEnvironment {
    /// Whether this process runs in a GitHub Actions job.
    pub fn is_active() -> bool {
        std::env::var("GITHUB_ACTIONS").is_ok_and(|value| value == "true")
    }

    /// The job's environment, or `None` outside GitHub Actions. Reads the process environment
    /// and the event file.
    pub fn detect() -> Option<Self> {
        if !Self::is_active() {
            return None;
        }
        let lookup = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let event = lookup("GITHUB_EVENT_PATH").and_then(|path| std::fs::read_to_string(path).ok());
        Some(Self::from_lookup(&lookup, event.as_deref()))
    }

    /// The environment from variables (`lookup`) and the event file's text. Pure.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>, event: Option<&str>) -> Self {
        let get = |name: &str| lookup(name).filter(|value| !value.is_empty());
        let event: Option<serde_json::Value> =
            event.and_then(|text| serde_json::from_str(text).ok());
        let release_tag = event
            .as_ref()
            .and_then(|event| event.pointer("/release/tag_name"))
            .and_then(|tag| tag.as_str())
            .filter(|tag| !tag.is_empty())
            .map(str::to_owned);
        ActionsEnvironment {
            run_id: get("GITHUB_RUN_ID").unwrap_or_default(),
            actor: get("GITHUB_ACTOR").unwrap_or_default(),
            server_url: get("GITHUB_SERVER_URL")
                .unwrap_or_else(|| "https://github.com".into())
                .trim_end_matches('/')
                .to_owned(),
            repository: get("GITHUB_REPOSITORY"),
            workspace: get("GITHUB_WORKSPACE").map(PathBuf::from),
            event_name: get("GITHUB_EVENT_NAME"),
            git_ref: get("GITHUB_REF"),
            ref_name: get("GITHUB_REF_NAME"),
            sha: get("GITHUB_SHA"),
            release_tag,
            output_file: get("GITHUB_OUTPUT").map(PathBuf::from),
            summary_file: get("GITHUB_STEP_SUMMARY").map(PathBuf::from),
        }
    }

    /// The ref and commit to build: a release event's tag with `GITHUB_SHA`; otherwise
    /// `GITHUB_REF` (or `GITHUB_REF_NAME`) with `GITHUB_SHA`. `None` when the job names no ref.
    pub fn trigger(&self) -> Option<ActionsTrigger> {
        let sha = self
            .sha
            .clone()
            .filter(|sha| sha.len() == 40 && sha.chars().all(|c| c.is_ascii_hexdigit()));
        let tag_trigger = |tag: &str| ActionsTrigger {
            git_ref: format!("refs/tags/{tag}"),
            sha: sha.clone(),
            tag: Some(tag.to_owned()),
        };
        if let Some(tag) = &self.release_tag {
            return Some(tag_trigger(tag));
        }
        if let Some(git_ref) = &self.git_ref {
            return Some(match git_ref.strip_prefix("refs/tags/") {
                Some(tag) => tag_trigger(tag),
                None => ActionsTrigger {
                    git_ref: git_ref.clone(),
                    sha,
                    tag: None,
                },
            });
        }
        self.ref_name.as_ref().map(|name| ActionsTrigger {
            git_ref: name.clone(),
            sha,
            tag: None,
        })
    }

    /// The trigger a run records.
    pub fn trigger_kind(&self) -> TriggerKind {
        TriggerKind::GithubActions {
            run_id: self.run_id.clone(),
            actor: self.actor.clone(),
        }
    }

    /// The page of this workflow run.
    pub fn run_url(&self) -> Option<String> {
        let repository = self.repository.as_ref()?;
        (!self.run_id.is_empty()).then(|| {
            format!(
                "{}/{repository}/actions/runs/{}",
                self.server_url, self.run_id
            )
        })
    }

    /// A pipeline file's path as annotations need it: relative to the workspace when inside it
    /// (with `/`), else as given.
    pub fn annotation_path(&self, path: &Path, current_dir: &Path) -> String {
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            current_dir.join(path)
        };
        let absolute = normalize(&absolute);
        if let Some(workspace) = &self.workspace
            && let Ok(relative) = absolute.strip_prefix(normalize(workspace))
        {
            return relative
                .components()
                .map(|part| part.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
        }
        path.display().to_string()
    }
}

/// `a/./b/../c` → `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
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

/// Pipeline diagnostics as the command prints them: the normal rendering, and in GitHub
/// Actions first one annotation per diagnostic on its file. The rendering quotes the pipeline
/// file, so in Actions it is printed with workflow commands stopped.
pub fn render_diagnostics(diagnostics: &Diagnostics, color: bool) -> String {
    let rendered = diagnostics.render(color);
    let annotations = diagnostic_annotations(diagnostics);
    if annotations.is_empty() {
        return rendered;
    }
    let token = CommandToken::random();
    let mut text = annotations.join("\n");
    text.push('\n');
    text.push_str(&token.stop_line());
    text.push('\n');
    text.push_str(&rendered);
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&token.resume_line());
    text.push('\n');
    text
}

/// Annotate pipeline diagnostics on their files when running in GitHub Actions (for output
/// formats that do not print the rendering); does nothing elsewhere.
pub fn annotate_diagnostics(diagnostics: &Diagnostics) {
    write_lines(&diagnostic_annotations(diagnostics));
}

fn diagnostic_annotations(diagnostics: &Diagnostics) -> Vec<String> {
    let Some(environment) = ActionsEnvironment::detect() else {
        return Vec::new();
    };
    let current_dir = std::env::current_dir().unwrap_or_default();
    diagnostics
        .0
        .iter()
        .map(|diagnostic| {
            let file = environment.annotation_path(&diagnostic.source.path, &current_dir);
            diagnostic_annotation(diagnostic, &file)
        })
        .collect()
}

/// Annotate a pipeline that cannot be planned for this trigger on its file (no line: the
/// problem is the combination of file and trigger) when running in GitHub Actions.
pub fn annotate_plan_error(file: &Path, error: &PlanError) {
    let Some(environment) = ActionsEnvironment::detect() else {
        return;
    };
    let current_dir = std::env::current_dir().unwrap_or_default();
    let file = environment.annotation_path(file, &current_dir);
    write_lines(&[workflow_command(
        "error",
        &[
            ("file", &file),
            ("title", "envelope-runner: cannot plan the run"),
        ],
        &error.to_string(),
    )]);
}

/// Write workflow command lines to standard error in one write.
fn write_lines(lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let mut text = lines.join("\n");
    text.push('\n');
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.flush();
}

/// One command's session in a GitHub Actions job.
pub struct ActionsMode {
    pub environment: ActionsEnvironment,
    token: CommandToken,
    /// Lines registered with `::add-mask::` so far.
    masked: BTreeSet<String>,
}

impl ActionsMode {
    /// The session, or `None` outside GitHub Actions. Writes nothing yet.
    pub fn detect() -> Option<Self> {
        ActionsEnvironment::detect().map(|environment| ActionsMode {
            environment,
            token: CommandToken::random(),
            masked: BTreeSet::new(),
        })
    }

    /// Mask the secrets any run may handle: the default git token, the registry password and
    /// AWS credentials. Call first thing.
    pub fn mask_environment(&mut self) {
        self.mask(&crate::redact::environment_secrets());
    }

    /// Mask the secrets this pipeline names (see [`crate::redact::pipeline_secrets`]). Secrets
    /// read from AWS are fetched by the run and masked by its redactor.
    pub fn mask_pipeline(&mut self, compiled: &CompiledPipeline) {
        self.mask(&crate::redact::pipeline_secrets(compiled));
    }

    fn mask(&mut self, values: &[String]) {
        let mut lines = Vec::new();
        for value in values {
            for line in mask_lines(value) {
                if self.masked.insert(line.clone()) {
                    lines.push(workflow_command("add-mask", &[], &line));
                }
            }
        }
        write_lines(&lines);
    }

    /// Replace every masked value in `text` with `***`, longest first.
    pub fn redact(&self, text: &str) -> String {
        let mut secrets: Vec<&String> = self.masked.iter().collect();
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        secrets.into_iter().fold(text.to_owned(), |text, secret| {
            text.replace(secret.as_str(), "***")
        })
    }

    /// Stop workflow commands and return the reporter for the run: the Actions reporter for
    /// text logs, `fallback` (JSON lines) otherwise. Everything printed until [`Self::end_run`]
    /// is inert to the runner except the reporter's own commands.
    /// For a command that prints stored runs or changes services outside `run` (`status`,
    /// `logs`, `history`, `approve`, `rollback`): mask the environment's secrets and stop
    /// workflow commands, so nothing it prints is read as one. [`Self::resume_commands`] ends it.
    pub fn fence(&mut self) {
        self.mask_environment();
        write_lines(&[self.token.stop_line()]);
    }

    /// Process workflow commands again after [`Self::fence`].
    pub fn resume_commands(&self) {
        write_lines(&[self.token.resume_line()]);
    }

    pub fn start_run(&self, fallback: Box<dyn Reporter>, text_logs: bool) -> Box<dyn Reporter> {
        write_lines(&[self.token.stop_line()]);
        if text_logs {
            Box::new(GithubActionsReporter::new(
                std::io::stderr(),
                self.token.clone(),
            ))
        } else {
            fallback
        }
    }

    /// After a `run` or `resume`: resume workflow commands, annotate a plan error, write the
    /// step outputs and the job summary, and warn when a waiting run's state stays on this
    /// machine. The exit code is the command's (see [`paused_as_asked`]).
    pub async fn end_run(
        &self,
        driver: &Driver,
        result: &Result<RunOutcome, DriverError>,
        store_url: Option<&str>,
    ) {
        write_lines(&[self.token.resume_line()]);
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(error) => {
                if let DriverError::Plan(error) = error {
                    annotate_plan_error(&driver.compiled.file.path, error);
                }
                return;
            }
        };
        self.write_job_files(driver.store.as_ref(), &outcome.run, Some(&driver.compiled))
            .await;
        if outcome.status != RunStatus::Waiting {
            return;
        }
        if !store_url.is_some_and(|url| url.starts_with("dynamodb://")) {
            write_lines(&[workflow_command(
                "warning",
                &[("title", "envelope-runner: run state stays on this runner")],
                &format!(
                    "Run {} is waiting in a store on this machine, which a later job cannot reach. Share the store between jobs with --store dynamodb://TABLE (or ENVELOPE_STORE).",
                    outcome.run
                ),
            )]);
        }
    }

    /// Append the run's step outputs to `$GITHUB_OUTPUT` and its summary to
    /// `$GITHUB_STEP_SUMMARY`, from the record in the store (so a `resume` job reports the whole
    /// run). Problems become `::warning` annotations: the run itself is not affected.
    pub async fn write_job_files(
        &self,
        store: &dyn Store,
        run: &RunId,
        compiled: Option<&CompiledPipeline>,
    ) {
        let record = match store.get_run(run).await {
            Ok(Some(record)) => record,
            Ok(None) => return,
            Err(error) => {
                self.warn(&format!(
                    "cannot read run {run} for the job outputs and summary: {error}"
                ));
                return;
            }
        };
        if let Some(path) = &self.environment.output_file {
            let text: String = run_outputs(&record)
                .iter()
                .map(|(name, value)| output_entry(name, value))
                .collect();
            if let Err(error) = append(path, &text) {
                self.warn(&format!(
                    "cannot write the step outputs to {}: {error}",
                    path.display()
                ));
            }
        }
        if let Some(path) = &self.environment.summary_file {
            let mut approvals = BTreeMap::new();
            for gate in record
                .stages
                .iter()
                .filter(|stage| stage.kind == StageKind::Approval)
            {
                if let Ok(Some(decision)) = store.approval(run, &gate.name).await {
                    approvals.insert(gate.name.clone(), decision);
                }
            }
            let links = self.links(&record, compiled);
            let summary = job_summary(&record, &approvals, &links, &|text| self.redact(text));
            if let Err(error) = append(path, &summary) {
                self.warn(&format!(
                    "cannot write the job summary to {}: {error}",
                    path.display()
                ));
            }
        }
    }

    fn links(
        &self,
        record: &crate::run::RunRecord,
        compiled: Option<&CompiledPipeline>,
    ) -> SummaryLinks {
        let mut links = SummaryLinks {
            workflow_run: self.environment.run_url(),
            ..SummaryLinks::default()
        };
        let github_repository = compiled
            .map(|compiled| names::clone_url(&compiled.pipeline.source.repository))
            .and_then(|url| {
                url.strip_prefix("https://github.com/")
                    .and_then(|rest| rest.strip_suffix(".git"))
                    .map(str::to_owned)
            });
        if let Some(repository) = github_repository {
            let sha = record
                .stages
                .iter()
                .find_map(|stage| stage.outputs.sha.clone())
                .or_else(|| record.trigger.sha.clone());
            links.commit = sha.map(|sha| format!("https://github.com/{repository}/commit/{sha}"));
            links.release = record
                .trigger
                .tag
                .as_ref()
                .map(|tag| format!("https://github.com/{repository}/releases/tag/{tag}"));
        }
        links
    }

    fn warn(&self, message: &str) {
        write_lines(&[workflow_command(
            "warning",
            &[("title", "envelope-runner")],
            message,
        )]);
    }
}

/// Whether a waiting run stopped at the approval gate `--until` named (by name or kind). In
/// GitHub Actions such a run did what was asked: it exits 0 so the job is green (its `status`
/// output says `waiting`).
pub fn paused_as_asked(
    outcome: &RunOutcome,
    until: Option<&str>,
    compiled: &CompiledPipeline,
) -> bool {
    let (Some(until), Some(stage)) = (until, outcome.stage.as_deref()) else {
        return false;
    };
    compiled.pipeline.stages.iter().any(|candidate| {
        matches!(candidate, Stage::Approval(_))
            && candidate.name() == stage
            && (until == stage || until == candidate.kind().as_str())
    })
}

fn append(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment(variables: &[(&str, &str)], event: Option<&str>) -> ActionsEnvironment {
        let variables: BTreeMap<String, String> = variables
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        ActionsEnvironment::from_lookup(&|name| variables.get(name).cloned(), event)
    }

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn a_release_event_builds_its_tag_at_github_sha() {
        let environment = environment(
            &[
                ("GITHUB_EVENT_NAME", "release"),
                ("GITHUB_REF", "refs/tags/v1.2.3"),
                ("GITHUB_SHA", SHA),
            ],
            Some(r#"{"action":"published","release":{"tag_name":"v1.2.3-rc"}}"#),
        );
        assert_eq!(
            environment.trigger(),
            Some(ActionsTrigger {
                git_ref: "refs/tags/v1.2.3-rc".into(),
                sha: Some(SHA.into()),
                tag: Some("v1.2.3-rc".into()),
            })
        );
    }

    #[test]
    fn pushes_build_the_pushed_ref() {
        let cases = [
            ("refs/tags/v2", "refs/tags/v2", Some("v2")),
            ("refs/heads/main", "refs/heads/main", None),
            ("refs/pull/7/merge", "refs/pull/7/merge", None),
        ];
        for (github_ref, git_ref, tag) in cases {
            let environment = environment(
                &[
                    ("GITHUB_EVENT_NAME", "push"),
                    ("GITHUB_REF", github_ref),
                    ("GITHUB_SHA", SHA),
                ],
                Some(r#"{"ref":"x"}"#),
            );
            let trigger = environment.trigger().unwrap();
            assert_eq!(trigger.git_ref, git_ref);
            assert_eq!(trigger.tag.as_deref(), tag);
            assert_eq!(trigger.sha.as_deref(), Some(SHA));
        }
        let named = environment(&[("GITHUB_REF_NAME", "main")], None);
        assert_eq!(named.trigger().unwrap().git_ref, "main");
        assert_eq!(environment(&[], None).trigger(), None);
    }

    #[test]
    fn a_malformed_sha_is_not_used() {
        let environment = environment(
            &[("GITHUB_REF", "refs/heads/x"), ("GITHUB_SHA", "abc")],
            None,
        );
        assert_eq!(environment.trigger().unwrap().sha, None);
    }

    #[test]
    fn links_and_annotation_paths() {
        let environment = environment(
            &[
                ("GITHUB_SERVER_URL", "https://github.example.com/"),
                ("GITHUB_REPOSITORY", "acme/deploy"),
                ("GITHUB_RUN_ID", "42"),
                ("GITHUB_WORKSPACE", "/home/runner/work/deploy/deploy"),
            ],
            None,
        );
        assert_eq!(
            environment.run_url().as_deref(),
            Some("https://github.example.com/acme/deploy/actions/runs/42")
        );
        let cwd = Path::new("/home/runner/work/deploy/deploy/app");
        assert_eq!(
            environment.annotation_path(Path::new("pipelines/api.yaml"), cwd),
            "app/pipelines/api.yaml"
        );
        assert_eq!(
            environment.annotation_path(Path::new("../pipelines/api.yaml"), cwd),
            "pipelines/api.yaml"
        );
        assert_eq!(
            environment.annotation_path(Path::new("/elsewhere/api.yaml"), cwd),
            "/elsewhere/api.yaml"
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
}
