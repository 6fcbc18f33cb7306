//! The commands that take a run through its stages: `run` (start one), `resume` and `retry`
//! (continue a stored one) and `rollback` (redeploy an earlier run's images as a new run).
//! Each is a few steps: read what the run needs from the arguments (and the GitHub Actions job),
//! open the store, drive the run, then [`report`] how it ended and give the exit code.
//! `Err(code)`: the command stopped early, having said why.

use super::Context;
use super::actions::Job;
use super::local;
use super::outcome;
use super::settings::{reporter, settings};
use super::shared::{find_run, load_pipeline_in, load_run_pipeline, open_store, store_failed};
use crate::cli::{OutputFormat, RunArgs, RunCommand};
use crate::exec::driver::{Driver, DriverError, RunOutcome, RunSettings};
use crate::exit_codes;
use crate::pipeline::CompiledPipeline;
use crate::plan::PlanContext;
use crate::redact;
use crate::report::EventSink;
use crate::run::{RunId, RunRecord, RunStatus, RunTrigger, StageKind, StageStatus, TriggerKind};
use crate::secret::Secret;
use crate::store::Store;
use crate::trigger::actions::{ActionsEnvironment, ActionsSession, RunEnd, StoredRun};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The ref a run builds, its commit and (for a release) its tag.
struct Revision {
    git_ref: String,
    sha: Option<String>,
    tag: Option<String>,
}

/// What a new run is, from the command line and the GitHub Actions job: the pipeline, the
/// revision to build, the values of its declared `env:` variables and (`--local --secret`)
/// build secrets given on the command line.
struct NewRun {
    compiled: CompiledPipeline,
    revision: Revision,
    env: BTreeMap<String, String>,
    build_secrets: BTreeMap<String, Secret>,
}

/// `run`: start a run of a pipeline.
pub(super) async fn run(context: &Context, request: RunCommand) -> Result<i32, i32> {
    let mut session = context.job.as_ref().map(Job::session);
    let new_run = new_run(context, &request, session.as_mut())?;
    let store = open_store(&context.project, &request.common.store).await?;
    let (driver, result) = start(new_run, store, &request, session.as_ref()).await;
    Ok(report(
        &driver,
        &result,
        session.as_ref(),
        &request.common,
        request.until.as_deref(),
    )
    .await)
}

/// Read the new run from the arguments: the pipeline, `--secret` values (both masked in a
/// job), `--until` checked, `--env-file` variables and the revision to build.
fn new_run(
    context: &Context,
    request: &RunCommand,
    session: Option<&mut ActionsSession>,
) -> Result<NewRun, i32> {
    let compiled = load_pipeline_in(context, &request.pipeline, request.environment.as_deref())?;
    let refused = |error: String| {
        eprintln!("error: {error}");
        exit_codes::INVALID_INPUT
    };
    let build_secrets = local::secrets(&request.secrets, &compiled).map_err(refused)?;
    if let Some(session) = session {
        let mut masked = redact::pipeline_secrets(&compiled);
        masked.extend(build_secrets.values().map(|s| s.expose().to_owned()));
        session.mask(&masked);
    }
    check_until(&compiled, request.until.as_deref())?;
    let env = local::env(&request.env_files, &compiled).map_err(refused)?;
    let revision = revision(
        &compiled,
        context.job.as_ref().map(|job| &job.environment),
        request.git_ref.clone(),
        request.sha.clone(),
        request.local,
    )?;
    Ok(NewRun {
        compiled,
        revision,
        env,
        build_secrets,
    })
}

