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
use phases::{Failure, PhaseRunner, runtime_versions_notice, settings_not_applied};
use serde::Serialize;
use shell::{Session, ShellKind};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::time::Instant;
use variables::{initial_env, is_variable_name};

mod phases;
mod protocol;
mod secrets;
mod shell;
mod variables;

pub use secrets::resolve_secret_env;
pub use variables::{CodebuildFacts, codebuild_variables};

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

#[cfg(test)]
mod tests {
    use super::phases::summarize;
    use super::protocol::{parse_environment, shell_quote};
    use super::*;
    use std::ffi::OsString;

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
