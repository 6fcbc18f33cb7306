//! Why a build failed ([`BuildError`]), and the daemon's or the context's own errors turned
//! into one a user can act on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::BuildRequest;
use super::context::ContextError;
use super::daemon::DaemonEndpoint;
use super::failure;
use super::progress::ProgressTracker;
use crate::exec::push::ReferenceError;

/// Why a build failed; every message says what, where and what to do next.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the build context {path} is not a directory; check the build's context setting")]
    ContextDirMissing { path: PathBuf },
    #[error(
        "no Dockerfile at {path}; check the build's dockerfile setting (it is relative to the \
         context directory {context})"
    )]
    DockerfileMissing { path: PathBuf, context: PathBuf },
    #[error(
        "the Dockerfile {path} is outside the build context {context}; move it into the \
         context or choose a context that contains it"
    )]
    DockerfileOutsideContext { path: PathBuf, context: PathBuf },
    #[error("cannot read {path}: {source}")]
    IgnoreFileUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: `{text}`: {reason}; fix or remove that line")]
    IgnoreFileInvalid {
        path: PathBuf,
        line: usize,
        text: String,
        reason: String,
    },
    #[error(
        "cannot read {path} for the build context: {source}; fix its permissions or add it to \
         .dockerignore"
    )]
    Context {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot reach the Docker daemon at {endpoint}: {detail}. Start Docker (for example \
         `sudo systemctl start docker`, or `scripts/test-env up` in the envelope-runner \
         repository) or set DOCKER_HOST to a running daemon, then run the build again"
    )]
    DaemonUnreachable { endpoint: String, detail: String },
    #[error(
        "the connection to the Docker daemon at {endpoint} broke during the build{}: {detail}. \
         The daemon may have stopped or restarted: check it (`docker info`, its log), then run \
         the build again",
        step.as_deref().map(|step| format!(" while `{step}` ran")).unwrap_or_default()
    )]
    ConnectionLost {
        endpoint: String,
        step: Option<String>,
        detail: String,
    },
    #[error("cannot open a BuildKit session on the Docker daemon: {0}")]
    Session(String),
    #[error(
        "{path}:{line}: {message}\n  {line} | {text}\nfix the Dockerfile and run the build again"
    )]
    DockerfileSyntax {
        path: PathBuf,
        line: usize,
        text: String,
        message: String,
    },
    #[error("{}", failure::render_step_failure(step, message, output))]
    StepFailed {
        step: String,
        /// BuildKit's message (`... exit code: 3`).
        message: String,
        /// The step's last output lines (at most 10).
        output: Vec<String>,
    },
    #[error(
        "cannot tag the image as `{reference}`: {source}; check the build's image and tags and \
         the pipeline's registry"
    )]
    InvalidReference {
        reference: String,
        source: ReferenceError,
    },
    #[error("the build of {image} failed: {message}")]
    Failed { image: String, message: String },
    #[error(
        "the Docker daemon refused the build of {image}: {message}; check the build's tags, \
         target and platform"
    )]
    Refused { image: String, message: String },
    #[error(
        "the Docker daemon at {endpoint} reported no build progress for {} (the build stage's \
         `idle_timeout`){}: the build was stopped. Check the daemon (`docker info`, its log); \
         raise `idle_timeout` for a step that works silently for longer",
        crate::timeouts::show(*idle),
        step.as_deref().map(|step| format!(" while `{step}` ran")).unwrap_or_default()
    )]
    Stalled {
        endpoint: String,
        idle: Duration,
        step: Option<String>,
    },
    #[error(
        "the build finished but the Docker daemon did not say which image it made; check \
         `docker images` and the daemon's log"
    )]
    NoImageId,
}

impl BuildError {
    /// Whether the machine (the Docker daemon) rather than the pipeline or its code is at
    /// fault: maps to [`crate::exit_codes::ENVIRONMENT`].
    pub fn is_environment(&self) -> bool {
        matches!(
            self,
            BuildError::DaemonUnreachable { .. }
                | BuildError::ConnectionLost { .. }
                | BuildError::Session(_)
                | BuildError::Stalled { .. }
        )
    }
}

