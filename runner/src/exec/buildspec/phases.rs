//! One phase's commands: running each in the shell, reporting it with secrets masked, turning
//! how it ended into a failure, and notices for settings that do not apply on this machine.

use super::shell::{CommandEnd, Session};
use super::{BuildspecContext, BuildspecError, BuildspecProgress};
use crate::buildspec::{Buildspec, Phase};
use crate::redact::Redactor;
use std::collections::BTreeMap;

/// Notices for buildspec settings that have no meaning on this machine.
pub(super) fn settings_not_applied(spec: &Buildspec) -> Vec<String> {
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

pub(super) fn runtime_versions_notice(phase: &Phase) -> Option<String> {
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

/// Why a phase failed.
#[derive(Debug, Default)]
pub(super) struct Failure {
    pub(super) command: Option<String>,
    pub(super) exit_code: Option<i32>,
    pub(super) message: Option<String>,
}

/// Runs the commands of one phase and reports them.
pub(super) struct PhaseRunner<'a> {
    pub(super) phase: &'static str,
    pub(super) session: &'a mut Session,
    pub(super) redactor: &'a Redactor,
    pub(super) progress: &'a (dyn Fn(BuildspecProgress) + Send + Sync),
    pub(super) succeeding: &'a mut bool,
}

impl PhaseRunner<'_> {
    /// Run one command; `Some` when it failed.
    pub(super) async fn command(
        &mut self,
        command: &str,
    ) -> Result<Option<Failure>, BuildspecError> {
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
    pub(super) async fn mark_failed(&mut self) -> Result<(), BuildspecError> {
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

    pub(super) async fn image_build_environment(
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
pub(super) fn summarize(command: &str) -> String {
    let command = command.trim();
    let first_line = command.lines().next().unwrap_or_default();
    let mut summary: String = first_line.chars().take(80).collect();
    if summary.len() < command.len() {
        summary.push('…');
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
