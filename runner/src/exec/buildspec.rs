//! Buildspec phases: run a CodeBuild buildspec's commands on this machine, around the image build.
//!
//! The semantics are CodeBuild's (buildspec version 0.2), because teams moving off CodeBuild keep
//! their buildspecs and rely on them:
//!
//! - install, pre_build, build and post_build run in that order, in one shell (`bash` unless
//!   `env.shell` says `/bin/sh`): `export`, `cd` and plain variables carry over from one command
//!   to the next and from one phase to the next. A list entry (which may span several lines) is
//!   one command; its status is the status of its last line, as in CodeBuild.
//! - A failing command stops the rest of its phase. The phase's `finally` block still runs. A
//!   failed install or pre_build skips every later phase (with `on-failure: ABORT`, the default);
//!   a failed build still runs post_build; `on-failure: CONTINUE` goes on to the next phase.
//!   Either way the build has failed and `CODEBUILD_BUILD_SUCCEEDING` is `0` from then on.
//! - The image build (BuildKit, done by the build stage and handed in as a callback) runs at the
//!   end of the build phase once its commands succeeded, before its `finally`; its failure is a
//!   build phase failure. Without a build phase in the buildspec it runs between pre_build and
//!   post_build all the same.
//! - `exported-variables` are read from the shell after the last phase.
//!
//! How the shell is driven: one long-lived shell in its own process group reads plumbing lines
//! on its stdin. Each command is written to a file and sourced (`. file </dev/null`), so it runs
//! in that shell (state persists) but cannot read the plumbing; after it, the shell prints a
//! sentinel line carrying its status. stdout and stderr share one pipe so lines keep their
//! order. If a command ends the shell (`exit 1`, `set -e`), the command gets that status and the
//! next one runs in a new shell that starts with the environment and directory the old one had
//! (its exit trap saves them). Dropping the future kills the whole process group.

use crate::buildspec::{Buildspec, OnFailure, PHASE_NAMES, Phase};
use crate::redact::Redactor;
use crate::secret::Secret;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio::process::{Child, ChildStdin};

/// What the phases run with.
#[derive(Debug, Clone, Default)]
pub struct BuildspecContext {
    /// `CODEBUILD_SRC_DIR`: the checked-out source; commands start here.
    pub source_dir: PathBuf,
    /// Variables the caller sets: the `CODEBUILD_*` set (see [`codebuild_variables`]) and the
    /// pipeline's own. Like a CodeBuild project's variables they win over the buildspec's
    /// `env.variables`.
    pub env: BTreeMap<String, String>,
    /// `env.secrets-manager` and `env.parameter-store` values, already fetched (see
    /// [`resolve_secret_env`]). Their values are replaced by `[REDACTED]` in every line we report.
    pub secret_env: BTreeMap<String, Secret>,
}

/// How the buildspec went. A failed command is an outcome, not an error.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildspecOutcome {
    pub succeeded: bool,
    /// The phases in run order: those the buildspec has, and always `build` (the image build
    /// is part of it).
    pub phases: Vec<PhaseResult>,
    /// Final values of `exported-variables` that were set.
    pub exported: BTreeMap<String, String>,
}

impl BuildspecOutcome {
    /// The phase that failed first, to explain a failed build.
    pub fn first_failure(&self) -> Option<&PhaseResult> {
        self.phases
            .iter()
            .find(|phase| phase.status == PhaseStatus::Failed)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseResult {
    pub name: String,
    pub status: PhaseStatus,
    /// The command that failed (secret values masked); `None` when the image build failed.
    pub failed_command: Option<String>,
    /// Its exit status, when it has one (not when it was killed by a signal).
    pub exit_code: Option<i32>,
    /// What went wrong, for people (secret values masked).
    pub error: Option<String>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PhaseStatus {
    Succeeded,
    Failed,
    /// Not run because an earlier phase failed with `on-failure: ABORT`.
    Skipped,
}

impl fmt::Display for PhaseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PhaseStatus::Succeeded => "succeeded",
            PhaseStatus::Failed => "failed",
            PhaseStatus::Skipped => "skipped",
        })
    }
}

/// What the phases report while they run. Every text is already masked.
#[derive(Debug, Clone, PartialEq)]
pub enum BuildspecProgress {
    PhaseStarted {
        phase: &'static str,
    },
    /// A command is about to run (the whole text of a multi-line command).
    Command {
        phase: &'static str,
        command: String,
    },
    /// A line a command printed (stdout and stderr, in order).
    Line {
        phase: &'static str,
        line: String,
    },
    /// A phase ended; skipped phases get this without `PhaseStarted`.
    PhaseFinished {
        phase: &'static str,
        status: PhaseStatus,
        seconds: f64,
    },
    /// Something worth telling that is not a failure (settings not applied, variables unset).
    Notice {
        message: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum BuildspecError {
    #[error("buildspec shell `{shell}` is not supported; set `env.shell` to `bash` or `/bin/sh`")]
    UnsupportedShell { shell: String },
    #[error(
        "the source directory {} does not exist or is not a directory; the buildspec's commands run there",
        .path.display()
    )]
    SourceDir { path: PathBuf },
    #[error(
        "could not start the buildspec shell `{shell}`: {source}; install it or set `env.shell` to the other of `bash` and `/bin/sh`"
    )]
    ShellStart {
        shell: &'static str,
        source: std::io::Error,
    },
    #[error("lost contact with the buildspec shell ({action}): {source}")]
    Shell {
        action: &'static str,
        source: std::io::Error,
    },
    #[error("could not prepare the buildspec's scratch directory: {source}")]
    ScratchDir { source: std::io::Error },
    #[error(
        "`env.secrets-manager` variable `{variable}`: `{reference}` {problem}; write it as `secret-id:json-key:version-stage:version-id` (the last three may be empty or left out)"
    )]
    SecretReference {
        variable: String,
        reference: String,
        problem: String,
    },
    #[error(
        "could not read secret `{secret_id}` (variable `{variable}`) from Secrets Manager: {message}"
    )]
    SecretsManager {
        variable: String,
        secret_id: String,
        message: String,
    },
    #[error(
        "could not read parameter `{parameter}` (variable `{variable}`) from Parameter Store: {message}"
    )]
    ParameterStore {
        variable: String,
        parameter: String,
        message: String,
    },
    /// An AWS call for a secret value failed: `what` names the value, `failure` says why.
    #[error("could not read {what}: {failure}")]
    Aws {
        what: String,
        failure: crate::aws_error::AwsFailure,
    },
}