pub(super) fn context_error(request: &BuildRequest, error: ContextError) -> BuildError {
    let context = request.context_dir.clone();
    let path = context.join(&request.dockerfile);
    match error {
        ContextError::ContextDirMissing => BuildError::ContextDirMissing { path: context },
        ContextError::DockerfileMissing => BuildError::DockerfileMissing { path, context },
        ContextError::DockerfileOutside => BuildError::DockerfileOutsideContext { path, context },
        ContextError::IgnoreUnreadable(path, source) => {
            BuildError::IgnoreFileUnreadable { path, source }
        }
        ContextError::IgnoreInvalid(path, invalid) => BuildError::IgnoreFileInvalid {
            path,
            line: invalid.line,
            text: invalid.text,
            reason: invalid.reason.to_owned(),
        },
    }
}

/// Turns the daemon's error into one a user can act on.
pub(super) fn classify_failure(
    error: bollard::errors::Error,
    tracker: &ProgressTracker<'_>,
    endpoint: &DaemonEndpoint,
    dockerfile: &Path,
    image: &str,
) -> BuildError {
    use bollard::errors::Error;
    let scrub = |text: &str| tracker.scrubber().redact(text);
    match error {
        Error::DockerStreamError { error } => {
            let message = scrub(
                error
                    .trim()
                    .trim_start_matches("failed to solve with frontend dockerfile.v0: "),
            );
            if let Some((line, reason)) = dockerfile_error_line(&message) {
                let text = std::fs::read_to_string(dockerfile)
                    .ok()
                    .and_then(|text| text.lines().nth(line - 1).map(str::to_owned))
                    .unwrap_or_default();
                return BuildError::DockerfileSyntax {
                    path: dockerfile.to_owned(),
                    line,
                    text,
                    message: reason,
                };
            }
            match tracker.failed_step(&message) {
                Some((step, output)) => {
                    let copies = step.contains("] COPY ") || step.contains("] ADD ");
                    let message = if copies && message.contains("not found") {
                        format!(
                            "{message} (is the file in the build context, and not left out by \
                             .dockerignore?)"
                        )
                    } else {
                        message
                    };
                    BuildError::StepFailed {
                        step,
                        message,
                        output,
                    }
                }
                None => BuildError::Failed {
                    image: image.to_owned(),
                    message,
                },
            }
        }
        Error::DockerResponseServerError { message, .. } => BuildError::Refused {
            image: image.to_owned(),
            message: scrub(&message),
        },
        // The daemon answered the ping and began the answer: it was reachable.
        Error::IOError { err } => BuildError::ConnectionLost {
            endpoint: endpoint.to_string(),
            step: tracker.running_step(),
            detail: err.to_string(),
        },
        other => BuildError::Failed {
            image: image.to_owned(),
            message: scrub(&other.to_string()),
        },
    }
}

/// Finds the Dockerfile line BuildKit's frontend complained about: `dockerfile parse error line
/// 3: unknown instruction: FOO` (BuildKit 0.8) or `... on line 3: ...` (newer).
fn dockerfile_error_line(message: &str) -> Option<(usize, String)> {
    const MARKER: &str = "dockerfile parse error ";
    let start = message.find(MARKER)? + MARKER.len();
    let rest = message[start..].trim_start_matches("on ");
    let rest = rest.strip_prefix("line ")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let line: usize = rest[..digits].parse().ok()?;
    if line == 0 {
        return None;
    }
    let reason = rest[digits..].trim_start_matches(':').trim();
    Some((line, reason.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_line_of_a_dockerfile_parse_error() {
        assert_eq!(
            dockerfile_error_line(
                "failed to create LLB definition: dockerfile parse error line 3: unknown instruction: FOOBAR"
            ),
            Some((3, "unknown instruction: FOOBAR".to_owned()))
        );
        assert_eq!(
            dockerfile_error_line(
                "dockerfile parse error on line 12: FROM requires either one or three arguments"
            ),
            Some((12, "FROM requires either one or three arguments".to_owned()))
        );
        assert_eq!(dockerfile_error_line("exit code: 1"), None);
    }

    #[test]
    fn step_failures_show_the_last_output_lines() {
        let error = BuildError::StepFailed {
            step: "[3/4] RUN make".to_owned(),
            message: "executor failed running [/bin/sh -c make]: exit code: 2".to_owned(),
            output: vec!["cc -c main.c".to_owned(), "main.c:1: error".to_owned()],
        };
        assert_eq!(
            error.to_string(),
            "step `[3/4] RUN make` failed with exit code 2\nlast output lines:\n  cc -c main.c\n  main.c:1: error"
        );
    }
}
