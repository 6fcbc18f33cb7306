//! The commands that take a run through its stages: `run` (start one), `resume` and `retry`
//! (continue a stored one) and `rollback` (redeploy an earlier run's images as a new run).
//! Each is a few steps: read the pipeline and settings, open the store, build the driver, then
//! [`end`]: report and give the exit code. `Err(code)`: the command stopped early, having said
//! why.

use super::outcome;
use super::settings::{reporter, settings};
use super::shared::{find_run, load_pipeline, open_store, store_failed};
use crate::cli::{OutputFormat, RunArgs, RunCommand};
use crate::exec::driver::{Driver, DriverError, RunOutcome, RunSettings};
use crate::exit_codes;
use crate::pipeline::CompiledPipeline;
use crate::plan::PlanContext;
use crate::report::EventSink;
use crate::run::{RunId, RunRecord, RunStatus, RunTrigger, StageKind, StageStatus, TriggerKind};
use crate::store::Store;
use crate::trigger::actions::{ActionsMode, paused_as_asked};
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

/// The ref a run builds, its commit and (for a release) its tag.
struct Revision {
    git_ref: String,
    sha: Option<String>,
    tag: Option<String>,
}

/// `run`: start a run of a pipeline.
pub(super) async fn run(project: &Path, request: RunCommand, color: bool) -> Result<i32, i32> {
    let args = &request.common;
    let mut actions = actions_session();
    let compiled = load_pipeline(project, &request.pipeline, color)?;
    if let Some(actions) = &mut actions {
        actions.mask_pipeline(&compiled);
    }
    check_until(&compiled, request.until.as_deref())?;
    let revision = revision(
        &compiled,
        actions.as_ref(),
        request.git_ref.clone(),
        request.sha.clone(),
        request.local,
    )?;
    let store = open_store(project, &args.store).await?;
    let settings = run_settings(&request);
    let (trigger, context) = trigger(&compiled, revision, &settings, actions.as_ref());
    let driver = driver(compiled, store, settings, args, actions.as_ref());
    let result = driver.start(trigger, context).await;
    Ok(end(
        &driver,
        &result,
        actions.as_ref(),
        args,
        request.until.as_deref(),
    )
    .await)
}

/// The driver's settings for `run`: every run command's, with `--until` and `--local`'s.
fn run_settings(request: &RunCommand) -> RunSettings {
    let mut settings = settings(&request.common);
    settings.until = request.until.clone();
    // A developer runs `--local` from the app's checkout: the working tree is the current folder.
    settings.local_source = request
        .local
        .then(|| request.source.clone().unwrap_or_else(|| PathBuf::from(".")));
    settings.local_registry = request.registry.clone();
    settings
}

/// What a new run records as its trigger, and the context it is planned in.
fn trigger(
    compiled: &CompiledPipeline,
    revision: Revision,
    settings: &RunSettings,
    actions: Option<&ActionsMode>,
) -> (RunTrigger, PlanContext) {
    let user = settings.user.clone();
    let trigger = RunTrigger {
        kind: match actions {
            _ if settings.is_local() => TriggerKind::Local { user },
            Some(actions) => actions.environment.trigger_kind(),
            None => TriggerKind::Cli { user },
        },
        git_ref: revision.git_ref.clone(),
        sha: revision.sha.clone(),
        tag: revision.tag,
    };
    let context = PlanContext {
        git_ref: revision.git_ref,
        sha: revision.sha,
        env: compiled.declared_env(),
        ..PlanContext::default()
    };
    (trigger, context)
}

/// The GitHub Actions session with the environment's secrets masked, before anything could
/// print them; `None` outside GitHub Actions.
fn actions_session() -> Option<ActionsMode> {
    let mut actions = ActionsMode::detect();
    if let Some(actions) = &mut actions {
        actions.mask_environment();
    }
    actions
}