impl BuildspecError {
    /// Whether the environment (AWS credentials, permissions, network) rather than the
    /// buildspec is at fault: maps to [`crate::exit_codes::ENVIRONMENT`].
    pub fn is_environment(&self) -> bool {
        matches!(self, BuildspecError::Aws { failure, .. } if failure.is_environment())
    }
}

/// The facts the `CODEBUILD_*` variables are made from.
#[derive(Debug, Clone, Copy)]
pub struct CodebuildFacts<'a> {
    pub source_dir: &'a Path,
    /// The full commit sha being built.
    pub resolved_source_version: &'a str,
    /// Counts builds of this pipeline: 1, 2, 3…
    pub build_number: u64,
    /// Names the build in `CODEBUILD_BUILD_ID` (`project:run-id`), as a CodeBuild project does.
    pub project: &'a str,
    pub run_id: &'a str,
    /// Milliseconds since the Unix epoch.
    pub start_time_ms: i64,
    /// Who started the build (a user, `github-actions`, `envelope-agent`…).
    pub initiator: &'a str,
    /// What triggered it, in CodeBuild's webhook form: `tag/v1.2.3`, `branch/main`, `pr/42`.
    pub webhook_trigger: Option<&'a str>,
}

/// The `CODEBUILD_*` variables buildspecs commonly read.
pub fn codebuild_variables(facts: &CodebuildFacts<'_>) -> BTreeMap<String, String> {
    let mut variables = BTreeMap::new();
    let mut set = |name: &str, value: String| {
        variables.insert(name.to_string(), value);
    };
    set("CODEBUILD_CI", "true".into());
    set(
        "CODEBUILD_SRC_DIR",
        facts.source_dir.to_string_lossy().into_owned(),
    );
    set(
        "CODEBUILD_RESOLVED_SOURCE_VERSION",
        facts.resolved_source_version.into(),
    );
    set(
        "CODEBUILD_SOURCE_VERSION",
        facts.resolved_source_version.into(),
    );
    set("CODEBUILD_BUILD_NUMBER", facts.build_number.to_string());
    set(
        "CODEBUILD_BUILD_ID",
        format!("{}:{}", facts.project, facts.run_id),
    );
    set("CODEBUILD_START_TIME", facts.start_time_ms.to_string());
    set("CODEBUILD_INITIATOR", facts.initiator.into());
    set("CODEBUILD_BUILD_SUCCEEDING", "1".into());
    if let Some(trigger) = facts.webhook_trigger {
        set("CODEBUILD_WEBHOOK_TRIGGER", trigger.into());
        let head_ref = if let Some(tag) = trigger.strip_prefix("tag/") {
            Some(format!("refs/tags/{tag}"))
        } else {
            trigger
                .strip_prefix("branch/")
                .map(|branch| format!("refs/heads/{branch}"))
        };
        if let Some(head_ref) = head_ref {
            set("CODEBUILD_WEBHOOK_HEAD_REF", head_ref);
        }
    }
    variables
}

/// Run the buildspec's phases in `context.source_dir`, calling `image_build` at the end of the
/// build phase with the environment the commands have at that point (exported variables and
/// the values of `exported-variables`; secret variables left out: hand secrets to the image
/// build as BuildKit secrets).
///
/// Dropping the returned future kills the shell and everything it started.
pub async fn run<F, Fut, E>(
    spec: &Buildspec,
    context: &BuildspecContext,
    progress: &(dyn Fn(BuildspecProgress) + Send + Sync),
    image_build: F,
) -> Result<BuildspecOutcome, BuildspecError>
where
    F: FnOnce(BTreeMap<String, String>) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: fmt::Display,
{
    let kind = ShellKind::from_setting(spec.env.as_ref().and_then(|env| env.shell.as_deref()))?;
    if !context.source_dir.is_dir() {
        return Err(BuildspecError::SourceDir {
            path: context.source_dir.clone(),
        });
    }
    let redactor = Redactor::new();
    redactor.add_all(context.secret_env.values().map(Secret::expose));
    let notice = |message: String| {
        progress(BuildspecProgress::Notice {
            message: redactor.redact(&message),
        })
    };
    for message in settings_not_applied(spec) {
        notice(message);
    }

    let mut exported_names = Vec::new();
    for name in spec.env.iter().flat_map(|env| &env.exported_variables) {
        if is_variable_name(name) {
            exported_names.push(name.clone());
        } else {
            notice(format!(
                "exported variable `{name}` is not a valid shell variable name; it is left out"
            ));
        }
    }

    let mut session = Session::start(kind, &context.source_dir, initial_env(spec, context))?;
    let empty_build = Phase::default();
    let phases: Vec<(&'static str, &Phase)> = [
        spec.phases.install.as_ref(),
        spec.phases.pre_build.as_ref(),
        Some(spec.phases.build.as_ref().unwrap_or(&empty_build)),
        spec.phases.post_build.as_ref(),
    ]
    .into_iter()
    .zip(PHASE_NAMES)
    .filter_map(|(phase, name)| phase.map(|phase| (name, phase)))
    .collect();

    let mut image_build = Some(image_build);
    let mut succeeding = true;
    let mut skip_the_rest = false;
    let mut results = Vec::new();
    for (name, phase) in phases {
        if skip_the_rest {
            progress(BuildspecProgress::PhaseFinished {
                phase: name,
                status: PhaseStatus::Skipped,
                seconds: 0.0,
            });
            results.push(PhaseResult {
                name: name.to_string(),
                status: PhaseStatus::Skipped,
                failed_command: None,
                exit_code: None,
                error: None,
                seconds: 0.0,
            });
            continue;
        }
        let started = Instant::now();
        progress(BuildspecProgress::PhaseStarted { phase: name });
        if let Some(message) = runtime_versions_notice(phase) {
            notice(message);
        }
        if let Some(user) = &phase.run_as {
            notice(format!(
                "run-as `{user}` in {name} is not applied: commands run as the runner's own user"
            ));
        }
        let mut runner = PhaseRunner {
            phase: name,
            session: &mut session,
            redactor: &redactor,
            progress,
            succeeding: &mut succeeding,
        };

        let mut failure = None;
        for command in &phase.commands {
            if let Some(failed) = runner.command(command).await? {
                failure = Some(failed);
                break;
            }
        }
        if failure.is_some() {
            runner.mark_failed().await?;
        } else if name == "build"
            && let Some(image_build) = image_build.take()
        {
            let environment = runner
                .image_build_environment(context, &exported_names)
                .await?;
            if let Err(error) = image_build(environment).await {
                failure = Some(Failure {
                    command: None,
                    exit_code: None,
                    message: Some(redactor.redact(&format!("the image build failed: {error}"))),
                });
                runner.mark_failed().await?;
            }
        }
        for command in &phase.finally {
            if let Some(failed) = runner.command(command).await? {
                runner.mark_failed().await?;
                failure.get_or_insert(failed);
                break;
            }
        }

        let seconds = started.elapsed().as_secs_f64();
        let status = if failure.is_some() {
            PhaseStatus::Failed
        } else {
            PhaseStatus::Succeeded
        };
        progress(BuildspecProgress::PhaseFinished {
            phase: name,
            status,
            seconds,
        });
        if failure.is_some()
            && phase.on_failure.unwrap_or(OnFailure::Abort) == OnFailure::Abort
            && matches!(name, "install" | "pre_build")
        {
            skip_the_rest = true;
        }
        let failure = failure.unwrap_or_default();
        results.push(PhaseResult {
            name: name.to_string(),
            status,
            failed_command: failure.command,
            exit_code: failure.exit_code,
            error: failure.message,
            seconds,
        });
    }

    let mut exported = BTreeMap::new();
    let captured = session.capture(&exported_names).await?;
    for name in &exported_names {
        match captured.get(name) {
            None => notice(format!(
                "exported variable `{name}` is not set at the end of the build; it is left out"
            )),
            Some(value) if redactor.redact(value) != *value => notice(format!(
                "exported variable `{name}` holds a secret value; it is left out so that the \
                 secret is not stored with the run"
            )),
            Some(value) => {
                exported.insert(name.clone(), value.clone());
            }
        }
    }
    session.shutdown().await;
    Ok(BuildspecOutcome {
        succeeded: succeeding,
        phases: results,
        exported,
    })
}

