//! Running the command line: parse it with the `cli` types, read what every command takes from
//! the process once ([`Context`]: the project, colours, the GitHub Actions job), then
//! [`dispatch`] each command to the module of its verb family. The `match` in [`dispatch`] names
//! every command, so a command added to `cli` without a handler does not compile.

mod actions;
mod agent;
mod approve;
mod check_store;
mod diff;
mod env_file;
mod inspect;
mod local;
mod manual;
mod outcome;
mod plan;
mod promote;
mod run;
mod settings;
mod shared;
mod validate;

use crate::bootstrap;
use crate::cli::{Cli, ColorChoice, Command};
use crate::pipeline::environment::run_key;
use crate::trigger::actions::DiagnosticFormat;
use actions::Job;
use std::future::Future;
use std::io::IsTerminal;
use std::path::PathBuf;

/// What every command takes from the process besides its arguments, read once in [`main`].
struct Context {
    /// `--project`: the folder that holds `pipelines/`.
    project: PathBuf,
    /// Whether standard error gets colours.
    color: bool,
    /// The GitHub Actions job the command runs in, if any.
    job: Option<Job>,
}

impl Context {
    /// How the command prints pipeline diagnostics for people.
    fn diagnostics(&self) -> DiagnosticFormat {
        actions::diagnostic_format(self.job.as_ref(), self.color)
    }
}

/// Parse arguments and run; returns the process exit code.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    let cli: Cli = match bootstrap::parse_args(args) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let color = match cli.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
        }
    };
    let context = Context {
        project: cli.project.clone().unwrap_or_else(|| PathBuf::from(".")),
        color,
        job: Job::detect(),
    };
    dispatch(cli.command, &context)
}

/// Whether a command's output is fenced in GitHub Actions mode (see
/// [`crate::trigger::actions::ActionsSession::fence`]).
/// `run`, `resume` and `retry` fence their own output around the run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fence {
    Yes,
    No,
}

/// Run one command; returns the exit code.
fn dispatch(command: Command, context: &Context) -> i32 {
    let project = context.project.as_path();
    // Locks are taken per command: run commands write from several threads.
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    match command {
        Command::Validate { files, output } => {
            validate::validate(context, &files, output, &mut stdout, &mut stderr)
        }
        Command::Schema { kind } => validate::schema(kind, &mut stdout),
        Command::Plan {
            pipeline,
            git_ref,
            sha,
            region,
            environment,
            output,
        } => plan::plan(
            context,
            &pipeline,
            plan::Target {
                git_ref,
                sha,
                region,
                environment,
            },
            output,
            &mut stdout,
            &mut stderr,
        ),
        Command::Promote(request) => block_on(
            context,
            Fence::Yes,
            exit_code(promote::promote(context, request)),
        ),
        Command::Run(request) => {
            block_on(context, Fence::No, exit_code(run::run(context, request)))
        }
        Command::Resume { run, until, common } => block_on(
            context,
            Fence::No,
            exit_code(run::resume(context, &run, false, until, &common)),
        ),
        Command::Retry { run, common } => block_on(
            context,
            Fence::No,
            exit_code(run::resume(context, &run, true, None, &common)),
        ),
        Command::Rollback {
            pipeline,
            to,
            environment,
            common,
        } => block_on(
            context,
            Fence::Yes,
            exit_code(run::rollback(
                context,
                &pipeline,
                environment.as_deref(),
                to,
                &common,
            )),
        ),
        Command::Diff {
            pipeline,
            run,
            images,
            environment,
            exit_code: exit_on_changes,
            region,
            output,
            store,
        } => block_on(
            context,
            Fence::Yes,
            exit_code(diff::diff(
                context,
                diff::Request {
                    pipeline,
                    run,
                    images,
                    environment,
                    exit_on_changes,
                    region,
                    output,
                },
                &store,
            )),
        ),
        Command::Approve {
            run,
            reject,
            comment,
            stage,
            approver,
            store,
        } => {
            let request = approve::Request {
                approved: !reject,
                comment,
                stage,
                approver,
            };
            block_on(
                context,
                Fence::Yes,
                approve::approve(project, &run, request, &store),
            )
        }
        Command::Status { run, output, store } => block_on(
            context,
            Fence::Yes,
            exit_code(inspect::status(project, run, output, &store)),
        ),
        Command::History {
            pipeline,
            environment,
            limit,
            output,
            store,
        } => block_on(
            context,
            Fence::Yes,
            exit_code(inspect::history(
                project,
                pipeline.map(|name| run_key(&name, environment.as_deref())),
                limit,
                output,
                &store,
            )),
        ),
        Command::Logs {
            run,
            stage,
            follow,
            output,
            store,
        } => block_on(
            context,
            Fence::Yes,
            exit_code(inspect::logs(project, &run, stage, follow, output, &store)),
        ),
        Command::CheckStore { store } => check_store::check_store(project, &store, &mut stdout),
        Command::Completions { shell } => manual::completions(shell, &mut stdout),
        Command::Man { dir } => manual::man(dir.as_deref(), &mut stdout),
        Command::Agent { args } => agent::agent(&args),
    }
}

/// The exit code of a command that gives `Err(code)` when it stops early, having said why.
async fn exit_code(command: impl Future<Output = Result<i32, i32>>) -> i32 {
    match command.await {
        Ok(code) | Err(code) => code,
    }
}

/// Run an async command on a multi-threaded runtime. Fenced in a GitHub Actions job when
/// asked: the environment's secrets masked and workflow commands stopped until it ends.
fn block_on(context: &Context, fence: Fence, command: impl Future<Output = i32>) -> i32 {
    let runtime = match bootstrap::runtime(None) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let session = match fence {
        Fence::Yes => context.job.as_ref().map(Job::session),
        Fence::No => None,
    };
    if let Some(session) = &session {
        session.fence();
    }
    let code = runtime.block_on(command);
    if let Some(session) = &session {
        session.resume_commands();
    }
    code
}
