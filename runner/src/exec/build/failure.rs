//! How a failed image build reads: a step's exit code and last output lines, image references
//! checked before the daemon sees them, and the stage error of a build run by a buildspec,
//! which keeps the image build's own cause instead of only naming the phase.

use super::BuildError;
use crate::exec::buildspec::{BuildspecOutcome, PhaseStatus};
use crate::exec::push::{ReferenceError, Repository, check_tag};

/// The exit code in a BuildKit step error: `... exit code: 3` (BuildKit 0.8: `executor failed
/// running [...]: exit code: 3`; newer: `... did not complete successfully: exit code: 3`).
pub fn exit_code(message: &str) -> Option<i32> {
    const MARKER: &str = "exit code: ";
    let start = message.rfind(MARKER)? + MARKER.len();
    let rest = &message[start..];
    let digits = rest
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'-')
        .count();
    rest[..digits].parse().ok()
}

/// What went wrong with a step, short: `exit code 3`, or BuildKit's message when it names no
/// exit code (a missing file for `COPY`, a failed pull).
pub fn step_reason(message: &str) -> String {
    match exit_code(message) {
        Some(code) => format!("exit code {code}"),
        None => message.lines().next().unwrap_or_default().trim().to_owned(),
    }
}

/// `step `[2/2] RUN make` failed with exit code 3` and the step's last output lines.
pub(super) fn render_step_failure(step: &str, message: &str, output: &[String]) -> String {
    let mut text = match exit_code(message) {
        Some(code) => format!("step `{step}` failed with exit code {code}"),
        None => format!("step `{step}` failed: {message}"),
    };
    if output.is_empty() {
        text.push_str("\n(the step printed nothing)");
        return text;
    }
    text.push_str("\nlast output lines:");
    for line in output {
        text.push_str("\n  ");
        text.push_str(line);
    }
    text
}

/// Checks every reference the build would tag its image with, the way the daemon would, so
/// that a bad one is named before the build starts.
pub(super) fn check_references(tags: &[String]) -> Result<(), BuildError> {
    for reference in tags {
        split_reference(reference).map_err(|source| BuildError::InvalidReference {
            reference: reference.clone(),
            source,
        })?;
    }
    Ok(())
}

/// `host[:port]/path[:tag]` → the repository and the tag, both checked.
fn split_reference(reference: &str) -> Result<(Repository, Option<&str>), ReferenceError> {
    let after_slash = reference.rfind('/').map_or(0, |slash| slash + 1);
    let (repository, tag) = match reference[after_slash..].rfind(':') {
        Some(colon) => {
            let colon = after_slash + colon;
            (&reference[..colon], Some(&reference[colon + 1..]))
        }
        None => (reference, None),
    };
    let repository = Repository::parse(repository)?;
    if let Some(tag) = tag {
        check_tag(tag)?;
    }
    Ok((repository, tag))
}

/// The stage error of a buildspec that failed, and whether the environment is at fault.
/// When the image build is what failed, its own error is the cause; otherwise the failed
/// command and its exit status.
pub fn buildspec_failure(
    outcome: &BuildspecOutcome,
    image_build: Option<&BuildError>,
) -> (String, bool) {
    let Some(phase) = outcome
        .phases
        .iter()
        .find(|phase| phase.status == PhaseStatus::Failed)
    else {
        return match image_build {
            Some(error) => (
                format!("the image build failed: {error}"),
                error.is_environment(),
            ),
            None => ("the buildspec failed".to_owned(), false),
        };
    };
    let name = &phase.name;
    match (&phase.failed_command, image_build) {
        (Some(command), _) => {
            let how = phase
                .exit_code
                .map(|code| format!("exited with {code}"))
                .or_else(|| phase.error.clone())
                .unwrap_or_else(|| "failed".to_owned());
            (
                format!("buildspec phase `{name}` failed: `{command}` {how}"),
                false,
            )
        }
        (None, Some(error)) => (
            format!("buildspec phase `{name}` failed: the image build failed: {error}"),
            error.is_environment(),
        ),
        (None, None) => match &phase.error {
            Some(error) => (format!("buildspec phase `{name}` failed: {error}"), false),
            None => (format!("buildspec phase `{name}` failed"), false),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::buildspec::PhaseResult;

    #[test]
    fn finds_the_exit_code_in_buildkit_messages() {
        for (message, code) in [
            (
                "executor failed running [/bin/sh -c sh -c \"exit 3\"]: exit code: 3",
                Some(3),
            ),
            (
                "process \"/bin/sh -c make\" did not complete successfully: exit code: 2",
                Some(2),
            ),
            ("failed to compute cache key: \"/app.txt\" not found", None),
        ] {
            assert_eq!(exit_code(message), code, "{message}");
        }
        assert_eq!(step_reason("... exit code: 127"), "exit code 127");
        assert_eq!(
            step_reason("\"/app.txt\" not found\nmore"),
            "\"/app.txt\" not found"
        );
    }

    #[test]
    fn references_are_checked_with_the_push_rules() {
        assert!(check_references(&["127.0.0.1:5000/team/app:v1".into(), "app".into()]).is_ok());
        let error = check_references(&["127.0.0.1:5000/Team/app:v1".into()]).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("cannot tag the image as `127.0.0.1:5000/Team/app:v1`: "),
            "{message}"
        );
        assert!(message.contains("lowercase"), "{message}");
        let error = check_references(&["127.0.0.1:5000/app:v1+build".into()]).unwrap_err();
        assert!(error.to_string().contains("the tag `v1+build`"), "{error}");
    }

    fn phase(name: &str, status: PhaseStatus) -> PhaseResult {
        PhaseResult {
            name: name.to_owned(),
            status,
            failed_command: None,
            exit_code: None,
            error: None,
            seconds: 0.0,
        }
    }

    #[test]
    fn a_buildspec_keeps_the_image_builds_cause() {
        let mut build = phase("build", PhaseStatus::Failed);
        build.error = Some("the image build failed: ...".into());
        let outcome = BuildspecOutcome {
            succeeded: false,
            phases: vec![phase("pre_build", PhaseStatus::Succeeded), build],
            exported: Default::default(),
        };
        let error = BuildError::StepFailed {
            step: "[2/2] RUN make".into(),
            message: "executor failed running [/bin/sh -c make]: exit code: 3".into(),
            output: vec!["boom".into()],
        };
        let (message, environment) = buildspec_failure(&outcome, Some(&error));
        assert_eq!(
            message,
            "buildspec phase `build` failed: the image build failed: step `[2/2] RUN make` \
             failed with exit code 3\nlast output lines:\n  boom"
        );
        assert!(!environment);

        let mut failed = phase("pre_build", PhaseStatus::Failed);
        failed.failed_command = Some("npm test".into());
        failed.exit_code = Some(1);
        let outcome = BuildspecOutcome {
            succeeded: false,
            phases: vec![failed],
            exported: Default::default(),
        };
        assert_eq!(
            buildspec_failure(&outcome, None).0,
            "buildspec phase `pre_build` failed: `npm test` exited with 1"
        );
    }
}