/// Fetch the buildspec's `env.secrets-manager` and `env.parameter-store` values (parameters
/// decrypted), with the endpoint, region and credentials of `sdk_config`.
pub async fn resolve_secret_env(
    spec: &Buildspec,
    sdk_config: &aws_types::SdkConfig,
) -> Result<BTreeMap<String, Secret>, BuildspecError> {
    let mut resolved = BTreeMap::new();
    let Some(env) = &spec.env else {
        return Ok(resolved);
    };
    if !env.secrets_manager.is_empty() {
        let client = aws_sdk_secretsmanager::Client::new(sdk_config);
        // Several variables often read keys of one secret: fetch each version once.
        let mut fetched: HashMap<SecretVersion, String> = HashMap::new();
        for (variable, text) in &env.secrets_manager {
            let reference = SecretReference::parse(text).map_err(|problem| {
                BuildspecError::SecretReference {
                    variable: variable.clone(),
                    reference: text.clone(),
                    problem,
                }
            })?;
            let secrets_manager_error = |message: String| BuildspecError::SecretsManager {
                variable: variable.clone(),
                secret_id: reference.version.secret_id.clone(),
                message,
            };
            let secret_text = match fetched.get(&reference.version) {
                Some(secret_text) => secret_text.clone(),
                None => {
                    let version = &reference.version;
                    let output = client
                        .get_secret_value()
                        .secret_id(&version.secret_id)
                        .set_version_stage(version.version_stage.clone())
                        .set_version_id(version.version_id.clone())
                        .send()
                        .await
                        .map_err(|error| BuildspecError::Aws {
                            what: format!(
                                "secret `{}` (variable `{variable}`) from Secrets Manager",
                                version.secret_id
                            ),
                            failure: crate::aws_error::AwsFailure::during(
                                &error,
                                "Secrets Manager GetSecretValue",
                            ),
                        })?;
                    let secret_text = match (output.secret_string, output.secret_binary) {
                        (Some(text), _) => text,
                        (None, Some(_)) => {
                            return Err(secrets_manager_error(
                                "the secret is stored as SecretBinary, which is never handed to a \
                                 build; store it as SecretString (text) instead"
                                    .into(),
                            ));
                        }
                        (None, None) => {
                            return Err(secrets_manager_error("the secret has no value".into()));
                        }
                    };
                    fetched.insert(version.clone(), secret_text.clone());
                    secret_text
                }
            };
            let value = reference
                .select(&secret_text)
                .map_err(secrets_manager_error)?;
            resolved.insert(variable.clone(), Secret::new(value));
        }
    }
    if !env.parameter_store.is_empty() {
        let client = aws_sdk_ssm::Client::new(sdk_config);
        let mut fetched: HashMap<&str, Secret> = HashMap::new();
        for (variable, parameter) in &env.parameter_store {
            let value = match fetched.get(parameter.as_str()) {
                Some(value) => value.clone(),
                None => {
                    let parameter_store_error = |message: String| BuildspecError::ParameterStore {
                        variable: variable.clone(),
                        parameter: parameter.clone(),
                        message,
                    };
                    let output = client
                        .get_parameter()
                        .name(parameter)
                        .with_decryption(true)
                        .send()
                        .await
                        .map_err(|error| BuildspecError::Aws {
                            what: format!(
                                "parameter `{parameter}` (variable `{variable}`) from Parameter Store"
                            ),
                            failure: crate::aws_error::AwsFailure::during(
                                &error,
                                "SSM GetParameter",
                            ),
                        })?;
                    let value = output
                        .parameter
                        .and_then(|parameter| parameter.value)
                        .ok_or_else(|| {
                            parameter_store_error("the parameter has no value".into())
                        })?;
                    let value = Secret::new(value);
                    fetched.insert(parameter, value.clone());
                    value
                }
            };
            resolved.insert(variable.clone(), value);
        }
    }
    Ok(resolved)
}

/// Which secret version a `secrets-manager` reference reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SecretVersion {
    secret_id: String,
    version_stage: Option<String>,
    version_id: Option<String>,
}

