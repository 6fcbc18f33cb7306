//! Running the command line: parse it with the `cli` types, then [`dispatch`] each command to
//! the module of its verb family. The `match` in [`dispatch`] names every command, so a command
//! added to `cli` without a handler does not compile.

mod agent;
mod approve;
mod inspect;
mod manual;
mod outcome;
mod plan;
mod run;
mod settings;
mod shared;
mod validate;

use crate::bootstrap;
use crate::cli::{Cli, ColorChoice, Command};
use crate::trigger::actions::ActionsMode;
use std::future::Future;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

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
    let project = cli.project.clone().unwrap_or_else(|| PathBuf::from("."));
    dispatch(cli.command, &project, color)
}

/// Whether a command's output is fenced in GitHub Actions mode (see [`ActionsMode::fence`]).
/// `run`, `resume` and `retry` fence their own output around the run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fence {
    Yes,
    No,
}

/// Run one command; returns the exit code.
fn dispatch(command: Command, project: &Path, color: bool) -> i32 {
    // Locks are taken per command: run commands write from several threads.
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    match command {
        Command::Validate { files, output } => {
            validate::validate(project, &files, output, color, &mut stdout, &mut stderr)
        }
        Command::Schema { kind } => validate::schema(kind, &mut stdout),
        Command::Plan {
            pipeline,
            git_ref,
            sha,
            region,
            output,
        } => plan::plan(
            project,
            &pipeline,
            plan::Target {
                git_ref,
                sha,
                region,
            },
            output,
            color,
            &mut stdout,
            &mut stderr,
        ),
        Command::Run(request) => block_on(Fence::No, exit_code(run::run(project, request, color))),
        Command::Resume { run, until, common } => block_on(
            Fence::No,
            exit_code(run::resume(project, &run, false, until, &common, color)),
        ),
        Command::Retry { run, common } => block_on(
            Fence::No,
            exit_code(run::resume(project, &run, true, None, &common, color)),
        ),
        Command::Rollback {
            pipeline,
            to,
            common,
        } => block_on(
            Fence::Yes,
            exit_code(run::rollback(project, &pipeline, to, &common, color)),
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
            block_on(Fence::Yes, approve::approve(project, &run, request, &store))
        }
        Command::Status { run, output, store } => block_on(
            Fence::Yes,
            exit_code(inspect::status(project, run, output, &store)),
        ),
        Command::History {
            pipeline,
            limit,
            output,
            store,
        } => block_on(
            Fence::Yes,
            exit_code(inspect::history(project, pipeline, limit, output, &store)),
        ),
        Command::Logs {
            run,
            stage,
            follow,
            output,
            store,
        } => block_on(
            Fence::Yes,
            exit_code(inspect::logs(project, &run, stage, follow, output, &store)),
        ),
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

/// Run an async command on a multi-threaded runtime, fenced in GitHub Actions mode when asked.
fn block_on(fence: Fence, command: impl Future<Output = i32>) -> i32 {
    let runtime = match bootstrap::runtime(None) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let mut actions = match fence {
        Fence::Yes => ActionsMode::detect(),
        Fence::No => None,
    };
    if let Some(actions) = &mut actions {
        actions.fence();
    }
    let code = runtime.block_on(command);
    if let Some(actions) = &actions {
        actions.resume_commands();
    }
    code
}
