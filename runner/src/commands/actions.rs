//! GitHub Actions mode as the commands see it: the job read from the process environment once
//! (in `commands::main`), the session a command opens in it, and how the command prints
//! pipeline diagnostics there.

use crate::redact;
use crate::report::CommandToken;
use crate::trigger::actions::{
    ActionsEnvironment, ActionsSession, AnnotationPaths, DiagnosticFormat, JobWriters,
};

/// The GitHub Actions job a command runs in.
pub(super) struct Job {
    pub environment: ActionsEnvironment,
    /// How annotations name files: relative to the workspace, from the working directory.
    pub paths: AnnotationPaths,
}

impl Job {
    /// The job this process runs in, from its environment variables and event file; `None`
    /// outside GitHub Actions.
    pub fn detect() -> Option<Job> {
        let environment = ActionsEnvironment::detect(&|name| std::env::var(name).ok(), &|path| {
            std::fs::read_to_string(path).ok()
        })?;
        let paths = AnnotationPaths {
            workspace: environment.workspace.clone(),
            current_dir: std::env::current_dir().unwrap_or_default(),
        };
        Some(Job { environment, paths })
    }

    /// A session in the job (standard error and the job's files) with the secrets of the
    /// environment masked before anything could print them.
    pub fn session(&self) -> ActionsSession {
        let mut session = ActionsSession::new(
            self.environment.clone(),
            self.paths.clone(),
            JobWriters::of_job(&self.environment),
        );
        session.mask(&redact::environment_secrets());
        session
    }

    /// Diagnostics for a command whose output carries its errors in a machine-readable form:
    /// the annotations alone.
    pub fn annotations(&self) -> DiagnosticFormat {
        DiagnosticFormat::Annotations {
            paths: self.paths.clone(),
        }
    }
}

/// How a command prints pipeline diagnostics for people: the snippets, coloured when `color`;
/// in a job after their annotations, with workflow commands stopped.
pub(super) fn diagnostic_format(job: Option<&Job>, color: bool) -> DiagnosticFormat {
    match job {
        Some(job) => DiagnosticFormat::Annotated {
            color,
            paths: job.paths.clone(),
            token: CommandToken::random(),
        },
        None => DiagnosticFormat::Snippets { color },
    }
}