/// A parsed `secret-id:json-key:version-stage:version-id`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SecretReference {
    version: SecretVersion,
    json_key: Option<String>,
}

impl SecretReference {
    fn parse(text: &str) -> Result<SecretReference, String> {
        let parts: Vec<&str> = text.split(':').collect();
        // An ARN (arn:partition:secretsmanager:region:account:secret:name) has colons itself.
        let id_parts = if text.starts_with("arn:") {
            if parts.len() < 7 {
                return Err("looks like an ARN but is not a complete secret ARN".into());
            }
            7
        } else {
            1
        };
        let secret_id = parts[..id_parts].join(":");
        let rest = &parts[id_parts..];
        if secret_id.is_empty() {
            return Err("has no secret id".into());
        }
        if rest.len() > 3 {
            return Err("has too many `:`-separated fields".into());
        }
        let field = |index: usize| {
            rest.get(index)
                .filter(|field| !field.is_empty())
                .map(|field| field.to_string())
        };
        Ok(SecretReference {
            version: SecretVersion {
                secret_id,
                version_stage: field(1),
                version_id: field(2),
            },
            json_key: field(0),
        })
    }

    /// The variable's value from the secret's text. Errors never quote the secret.
    fn select(&self, secret_text: &str) -> Result<String, String> {
        let Some(key) = &self.json_key else {
            return Ok(secret_text.to_string());
        };
        let Ok(serde_json::Value::Object(object)) = serde_json::from_str(secret_text) else {
            return Err(format!(
                "the secret is not a JSON object, so it has no key `{key}`"
            ));
        };
        match object.get(key) {
            Some(serde_json::Value::String(value)) => Ok(value.clone()),
            Some(value) => Ok(value.to_string()),
            None => Err(format!(
                "the secret has no JSON key `{key}` (it has: {})",
                object.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

/// Notices for buildspec settings that have no meaning on this machine.
fn settings_not_applied(spec: &Buildspec) -> Vec<String> {
    let mut notices = Vec::new();
    if let Some(user) = &spec.run_as {
        notices.push(format!(
            "run-as `{user}` is not applied: commands run as the runner's own user"
        ));
    }
    if spec.proxy.is_some() {
        notices.push("proxy settings are not applied: commands use this machine's network".into());
    }
    if spec
        .env
        .as_ref()
        .is_some_and(|env| env.git_credential_helper.is_some())
    {
        notices.push(
            "git-credential-helper is not applied: the source stage has already fetched the \
             repository"
                .into(),
        );
    }
    notices
}

fn runtime_versions_notice(phase: &Phase) -> Option<String> {
    if phase.runtime_versions.is_empty() {
        return None;
    }
    let requested: Vec<String> = phase
        .runtime_versions
        .iter()
        .map(|(runtime, version)| format!("{runtime} {}", version.0))
        .collect();
    Some(format!(
        "runtime-versions are not applicable: envelope-runner uses the tools on this machine ({} requested)",
        requested.join(", ")
    ))
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first == '_' || first.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// The shell's starting environment, lowest precedence first: this process's environment,
/// the buildspec's `env.variables`, the caller's variables, the secrets, then the variables we
/// own (CodeBuild lets a project's variables override the buildspec's).
fn initial_env(spec: &Buildspec, context: &BuildspecContext) -> Vec<(OsString, OsString)> {
    let mut env: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    if let Some(section) = &spec.env {
        for (name, value) in &section.variables {
            env.insert(name.into(), value.0.clone().into());
        }
    }
    for (name, value) in &context.env {
        env.insert(name.into(), value.into());
    }
    for (name, value) in &context.secret_env {
        env.insert(name.into(), value.expose().into());
    }
    env.entry("CODEBUILD_SRC_DIR".into())
        .or_insert_with(|| context.source_dir.clone().into_os_string());
    env.insert("CODEBUILD_BUILD_SUCCEEDING".into(), "1".into());
    env.into_iter().collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShellKind {
    Bash,
    Sh,
}

impl ShellKind {
    fn from_setting(setting: Option<&str>) -> Result<ShellKind, BuildspecError> {
        match setting {
            None | Some("bash" | "/bin/bash") => Ok(ShellKind::Bash),
            Some("sh" | "/bin/sh") => Ok(ShellKind::Sh),
            Some(other) => Err(BuildspecError::UnsupportedShell {
                shell: other.to_string(),
            }),
        }
    }

    /// The descriptor sentinels are written to. bash takes any number, so one that scripts
    /// do not use (the `exec 9>lockfile; flock 9` idiom is common); dash takes only 0–9.
    fn sentinel_fd(self) -> u32 {
        match self {
            ShellKind::Bash => 217,
            ShellKind::Sh => 9,
        }
    }

    fn program(self) -> &'static str {
        match self {
            ShellKind::Bash => "bash",
            ShellKind::Sh => "/bin/sh",
        }
    }
}

/// Why a phase failed.
#[derive(Debug, Default)]
struct Failure {
    command: Option<String>,
    exit_code: Option<i32>,
    message: Option<String>,
}

/// Runs the commands of one phase and reports them.
struct PhaseRunner<'a> {
    phase: &'static str,
    session: &'a mut Session,
    redactor: &'a Redactor,
    progress: &'a (dyn Fn(BuildspecProgress) + Send + Sync),
    succeeding: &'a mut bool,
}

impl PhaseRunner<'_> {
    /// Run one command; `Some` when it failed.
    async fn command(&mut self, command: &str) -> Result<Option<Failure>, BuildspecError> {
        let shown = self.redactor.redact(command);
        (self.progress)(BuildspecProgress::Command {
            phase: self.phase,
            command: shown.clone(),
        });
        let (phase, redactor, progress) = (self.phase, self.redactor, self.progress);
        let mut lines = |line: String| {
            progress(BuildspecProgress::Line {
                phase,
                line: redactor.redact(&line),
            })
        };
        let end = self.session.run_command(command, &mut lines).await?;
        let summary = summarize(&shown);
        let (exit_code, message) = match end {
            CommandEnd::Exited(0) => return Ok(None),
            CommandEnd::Exited(code) => {
                (Some(code), format!("`{summary}` exited with status {code}"))
            }
            CommandEnd::EndedShell { exit_code, signal } => {
                let how = match (exit_code, signal) {
                    (Some(code), _) => format!("ended the shell with status {code}"),
                    (None, Some(signal)) => format!("was killed by signal {signal}"),
                    (None, None) => "ended the shell".to_string(),
                };
                progress(BuildspecProgress::Notice {
                    message: format!(
                        "`{summary}` {how}; the next commands run in a new shell with the \
                         exported variables and the directory it had"
                    ),
                });
                if exit_code == Some(0) {
                    return Ok(None);
                }
                (exit_code, format!("`{summary}` {how}"))
            }
        };
        Ok(Some(Failure {
            command: Some(shown),
            exit_code,
            message: Some(message),
        }))
    }

    /// The build is failing from now on: commands see `CODEBUILD_BUILD_SUCCEEDING=0`.
    async fn mark_failed(&mut self) -> Result<(), BuildspecError> {
        if std::mem::replace(self.succeeding, false) {
            let (phase, redactor, progress) = (self.phase, self.redactor, self.progress);
            let mut lines = |line: String| {
                progress(BuildspecProgress::Line {
                    phase,
                    line: redactor.redact(&line),
                })
            };
            self.session
                .execute(
                    "CODEBUILD_BUILD_SUCCEEDING=0; export CODEBUILD_BUILD_SUCCEEDING",
                    &mut lines,
                )
                .await?;
        }
        Ok(())
    }

    async fn image_build_environment(
        &mut self,
        context: &BuildspecContext,
        exported_names: &[String],
    ) -> Result<BTreeMap<String, String>, BuildspecError> {
        let mut environment = self.session.environment().await?;
        environment.extend(self.session.capture(exported_names).await?);
        environment.retain(|name, _| !context.secret_env.contains_key(name));
        Ok(environment)
    }
}

/// A command as one short line for messages.
fn summarize(command: &str) -> String {
    let command = command.trim();
    let first_line = command.lines().next().unwrap_or_default();
    let mut summary: String = first_line.chars().take(80).collect();
    if summary.len() < command.len() {
        summary.push('…');
    }
    summary
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CommandEnd {
    /// It finished with this status and the shell goes on.
    Exited(i32),
    /// It ended the shell (`exit`, `set -e`, a signal).
    EndedShell {
        exit_code: Option<i32>,
        signal: Option<i32>,
    },
}

/// A line the shell printed, sorted.
#[derive(Debug, PartialEq, Eq)]
enum ShellLine {
    Output(String),
    /// Our own plumbing, echoed by `set -x` or `set -v`: not shown.
    Plumbing,
    /// The end of a command (`done`) or of the shell (`exit`), with output printed before it
    /// on the same line by a command whose output did not end in a newline.
    Sentinel {
        before: String,
        shell_exited: bool,
        status: i32,
    },
}

/// What the shell calls a command file in its error messages.
const COMMAND_FILE_NAME: &str = "buildspec command";

/// Sort a line. Every plumbing line and file name contains `marker`, random per run; command
/// files live in `scratch` (whose name contains the marker).
fn classify(line: &str, marker: &str, scratch: &str) -> ShellLine {
    // The shell names the command file in its errors (`…/command-3.sh: line 1: foo: command
    // not found`): those lines are the command's, so they are shown with a readable name.
    let line = name_command_files(line, scratch);
    let Some(at) = line.find(marker) else {
        return ShellLine::Output(line);
    };
    let rest = &line[at + marker.len()..];
    let parsed = if let Some(status) = rest.strip_prefix(":done:") {
        status.parse().ok().map(|status| (false, status))
    } else if let Some(status) = rest.strip_prefix(":exit:") {
        status.parse().ok().map(|status| (true, status))
    } else {
        None
    };
    match parsed {
        Some((shell_exited, status)) => ShellLine::Sentinel {
            before: line[..at].to_string(),
            shell_exited,
            status,
        },
        None => ShellLine::Plumbing,
    }
}

/// Replace `<scratch>/command-<n>.sh:` (an error message's prefix) with `buildspec command:`.
/// The path alone, as `set -x` shows it for the sourcing line, stays plumbing.
fn name_command_files(line: &str, scratch: &str) -> String {
    let prefix = format!("{scratch}/command-");
    let mut named = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find(&prefix) {
        let after = &rest[at + prefix.len()..];
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        match after[digits..].strip_prefix(".sh:") {
            Some(tail) if digits > 0 => {
                named.push_str(&rest[..at]);
                named.push_str(COMMAND_FILE_NAME);
                named.push(':');
                rest = tail;
            }
            _ => {
                named.push_str(&rest[..at + prefix.len()]);
                rest = after;
            }
        }
    }
    named.push_str(rest);
    named
}

/// Quote for the shell: `it's` → `'it'\''s'`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Parse `env -0` output.
fn parse_environment(bytes: &[u8]) -> Vec<(OsString, OsString)> {
    bytes
        .split(|byte| *byte == 0)
        .filter_map(|entry| {
            let at = entry.iter().position(|byte| *byte == b'=')?;
            (at > 0).then(|| {
                (
                    OsString::from_vec(entry[..at].to_vec()),
                    OsString::from_vec(entry[at + 1..].to_vec()),
                )
            })
        })
        .collect()
}

/// Kills a process group when dropped, so nothing a buildspec started outlives the build or a
/// cancelled run.
struct ProcessGroup(Option<rustix::process::Pid>);

impl ProcessGroup {
    fn kill(&self) {
        if let Some(group) = self.0 {
            // ESRCH (already gone) is fine.
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One running shell. Field order matters: the group is killed before the child is dropped.
struct ShellProcess {
    group: ProcessGroup,
    child: Child,
    stdin: ChildStdin,
    output: BufReader<pipe::Receiver>,
    /// Has not read the preamble yet (sent with the first line).
    fresh: bool,
}

/// The shell the commands run in, restarted with the old one's state if a command ends it.
struct Session {
    kind: ShellKind,
    /// Plumbing files: command scripts, environment dumps. Its path contains `marker`.
    scratch: tempfile::TempDir,
    /// `scratch` as text, for shell lines.
    scratch_path: String,
    marker: String,
    /// Environment and directory for a new shell when the last one left no dump.
    fallback_env: Vec<(OsString, OsString)>,
    fallback_dir: PathBuf,
    process: Option<ShellProcess>,
    commands_run: u64,
    buffer: Vec<u8>,
}

/// How long to collect output after a shell died without its exit trap.
const DRAIN_AFTER_DEATH: Duration = Duration::from_millis(500);

impl Session {
    fn start(
        kind: ShellKind,
        source_dir: &Path,
        env: Vec<(OsString, OsString)>,
    ) -> Result<Session, BuildspecError> {
        let marker = format!("envelope{:032x}", rand::random::<u128>());
        let scratch = tempfile::Builder::new()
            .prefix(&format!("{marker}-"))
            .tempdir()
            .map_err(|source| BuildspecError::ScratchDir { source })?;
        let Some(scratch_path) = scratch.path().to_str().map(str::to_string) else {
            return Err(BuildspecError::ScratchDir {
                source: std::io::Error::other(format!(
                    "the temporary directory {} is not a UTF-8 path; set TMPDIR",
                    scratch.path().display()
                )),
            });
        };
        let mut session = Session {
            kind,
            scratch,
            scratch_path,
            marker,
            fallback_env: env,
            fallback_dir: source_dir.to_path_buf(),
            process: None,
            commands_run: 0,
            buffer: Vec::new(),
        };
        let scratch_path = &session.scratch_path;
        let marker = &session.marker;
        let env_program = ["/usr/bin/env", "/bin/env"]
            .into_iter()
            .find(|path| Path::new(path).exists())
            .unwrap_or("env");
        // A spare descriptor keeps the original output pipe, so sentinels arrive even after a
        // command runs `exec >/dev/null`; if a command closed it, stdout has to do.
        let fd = kind.sentinel_fd();
        let preamble = format!(
            "exec {fd}>&1\n\
             {marker}_say() {{ {{ printf '{marker}:%s:%s\\n' \"$1\" \"$2\" >&{fd}; }} 2>/dev/null || printf '{marker}:%s:%s\\n' \"$1\" \"$2\"; }}\n\
             {marker}_done() {{ {marker}_say done \"$1\"; }}\n\
             {marker}_exit() {{ {env_program} -0 > {exit_env} 2>/dev/null; pwd > {exit_dir} 2>/dev/null; {marker}_say exit \"$1\"; }}\n\
             {marker}_environment() {{ {env_program} -0 > {environment}; }}\n\
             trap '{marker}_exit $?' EXIT\n",
            exit_env = shell_quote(&format!("{scratch_path}/exit-env")),
            exit_dir = shell_quote(&format!("{scratch_path}/exit-dir")),
            environment = shell_quote(&format!("{scratch_path}/environment")),
        );
        std::fs::write(session.scratch.path().join("preamble.sh"), preamble)
            .map_err(|source| BuildspecError::ScratchDir { source })?;
        session.spawn()?;
        Ok(session)
    }

    /// Start a shell: the first one, or a new one after a command ended the last.
    fn spawn(&mut self) -> Result<(), BuildspecError> {
        let exit_env = self.scratch.path().join("exit-env");
        let exit_dir = self.scratch.path().join("exit-dir");
        if let Ok(dump) = std::fs::read(&exit_env) {
            self.fallback_env = parse_environment(&dump);
        }
        if let Ok(dir) = std::fs::read(&exit_dir) {
            let dir = PathBuf::from(OsStr::from_bytes(dir.trim_ascii_end()));
            if dir.is_dir() {
                self.fallback_dir = dir;
            }
        }
        let _ = std::fs::remove_file(&exit_env);
        let _ = std::fs::remove_file(&exit_dir);

        let shell = self.kind.program();
        let start_error = |source| BuildspecError::ShellStart { shell, source };
        let (reader, writer) = std::io::pipe().map_err(start_error)?;
        let mut command = tokio::process::Command::new(shell);
        command
            .env_clear()
            .envs(self.fallback_env.iter().map(|(name, value)| (name, value)))
            .current_dir(&self.fallback_dir)
            .stdin(Stdio::piped())
            .stdout(writer.try_clone().map_err(start_error)?)
            .stderr(writer)
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(start_error)?;
        // The command holds our copies of the pipe's write end; without dropping it the
        // output would never reach end of file.
        drop(command);
        let group = ProcessGroup(
            child
                .id()
                .and_then(|pid| rustix::process::Pid::from_raw(pid as i32)),
        );
        let stdin = child.stdin.take().expect("stdin is piped");
        let output = pipe::Receiver::from_owned_fd(OwnedFd::from(reader)).map_err(start_error)?;
        self.process = Some(ShellProcess {
            group,
            child,
            stdin,
            output: BufReader::new(output),
            fresh: true,
        });
        self.buffer.clear();
        Ok(())
    }

    /// Run a buildspec command in the shell.
    async fn run_command(
        &mut self,
        command: &str,
        lines: &mut (dyn FnMut(String) + Send),
    ) -> Result<CommandEnd, BuildspecError> {
        self.commands_run += 1;
        let file = self
            .scratch
            .path()
            .join(format!("command-{}.sh", self.commands_run));
        let mut script = command.to_string();
        if !script.ends_with('\n') {
            script.push('\n');
        }
        std::fs::write(&file, script).map_err(|source| BuildspecError::ScratchDir { source })?;
        let line = format!(". {} </dev/null", shell_quote(&file.to_string_lossy()));
        self.execute(&line, lines).await
    }

    /// The shell's exported variables, by name.
    async fn environment(&mut self) -> Result<BTreeMap<String, String>, BuildspecError> {
        let file = self.scratch.path().join("environment");
        let _ = std::fs::remove_file(&file);
        let line = format!("{}_environment", self.marker);
        let mut errors = Vec::new();
        let end = self.execute(&line, &mut |line| errors.push(line)).await?;
        let dump = match (end, std::fs::read(&file)) {
            (CommandEnd::Exited(0), Ok(dump)) => dump,
            _ => {
                return Err(BuildspecError::Shell {
                    action: "saving its environment for the image build",
                    source: std::io::Error::other(format!(
                        "`env -0` did not work: {}",
                        errors.join(" ")
                    )),
                });
            }
        };
        Ok(parse_environment(&dump)
            .into_iter()
            .filter_map(|(name, value)| {
                let name = name.into_string().ok()?;
                is_variable_name(&name).then(|| (name, value.to_string_lossy().into_owned()))
            })
            .collect())
    }

    /// The values of these shell variables (exported or not) that are set.
    async fn capture(
        &mut self,
        names: &[String],
    ) -> Result<BTreeMap<String, String>, BuildspecError> {
        if names.is_empty() {
            return Ok(BTreeMap::new());
        }
        let dir = self.scratch.path().join("captured");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).map_err(|source| BuildspecError::ScratchDir { source })?;
        let mut line = String::new();
        for name in names {
            debug_assert!(is_variable_name(name));
            let file = shell_quote(&dir.join(name).to_string_lossy());
            line.push_str(&format!(
                "if [ -n \"${{{name}+set}}\" ]; then printf '%s' \"${name}\" > {file}; fi; "
            ));
        }
        line.push(':');
        self.execute(&line, &mut |_| {}).await?;
        let mut captured = BTreeMap::new();
        for name in names {
            if let Ok(value) = std::fs::read(dir.join(name)) {
                captured.insert(name.clone(), String::from_utf8_lossy(&value).into_owned());
            }
        }
        Ok(captured)
    }

    /// Send a line (a sourced command, or one of our own) to the shell and report its output
    /// until its sentinel.
    async fn execute(
        &mut self,
        line: &str,
        lines: &mut (dyn FnMut(String) + Send),
    ) -> Result<CommandEnd, BuildspecError> {
        if self.process.is_none() {
            self.spawn()?;
        }
        let process = self.process.as_mut().expect("a shell is running");
        let mut text = String::new();
        if std::mem::take(&mut process.fresh) {
            let preamble = self.scratch.path().join("preamble.sh");
            text.push_str(&format!(". {}\n", shell_quote(&preamble.to_string_lossy())));
        }
        text.push_str(&format!("{line}; {}_done $?\n", self.marker));
        // A shell that already ended cannot take the line; its end is read below.
        let _ = process.stdin.write_all(text.as_bytes()).await;
        let _ = process.stdin.flush().await;
        loop {
            tokio::select! {
                biased;
                read = process.output.read_until(b'\n', &mut self.buffer) => {
                    let read = read.map_err(|source| BuildspecError::Shell {
                        action: "reading its output",
                        source,
                    })?;
                    if read == 0 {
                        // Every writer is gone, so the shell has ended.
                        let status = process.child.wait().await.ok();
                        return Ok(self.ended(None, status));
                    }
                    let text = take_line(&mut self.buffer);
                    match classify(&text, &self.marker, &self.scratch_path) {
                        ShellLine::Output(output) => lines(output),
                        ShellLine::Plumbing => {}
                        ShellLine::Sentinel { before, shell_exited, status } => {
                            if !before.is_empty() {
                                lines(before);
                            }
                            if !shell_exited {
                                return Ok(CommandEnd::Exited(status));
                            }
                            // Kill the group before reaping the shell, while its id is
                            // still reserved: background processes go with it.
                            process.group.kill();
                            let wait_status = process.child.wait().await.ok();
                            return Ok(self.ended(Some(status), wait_status));
                        }
                    }
                }
                status = process.child.wait() => {
                    // Ended without its exit trap (a signal, or a command replaced the trap):
                    // collect what it printed, then carry on without it.
                    let status = status.ok();
                    let mut trap_status = None;
                    let deadline = tokio::time::sleep(DRAIN_AFTER_DEATH);
                    tokio::pin!(deadline);
                    loop {
                        tokio::select! {
                            read = process.output.read_until(b'\n', &mut self.buffer) => {
                                match read {
                                    Ok(0) | Err(_) => break,
                                    Ok(_) => {}
                                }
                                let text = take_line(&mut self.buffer);
                                match classify(&text, &self.marker, &self.scratch_path) {
                                    ShellLine::Output(output) => lines(output),
                                    ShellLine::Plumbing => {}
                                    ShellLine::Sentinel { before, shell_exited, status } => {
                                        if !before.is_empty() {
                                            lines(before);
                                        }
                                        if shell_exited {
                                            trap_status = Some(status);
                                        }
                                    }
                                }
                            }
                            () = &mut deadline => break,
                        }
                    }
                    if !self.buffer.is_empty() {
                        let text = take_line(&mut self.buffer);
                        lines(text);
                    }
                    process.group.kill();
                    return Ok(self.ended(trap_status, status));
                }
            }
        }
    }

    /// The shell is gone; the next line starts a new one.
    fn ended(&mut self, trap_status: Option<i32>, wait_status: Option<ExitStatus>) -> CommandEnd {
        use std::os::unix::process::ExitStatusExt;
        self.process = None;
        self.buffer.clear();
        match trap_status {
            Some(code) => CommandEnd::EndedShell {
                exit_code: Some(code),
                signal: None,
            },
            None => CommandEnd::EndedShell {
                exit_code: wait_status.and_then(|status| status.code()),
                signal: wait_status.and_then(|status| status.signal()),
            },
        }
    }

    /// Kill the shell and whatever it left running in the background (the end of a CodeBuild
    /// build ends its container too).
    async fn shutdown(mut self) {
        if let Some(mut process) = self.process.take() {
            process.group.kill();
            let _ = process.child.wait().await;
        }
    }
}

/// The buffered line without its line ending, as text.
fn take_line(buffer: &mut Vec<u8>) -> String {
    let mut bytes = std::mem::take(buffer);
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_shell_lines() {
        let marker = "envelope0123";
        let scratch = "/tmp/envelope0123-x";
        let output = |text: &str| ShellLine::Output(text.to_string());
        let sentinel = |before: &str, shell_exited, status| ShellLine::Sentinel {
            before: before.to_string(),
            shell_exited,
            status,
        };
        let cases = [
            ("hello", output("hello")),
            ("envelope0123:done:0", sentinel("", false, 0)),
            (
                "no newline at the endenvelope0123:done:127",
                sentinel("no newline at the end", false, 127),
            ),
            ("envelope0123:exit:3", sentinel("", true, 3)),
            // `set -x` echoes the plumbing: never a sentinel, never shown.
            ("+ printf 'envelope0123:done:%s\\n' 0", ShellLine::Plumbing),
            ("+ . /tmp/envelope0123-x/command-1.sh", ShellLine::Plumbing),
            ("+ envelope0123_done 0", ShellLine::Plumbing),
            // The shell's errors about a command are the command's output.
            (
                "/tmp/envelope0123-x/command-12.sh: line 1: nope: command not found",
                output("buildspec command: line 1: nope: command not found"),
            ),
            (
                "/tmp/envelope0123-x/command-2.sh: 3: Syntax error: Unterminated quoted string",
                output("buildspec command: 3: Syntax error: Unterminated quoted string"),
            ),
            ("/tmp/envelope0123-x/command-x.sh: odd", ShellLine::Plumbing),
        ];
        for (line, expected) in cases {
            assert_eq!(classify(line, marker, scratch), expected, "{line}");
        }
    }

    #[test]
    fn parses_secrets_manager_references() {
        let version = |id: &str, stage: Option<&str>, version_id: Option<&str>| SecretVersion {
            secret_id: id.into(),
            version_stage: stage.map(Into::into),
            version_id: version_id.map(Into::into),
        };
        let arn = "arn:aws:secretsmanager:eu-west-2:123456789012:secret:prod/db-AbCdEf";
        let cases = [
            ("prod/db", version("prod/db", None, None), None),
            (
                "prod/db:password",
                version("prod/db", None, None),
                Some("password"),
            ),
            (
                "prod/db::AWSPREVIOUS",
                version("prod/db", Some("AWSPREVIOUS"), None),
                None,
            ),
            (
                "prod/db:password::v-123",
                version("prod/db", None, Some("v-123")),
                Some("password"),
            ),
            (arn, version(arn, None, None), None),
            (
                &format!("{arn}:password:AWSCURRENT"),
                version(arn, Some("AWSCURRENT"), None),
                Some("password"),
            ),
        ];
        for (text, expected_version, expected_key) in cases {
            let reference = SecretReference::parse(text).unwrap();
            assert_eq!(reference.version, expected_version, "{text}");
            assert_eq!(reference.json_key.as_deref(), expected_key, "{text}");
        }
        for bad in ["", ":key", "a:b:c:d:e", "arn:aws:secretsmanager:eu-west-2"] {
            assert!(SecretReference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selects_json_keys_without_quoting_the_secret() {
        let reference = SecretReference::parse("db:password").unwrap();
        assert_eq!(
            reference.select(r#"{"password":"pw-1","port":5432}"#),
            Ok("pw-1".to_string())
        );
        let port = SecretReference::parse("db:port").unwrap();
        assert_eq!(
            port.select(r#"{"password":"pw-1","port":5432}"#),
            Ok("5432".to_string())
        );
        let missing = reference.select(r#"{"user":"pw-1"}"#).unwrap_err();
        assert!(missing.contains("no JSON key `password`"), "{missing}");
        assert!(!missing.contains("pw-1"), "{missing}");
        let not_json = reference.select("pw-1").unwrap_err();
        assert!(!not_json.contains("pw-1"), "{not_json}");
        let whole = SecretReference::parse("db").unwrap();
        assert_eq!(whole.select("pw-1"), Ok("pw-1".to_string()));
    }

    #[test]
    fn builds_codebuild_variables() {
        let variables = codebuild_variables(&CodebuildFacts {
            source_dir: Path::new("/work/src"),
            resolved_source_version: "0123abcd",
            build_number: 42,
            project: "api",
            run_id: "01JRUN",
            start_time_ms: 1_700_000_000_000,
            initiator: "github-actions",
            webhook_trigger: Some("tag/v1.2.3"),
        });
        let expected = [
            ("CODEBUILD_BUILD_ID", "api:01JRUN"),
            ("CODEBUILD_BUILD_NUMBER", "42"),
            ("CODEBUILD_BUILD_SUCCEEDING", "1"),
            ("CODEBUILD_CI", "true"),
            ("CODEBUILD_INITIATOR", "github-actions"),
            ("CODEBUILD_RESOLVED_SOURCE_VERSION", "0123abcd"),
            ("CODEBUILD_SOURCE_VERSION", "0123abcd"),
            ("CODEBUILD_SRC_DIR", "/work/src"),
            ("CODEBUILD_START_TIME", "1700000000000"),
            ("CODEBUILD_WEBHOOK_HEAD_REF", "refs/tags/v1.2.3"),
            ("CODEBUILD_WEBHOOK_TRIGGER", "tag/v1.2.3"),
        ];
        let actual: Vec<(&str, &str)> = variables
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        assert_eq!(actual, expected);
    }

    #[test]
    fn notices_settings_that_do_not_apply() {
        let spec: Buildspec = serde_json::from_value(serde_json::json!({
            "version": "0.2",
            "run-as": "builder",
            "proxy": {"upload-artifacts": "yes"},
            "env": {"git-credential-helper": "yes"},
            "phases": {"install": {"runtime-versions": {"php": 8.3, "nodejs": 20}}}
        }))
        .unwrap();
        let notices = settings_not_applied(&spec);
        assert_eq!(notices.len(), 3, "{notices:?}");
        assert!(notices[0].starts_with("run-as `builder` is not applied"));
        assert_eq!(
            runtime_versions_notice(spec.phases.install.as_ref().unwrap()).unwrap(),
            "runtime-versions are not applicable: envelope-runner uses the tools on this \
             machine (nodejs 20, php 8.3 requested)"
        );
    }

    /// The build stage may spawn the run on a multi-threaded runtime.
    #[allow(dead_code)]
    fn run_is_send(spec: &Buildspec, context: &BuildspecContext) {
        fn assert_send<T: Send>(_: T) {}
        let progress = |_: BuildspecProgress| {};
        assert_send(run(spec, context, &progress, |_| async {
            Ok::<(), String>(())
        }));
    }

    #[test]
    fn small_helpers() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert!(is_variable_name("_IMAGE_TAG2"));
        for bad in ["", "2X", "A-B", "A B", "A$(x)"] {
            assert!(!is_variable_name(bad), "{bad}");
        }
        assert_eq!(
            parse_environment(b"A=1\0B=x=y\nz\0=bad\0noequals\0"),
            vec![
                (OsString::from("A"), OsString::from("1")),
                (OsString::from("B"), OsString::from("x=y\nz")),
            ]
        );
        assert_eq!(summarize("make test"), "make test");
        assert_eq!(summarize("set -e\nmake"), "set -e…");
        assert_eq!(
            ShellKind::from_setting(Some("/bin/sh")).unwrap(),
            ShellKind::Sh
        );
        assert!(ShellKind::from_setting(Some("zsh")).is_err());
    }
}