/// Drive a new run: its settings (which also stop it on a signal from here on), its trigger and
/// plan context, and the driver that starts it.
async fn start(
    new_run: NewRun,
    store: Arc<dyn Store>,
    request: &RunCommand,
    session: Option<&ActionsSession>,
) -> (Driver, Result<RunOutcome, DriverError>) {
    let NewRun {
        compiled,
        revision,
        env,
        build_secrets,
    } = new_run;
    let mut settings = run_settings(request);
    settings.build_secrets = build_secrets;
    let environment = session.map(ActionsSession::environment);
    let (trigger, context) = trigger(revision, env, &settings, environment);
    let driver = driver(compiled, store, settings, &request.common, session);
    let result = driver.start(trigger, context).await;
    (driver, result)
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
    revision: Revision,
    env: BTreeMap<String, String>,
    settings: &RunSettings,
    actions: Option<&ActionsEnvironment>,
) -> (RunTrigger, PlanContext) {
    let user = settings.user.clone();
    let trigger = RunTrigger {
        kind: match actions {
            _ if settings.is_local() => TriggerKind::Local { user },
            Some(environment) => environment.trigger_kind(),
            None => TriggerKind::Cli { user },
        },
        git_ref: revision.git_ref.clone(),
        sha: revision.sha.clone(),
        tag: revision.tag,
    };
    let context = PlanContext {
        git_ref: revision.git_ref,
        sha: revision.sha,
        env,
        // Read here, not by plan (which stays pure); used only when the ref is no release.
        local_tag: settings.local_source.as_deref().map(local::stand_in_tag),
        ..PlanContext::default()
    };
    (trigger, context)
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
    actions: Option<&ActionsEnvironment>,
    git_ref: Option<String>,
    sha: Option<String>,
    local: bool,
) -> Result<Revision, i32> {
    let from_actions = actions
        .filter(|_| git_ref.is_none() && !local)
        .and_then(|environment| environment.trigger());
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

/// The driver for one run command. In a GitHub Actions job its events go to the session's
/// reporter (with text logs), and workflow commands stop until [`report`].
pub(super) fn driver(
    compiled: CompiledPipeline,
    store: Arc<dyn Store>,
    mut settings: RunSettings,
    args: &RunArgs,
    session: Option<&ActionsSession>,
) -> Driver {
    // In a GitHub Actions job the run's page (for its notification) is the workflow run's.
    if let Some(session) = session {
        settings.run_link = session.environment().run_url();
    }
    let reporter = match session {
        Some(session) => {
            session.run_reporter(reporter(args), args.log_format == OutputFormat::Text)
        }
        None => reporter(args),
    };
    Driver::new(compiled, store, settings, EventSink::new(reporter))
}

/// Report how the run ended: the outcome for people, then in a GitHub Actions job the
/// session's end (annotations, job files, from the run as the store has it now). Gives the exit
/// code; `until`: the `--until` a run in a job was given.
pub(super) async fn report(
    driver: &Driver,
    result: &Result<RunOutcome, DriverError>,
    session: Option<&ActionsSession>,
    args: &RunArgs,
    until: Option<&str>,
) -> i32 {
    outcome::report(driver.events.redactor(), result);
    let Some(session) = session else {
        return outcome::exit_code(result, None, &driver.compiled);
    };
    let stored = match result {
        Ok(outcome) => Some(StoredRun::read(driver.store.as_ref(), &outcome.run).await),
        Err(_) => None,
    };
    let shared_store = args
        .store
        .store
        .as_deref()
        .is_some_and(|url| url.starts_with("dynamodb://"));
    session.end_run(
        result,
        RunEnd {
            pipeline_file: &driver.compiled.file.path,
            repository: &driver.compiled.pipeline.source.repository,
            stored,
            shared_store,
        },
    );
    outcome::exit_code(result, until, &driver.compiled)
}

/// `resume` (continue a run from its first unfinished stage) and, with `retry`, `retry` (run
/// a failed run's failed stage again).
pub(super) async fn resume(
    context: &Context,
    run: &str,
    retry: bool,
    until: Option<String>,
    args: &RunArgs,
) -> Result<i32, i32> {
    let mut session = context.job.as_ref().map(Job::session);
    let store = open_store(&context.project, &args.store).await?;
    let id = RunId(run.to_owned());
    let record = find_run(store.as_ref(), &id).await?;
    if let Some(code) = refusal(run, &record, retry) {
        if let Some(session) = &session {
            let stored = StoredRun::read(store.as_ref(), &id).await;
            session.write_job_files(&id, stored, None);
        }
        return Ok(code);
    }
    let compiled = load_run_pipeline(context, &record)?;
    if let Some(session) = &mut session {
        session.mask(&redact::pipeline_secrets(&compiled));
    }
    if matches!(record.trigger.kind, TriggerKind::Local { .. }) {
        eprintln!("error: run {run} was a --local run; start a new one with `run --local`");
        return Err(exit_codes::INVALID_INPUT);
    }
    let mut settings = settings(args);
    settings.until.clone_from(&until);
    let driver = driver(compiled, store, settings, args, session.as_ref());
    let result = if retry {
        driver.retry(&id).await
    } else {
        driver.resume(&id).await
    };
    // As for `run`: in a job, a run that waits at the gate `--until` named exits 0.
    Ok(report(&driver, &result, session.as_ref(), args, until.as_deref()).await)
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
    context: &Context,
    name: &str,
    environment: Option<&str>,
    to: Option<String>,
    args: &RunArgs,
) -> Result<i32, i32> {
    let compiled = load_pipeline_in(context, name, environment)?;
    let store = open_store(&context.project, &args.store).await?;
    let target = rollback_target(store.as_ref(), &compiled, name, to).await?;
    let driver = driver(compiled, store, settings(args), args, None);
    let result = driver.rollback(&target).await;
    Ok(report(&driver, &result, None, args, None).await)
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
            Ok(Some(record)) if record.pipeline == compiled.run_key() => Ok(record),
            Ok(Some(record)) => {
                eprintln!(
                    "error: run {run} belongs to pipeline `{}`, not `{}`",
                    record.pipeline,
                    compiled.run_key()
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
        .list_runs(Some(&compiled.run_key()), 200, None)
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