/// `--until` must name a stage of the pipeline (by name or kind), or `source` or `push`.
fn check_until(compiled: &CompiledPipeline, until: Option<&str>) -> Result<(), i32> {
    if let Some(until) = until
        && !compiled
            .pipeline
            .stages
            .iter()
            .any(|s| s.name() == until || s.kind().as_str() == until)
        && !["source", "push"].contains(&until)
    {
        eprintln!("error: --until {until}: the pipeline has no such stage");
        return Err(exit_codes::INVALID_INPUT);
    }
    Ok(())
}

/// The ref to build: `--ref`; in GitHub Actions (without `--local`) the release or pushed ref
/// and its commit; with `--local`, HEAD; else the pipeline's branch.
fn revision(
    compiled: &CompiledPipeline,
    actions: Option<&ActionsMode>,
    git_ref: Option<String>,
    sha: Option<String>,
    local: bool,
) -> Result<Revision, i32> {
    let from_actions = actions
        .filter(|_| git_ref.is_none() && !local)
        .and_then(|actions| actions.environment.trigger());
    let (git_ref, sha) = match &from_actions {
        Some(trigger) => (Some(trigger.git_ref.clone()), sha.or(trigger.sha.clone())),
        None => (git_ref, sha),
    };
    let git_ref = match git_ref
        .or_else(|| local.then(|| "HEAD".to_string()))
        .or_else(|| compiled.pipeline.source.branch.clone())
    {
        Some(git_ref) => git_ref,
        None => {
            eprintln!(
                "error: give --ref (a release tag, branch or commit): the pipeline names no branch"
            );
            return Err(exit_codes::INVALID_INPUT);
        }
    };
    Ok(Revision {
        git_ref,
        sha,
        tag: from_actions.and_then(|trigger| trigger.tag),
    })
}

/// The driver for one run command. In GitHub Actions its events go to the Actions reporter
/// (with text logs), and workflow commands stop until [`end`].
fn driver(
    compiled: CompiledPipeline,
    store: Arc<dyn Store>,
    settings: RunSettings,
    args: &RunArgs,
    actions: Option<&ActionsMode>,
) -> Driver {
    let reporter = match actions {
        Some(actions) => actions.start_run(reporter(args), args.log_format == OutputFormat::Text),
        None => reporter(args),
    };
    Driver::new(compiled, store, settings, EventSink::new(reporter))
}

/// Report how the run ended, finish the GitHub Actions session (job files, annotations) and
/// give the exit code.
async fn end(
    driver: &Driver,
    result: &Result<RunOutcome, DriverError>,
    actions: Option<&ActionsMode>,
    args: &RunArgs,
    until: Option<&str>,
) -> i32 {
    outcome::report(driver, result);
    let Some(actions) = actions else {
        return outcome::exit_code(result, false);
    };
    actions
        .end_run(driver, result, args.store.store.as_deref())
        .await;
    let paused = matches!(result, Ok(outcome) if paused_as_asked(outcome, until, &driver.compiled));
    outcome::exit_code(result, paused)
}

/// `resume` (continue a run from its first unfinished stage) and, with `retry`, `retry` (run
/// a failed run's failed stage again).
pub(super) async fn resume(
    project: &Path,
    run: &str,
    retry: bool,
    until: Option<String>,
    args: &RunArgs,
    color: bool,
) -> Result<i32, i32> {
    let mut actions = actions_session();
    let store = open_store(project, &args.store).await?;
    let id = RunId(run.to_owned());
    let record = find_run(store.as_ref(), &id).await?;
    if let Some(code) = refusal(run, &record, retry) {
        if let Some(actions) = &actions {
            actions.write_job_files(store.as_ref(), &id, None).await;
        }
        return Ok(code);
    }
    let compiled = load_pipeline(project, &record.pipeline, color)?;
    if let Some(actions) = &mut actions {
        actions.mask_pipeline(&compiled);
    }
    if matches!(record.trigger.kind, TriggerKind::Local { .. }) {
        eprintln!("error: run {run} was a --local run; start a new one with `run --local`");
        return Err(exit_codes::INVALID_INPUT);
    }
    let mut settings = settings(args);
    settings.until = until;
    let driver = driver(compiled, store, settings, args, actions.as_ref());
    let result = if retry {
        driver.retry(&id).await
    } else {
        driver.resume(&id).await
    };
    Ok(end(&driver, &result, actions.as_ref(), args, None).await)
}

/// Why a stored run cannot be resumed (or retried), told to the user, as the exit code.
fn refusal(run: &str, record: &RunRecord, retry: bool) -> Option<i32> {
    match (record.status, retry) {
        (RunStatus::Succeeded, _) => {
            println!("run {run} already finished: {}", record.status.as_str());
            Some(exit_codes::OK)
        }
        (RunStatus::Superseded, _) => {
            eprintln!(
                "error: run {run} was superseded by a newer run of {}; start a new run instead",
                record.pipeline
            );
            Some(exit_codes::LOCKED_OR_SUPERSEDED)
        }
        (RunStatus::Failed | RunStatus::Rejected, false) => {
            eprintln!(
                "error: run {run} {}; `envelope-runner retry {run}` runs the failed stage again",
                record.status.as_str()
            );
            Some(outcome::status_code(record.status, false))
        }
        (
            RunStatus::Running | RunStatus::Waiting | RunStatus::Queued | RunStatus::Cancelled,
            true,
        ) => {
            eprintln!(
                "error: run {run} has not failed; `envelope-runner resume {run}` continues it"
            );
            Some(exit_codes::INVALID_INPUT)
        }
        _ => None,
    }
}

/// `rollback`: redeploy the images of an earlier successful run (`--to`, default: the one
/// before the newest) as a run of its own.
pub(super) async fn rollback(
    project: &Path,
    name: &str,
    to: Option<String>,
    args: &RunArgs,
    color: bool,
) -> Result<i32, i32> {
    let compiled = load_pipeline(project, name, color)?;
    let store = open_store(project, &args.store).await?;
    let target = rollback_target(store.as_ref(), &compiled, name, to).await?;
    let driver = driver(compiled, store, settings(args), args, None);
    let result = driver.rollback(&target).await;
    Ok(end(&driver, &result, None, args, None).await)
}

/// The run whose images `rollback` deploys again.
async fn rollback_target(
    store: &dyn Store,
    compiled: &CompiledPipeline,
    name: &str,
    to: Option<String>,
) -> Result<RunRecord, i32> {
    if let Some(run) = to {
        return match store.get_run(&RunId(run.clone())).await {
            Ok(Some(record)) if record.pipeline == compiled.name => Ok(record),
            Ok(Some(record)) => {
                eprintln!(
                    "error: run {run} belongs to pipeline `{}`, not `{}`",
                    record.pipeline, compiled.name
                );
                Err(exit_codes::INVALID_INPUT)
            }
            Ok(None) => {
                eprintln!(
                    "error: no run {run} in the store; `envelope-runner history {name}` lists runs"
                );
                Err(exit_codes::INVALID_INPUT)
            }
            Err(error) => Err(store_failed(error)),
        };
    }
    // The newest successful deploy is what runs now; roll back to the one before it.
    let runs = store
        .list_runs(Some(&compiled.name), 200, None)
        .await
        .map_err(store_failed)?;
    let mut successful = Vec::new();
    for summary in runs.iter().filter(|r| r.status == RunStatus::Succeeded) {
        if let Ok(Some(record)) = store.get_run(&summary.id).await
            && record
                .stages
                .iter()
                .any(|s| s.kind == StageKind::Deploy && s.status == StageStatus::Succeeded)
        {
            successful.push(record);
        }
        if successful.len() == 2 {
            break;
        }
    }
    successful.into_iter().nth(1).ok_or_else(|| {
        eprintln!(
            "error: `{name}` has no earlier successful deploy to roll back to; pass --to RUN"
        );
        exit_codes::INVALID_INPUT
    })
}
