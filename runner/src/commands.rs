//! The commands that execute or inspect runs: `run`, `resume`, `approve`, `status`, `history`,
//! `logs`. They open the store, build the driver and map outcomes to exit codes.

use crate::cli::{Command, OutputFormat, RunArgs, StoreArgs};
use crate::exec::driver::{Driver, RunOutcome, RunSettings};
use crate::exit_codes;
use crate::pipeline;
use crate::plan::PlanContext;
use crate::report::{EventSink, JsonReporter, PlainReporter, Reporter, TerminalReporter};
use crate::run::StageKind;
use crate::run::{ApprovalRecord, RunId, RunStatus, RunTrigger, StageStatus, TriggerKind};

use crate::store::{self, Store};
use crate::trigger::actions::ActionsMode;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Run one of the run commands; returns the exit code.
pub(crate) fn dispatch(command: Command, project: &Path, color: bool) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return exit_codes::ENVIRONMENT;
        }
    };
    // Outside `run`/`resume`/`retry` (which fence their own output), Actions mode masks and
    // fences what a command prints.
    let mut fence = match command {
        Command::Status { .. }
        | Command::History { .. }
        | Command::Logs { .. }
        | Command::Approve { .. }
        | Command::Rollback { .. } => ActionsMode::detect(),
        _ => None,
    };
    if let Some(actions) = &mut fence {
        actions.fence();
    }
    let code = runtime.block_on(async move {
        match command {
            Command::Run {
                pipeline,
                git_ref,
                sha,
                until,
                local,
                source,
                registry,
                common,
            } => {
                run(
                    project, &pipeline, git_ref, sha, until, local, source, registry, &common,
                    color,
                )
                .await
            }
            Command::Resume { run, until, common } => {
                resume(project, &run, false, until, &common, color).await
            }
            Command::Rollback {
                pipeline,
                to,
                common,
            } => rollback(project, &pipeline, to, &common, color).await,
            Command::Retry { run, common } => {
                resume(project, &run, true, None, &common, color).await
            }
            Command::Approve {
                run,
                reject,
                comment,
                stage,
                approver,
                store,
            } => approve(project, &run, !reject, comment, stage, approver, &store).await,
            Command::Status { run, output, store } => status(project, run, output, &store).await,
            Command::History {
                pipeline,
                limit,
                output,
                store,
            } => history(project, pipeline, limit, output, &store).await,
            Command::Logs {
                run,
                stage,
                follow,
                output,
                store,
            } => logs(project, &run, stage, follow, output, &store).await,
            _ => exit_codes::INVALID_INPUT,
        }
    });
    if let Some(actions) = &fence {
        actions.resume_commands();
    }
    code
}

/// The person or system running the command.
pub(crate) fn current_user() -> String {
    ["ENVELOPE_USER", "GITHUB_ACTOR", "USER", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

async fn open_store(project: &Path, args: &StoreArgs) -> Result<Arc<dyn Store>, i32> {
    let url = args
        .store
        .clone()
        .unwrap_or_else(|| project.join(".envelope/state.db").display().to_string());
    match store::open(&url).await {
        Ok(store) => Ok(store),
        Err(error) => {
            eprintln!("error: {error}");
            Err(error.exit_code())
        }
    }
}

fn cache_dir(args: &RunArgs) -> PathBuf {
    args.cache_dir.clone().unwrap_or_else(|| {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("envelope-runner")
    })
}

fn reporter(args: &RunArgs) -> Box<dyn Reporter> {
    match args.log_format {
        OutputFormat::Json => Box::new(JsonReporter::new(std::io::stderr())),
        OutputFormat::Text if std::io::stderr().is_terminal() => Box::new(TerminalReporter::new()),
        OutputFormat::Text => Box::new(PlainReporter::new(std::io::stderr(), true)),
    }
}

fn load_pipeline(
    project: &Path,
    name: &str,
    color: bool,
) -> Result<pipeline::CompiledPipeline, i32> {
    let path = pipeline::find(project, name).map_err(|message| {
        eprintln!("error: {message}");
        exit_codes::INVALID_INPUT
    })?;
    pipeline::load(&path).map_err(|diagnostics| {
        eprint!(
            "{}",
            crate::trigger::actions::render_diagnostics(&diagnostics, color)
        );
        exit_codes::INVALID_INPUT
    })
}

fn settings(args: &RunArgs) -> RunSettings {
    RunSettings {
        cache_dir: cache_dir(args),
        until: None,
        local_source: None,
        local_registry: None,
        registry_endpoint: args.registry_endpoint.clone(),
        user: current_user(),
        approval_poll: Duration::from_secs_f64(args.approval_poll.max(0.05)),
        lease_ttl: Duration::from_secs_f64(args.lease_ttl.max(1.0)),
        cancel: cancel_on_signals(),
        region: args.region.clone(),
    }
}

/// A token cancelled by Ctrl-C or SIGTERM, so a run checkpoints its stage and exits 130.
fn cancel_on_signals() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate => {}
        }
        eprintln!(
            "envelope-runner: stopping: checkpointing the current stage (signal again to force)"
        );
        cancel.cancel();
        // A second signal ends the process at once.
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(exit_codes::CANCELLED);
    });
    token
}

#[allow(clippy::too_many_arguments)]
async fn run(
    project: &Path,
    name: &str,
    git_ref: Option<String>,
    sha: Option<String>,
    until: Option<String>,
    local: bool,
    source: Option<PathBuf>,
    registry: Option<String>,
    args: &RunArgs,
    color: bool,
) -> i32 {
    // GitHub Actions: mask secrets before anything could print them.
    let mut actions = ActionsMode::detect();
    if let Some(actions) = &mut actions {
        actions.mask_environment();
    }
    let compiled = match load_pipeline(project, name, color) {
        Ok(compiled) => compiled,
        Err(code) => return code,
    };
    if let Some(actions) = &mut actions {
        actions.mask_pipeline(&compiled);
    }
    if let Some(until) = &until
        && !compiled
            .pipeline
            .stages
            .iter()
            .any(|s| s.name() == until || s.kind().as_str() == until)
        && !["source", "push"].contains(&until.as_str())
    {
        eprintln!("error: --until {until}: the pipeline has no such stage");
        return exit_codes::INVALID_INPUT;
    }
    // A developer runs `--local` from the app's checkout: the working tree is the current folder.
    let local_source = local.then(|| source.unwrap_or_else(|| PathBuf::from(".")));
    // In GitHub Actions the release (or pushed ref) and its commit are the default.
    let from_actions = actions
        .as_ref()
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
            return exit_codes::INVALID_INPUT;
        }
    };
    let store = match open_store(project, &args.store).await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let mut settings = settings(args);
    settings.until = until.clone();
    settings.local_source = local_source;
    settings.local_registry = registry;
    let env = compiled
        .pipeline
        .env
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|value| (name.clone(), value)))
        .collect();
    let user = settings.user.clone();
    let trigger = RunTrigger {
        kind: match &actions {
            _ if local => TriggerKind::Local { user },
            Some(actions) => actions.environment.trigger_kind(),
            None => TriggerKind::Cli { user },
        },
        git_ref: git_ref.clone(),
        sha: sha.clone(),
        tag: from_actions.and_then(|trigger| trigger.tag),
    };
    let context = PlanContext {
        git_ref,
        sha,
        env,
        ..PlanContext::default()
    };
    let reporter = match &actions {
        Some(actions) => actions.start_run(reporter(args), args.log_format == OutputFormat::Text),
        None => reporter(args),
    };
    let driver = Driver::new(compiled, store, settings, EventSink::new(reporter));
    let result = driver.start(trigger, context).await;
    let code = match &result {
        Ok(outcome) => finish(outcome, local),
        Err(error) => {
            let message = driver.events.redactor().redact(&error.to_string());
            eprintln!("error: {message}");
            driver_error_code(error)
        }
    };
    match &actions {
        Some(actions) => {
            let store_url = args.store.store.as_deref();
            actions
                .end_run(&driver, &result, code, until.as_deref(), store_url)
                .await
        }
        None => code,
    }
}

async fn resume(
    project: &Path,
    run: &str,
    retry: bool,
    until: Option<String>,
    args: &RunArgs,
    color: bool,
) -> i32 {
    // GitHub Actions: mask secrets before anything could print them.
    let mut actions = ActionsMode::detect();
    if let Some(actions) = &mut actions {
        actions.mask_environment();
    }
    let store = match open_store(project, &args.store).await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let id = RunId(run.to_owned());
    let record = match find_run(store.as_ref(), &id).await {
        Ok(record) => record,
        Err(code) => return code,
    };
    let refusal = match (record.status, retry) {
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
            Some(outcome_code(record.status, None, false))
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
    };
    if let Some(code) = refusal {
        if let Some(actions) = &actions {
            actions.write_job_files(store.as_ref(), &id, None).await;
        }
        return code;
    }
    let compiled = match load_pipeline(project, &record.pipeline, color) {
        Ok(compiled) => compiled,
        Err(code) => return code,
    };
    if let Some(actions) = &mut actions {
        actions.mask_pipeline(&compiled);
    }
    let local = matches!(record.trigger.kind, TriggerKind::Local { .. });
    if local {
        eprintln!("error: run {run} was a --local run; start a new one with `run --local`");
        return exit_codes::INVALID_INPUT;
    }
    let reporter = match &actions {
        Some(actions) => actions.start_run(reporter(args), args.log_format == OutputFormat::Text),
        None => reporter(args),
    };
    let mut settings = settings(args);
    settings.until = until;
    let driver = Driver::new(compiled, store, settings, EventSink::new(reporter));
    let result = if retry {
        driver.retry(&id).await
    } else {
        driver.resume(&id).await
    };
    let code = match &result {
        Ok(outcome) => finish(outcome, false),
        Err(error) => {
            let message = driver.events.redactor().redact(&error.to_string());
            eprintln!("error: {message}");
            driver_error_code(error)
        }
    };
    match &actions {
        Some(actions) => {
            let store_url = args.store.store.as_deref();
            actions
                .end_run(&driver, &result, code, None, store_url)
                .await
        }
        None => code,
    }
}

async fn rollback(
    project: &Path,
    name: &str,
    to: Option<String>,
    args: &RunArgs,
    color: bool,
) -> i32 {
    let compiled = match load_pipeline(project, name, color) {
        Ok(compiled) => compiled,
        Err(code) => return code,
    };
    let store = match open_store(project, &args.store).await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let target = match to {
        Some(run) => match store.get_run(&RunId(run.clone())).await {
            Ok(Some(record)) if record.pipeline == compiled.name => record,
            Ok(Some(record)) => {
                eprintln!(
                    "error: run {run} belongs to pipeline `{}`, not `{}`",
                    record.pipeline, compiled.name
                );
                return exit_codes::INVALID_INPUT;
            }
            Ok(None) => {
                eprintln!(
                    "error: no run {run} in the store; `envelope-runner history {name}` lists runs"
                );
                return exit_codes::INVALID_INPUT;
            }
            Err(error) => {
                eprintln!("error: {error}");
                return error.exit_code();
            }
        },
        None => {
            // The newest successful deploy is what runs now; roll back to the one before it.
            let runs = match store.list_runs(Some(&compiled.name), 200, None).await {
                Ok(runs) => runs,
                Err(error) => {
                    eprintln!("error: {error}");
                    return error.exit_code();
                }
            };
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
            match successful.into_iter().nth(1) {
                Some(record) => record,
                None => {
                    eprintln!(
                        "error: `{name}` has no earlier successful deploy to roll back to; pass --to RUN"
                    );
                    return exit_codes::INVALID_INPUT;
                }
            }
        }
    };
    let driver = Driver::new(
        compiled,
        store,
        settings(args),
        EventSink::new(reporter(args)),
    );
    match driver.rollback(&target).await {
        Ok(outcome) => finish(&outcome, false),
        Err(error) => {
            let message = driver.events.redactor().redact(&error.to_string());
            eprintln!("error: {message}");
            driver_error_code(&error)
        }
    }
}

/// A run from the store, or the exit code after telling the user why there is none.
async fn find_run(store: &dyn Store, id: &RunId) -> Result<crate::run::RunRecord, i32> {
    match store.get_run(id).await {
        Ok(Some(record)) => Ok(record),
        Ok(None) => {
            eprintln!("error: no run {id} in the store; `envelope-runner history` lists runs");
            Err(exit_codes::INVALID_INPUT)
        }
        Err(error) => {
            eprintln!("error: {error}");
            Err(error.exit_code())
        }
    }
}

fn driver_error_code(error: &crate::exec::driver::DriverError) -> i32 {
    use crate::exec::driver::DriverError;
    match error {
        DriverError::Plan(_)
        | DriverError::UnknownRun(_)
        | DriverError::WrongPipeline { .. }
        | DriverError::NothingToRollBackTo(_) => exit_codes::INVALID_INPUT,
        DriverError::Store(error) => error.exit_code(),
        DriverError::AwsTarget(error) if error.is_environment() => exit_codes::ENVIRONMENT,
        DriverError::AwsTarget(_) => exit_codes::INVALID_INPUT,
    }
}

fn finish(outcome: &RunOutcome, local: bool) -> i32 {
    let mut stdout = std::io::stdout().lock();
    let _ = match (&outcome.status, &outcome.stage) {
        (RunStatus::Waiting, Some(stage)) => writeln!(
            stdout,
            "run {} is waiting at `{stage}`: approve with `envelope-runner approve {}`, then `envelope-runner resume {}`",
            outcome.run, outcome.run, outcome.run
        ),
        (RunStatus::Waiting, None) => writeln!(
            stdout,
            "run {} stopped as asked; continue with `envelope-runner resume {}`",
            outcome.run, outcome.run
        ),
        (status, _) => writeln!(stdout, "run {} {}", outcome.run, status.as_str()),
    };
    if let Some(error) = &outcome.error {
        let _ = writeln!(
            std::io::stderr(),
            "error: stage `{}` failed: {error}",
            outcome.stage.as_deref().unwrap_or("?")
        );
    }
    if outcome.lock_lost {
        return exit_codes::LOCKED_OR_SUPERSEDED;
    }
    if outcome.environment && outcome.status == RunStatus::Failed {
        return exit_codes::ENVIRONMENT;
    }
    outcome_code(outcome.status, outcome.stage.as_deref(), local)
}

fn outcome_code(status: RunStatus, waiting_stage: Option<&str>, _local: bool) -> i32 {
    match status {
        RunStatus::Succeeded => exit_codes::OK,
        RunStatus::Waiting if waiting_stage.is_some() => exit_codes::WAITING,
        RunStatus::Waiting | RunStatus::Queued | RunStatus::Running => exit_codes::OK,
        RunStatus::Failed => exit_codes::STAGE_FAILED,
        RunStatus::Rejected => exit_codes::APPROVAL_DENIED,
        RunStatus::Cancelled => exit_codes::CANCELLED,
        RunStatus::Superseded => exit_codes::LOCKED_OR_SUPERSEDED,
    }
}

async fn approve(
    project: &Path,
    run: &str,
    approved: bool,
    comment: Option<String>,
    stage: Option<String>,
    approver: Option<String>,
    args: &StoreArgs,
) -> i32 {
    let store = match open_store(project, args).await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let id = RunId(run.to_owned());
    let record = match find_run(store.as_ref(), &id).await {
        Ok(record) => record,
        Err(code) => return code,
    };
    let gates: Vec<_> = record
        .stages
        .iter()
        .filter(|s| s.kind == StageKind::Approval)
        .collect();
    let gate = match (&stage, gates.as_slice()) {
        (Some(name), _) => gates.iter().find(|s| &s.name == name).copied(),
        (None, [only]) => Some(*only),
        (None, _) => gates
            .iter()
            .find(|s| s.status == StageStatus::Waiting)
            .copied(),
    };
    let Some(gate) = gate else {
        eprintln!(
            "error: run {run} has no approval stage{}",
            stage.map(|s| format!(" named `{s}`")).unwrap_or_default()
        );
        return exit_codes::INVALID_INPUT;
    };
    // Only a gate the run is waiting at can be decided: not one it has not reached (an
    // approval given in advance would let a later, different build through), not one already
    // passed, and not one of a run that ended. A run cancelled while it waited at the gate
    // still waits there: `resume` takes it back to the gate.
    let waiting = match (gate.status, record.status) {
        (StageStatus::Waiting, RunStatus::Waiting | RunStatus::Running) => true,
        (StageStatus::Cancelled, RunStatus::Cancelled) => true,
        _ => false,
    };
    if !waiting {
        let why = match gate.status {
            StageStatus::Pending => "the run has not reached it yet".to_owned(),
            StageStatus::Waiting => format!("the run is {}", record.status.as_str()),
            other => format!("it is already {}", other.as_str()),
        };
        eprintln!(
            "error: the approval `{}` of run {run} is not waiting for a decision ({why}); `envelope-runner status {run}` shows where the run is",
            gate.name
        );
        return exit_codes::INVALID_INPUT;
    }
    let decision = ApprovalRecord {
        approved,
        by: approver.unwrap_or_else(current_user),
        at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        comment,
    };
    match store.decide_approval(&id, &gate.name, &decision).await {
        Ok(store::ApprovalOutcome::Recorded) => {
            println!(
                "{} run {run} at `{}` as {}",
                if approved { "approved" } else { "rejected" },
                gate.name,
                decision.by
            );
            exit_codes::OK
        }
        Ok(store::ApprovalOutcome::AlreadyDecided(existing)) => {
            eprintln!(
                "error: run {run} was already {} by {} at {}",
                if existing.approved {
                    "approved"
                } else {
                    "rejected"
                },
                existing.by,
                existing.at
            );
            exit_codes::INVALID_INPUT
        }
        Err(error) => {
            eprintln!("error: {error}");
            error.exit_code()
        }
    }
}

async fn status(
    project: &Path,
    run: Option<String>,
    output: OutputFormat,
    args: &StoreArgs,
) -> i32 {
    let store = match open_store(project, args).await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let id = match run {
        Some(run) => RunId(run),
        None => match store.list_runs(None, 1, None).await {
            Ok(runs) if !runs.is_empty() => runs[0].id.clone(),
            Ok(_) => {
                eprintln!("no runs yet");
                return exit_codes::OK;
            }
            Err(error) => {
                eprintln!("error: {error}");
                return error.exit_code();
            }
        },
    };
    let record = match find_run(store.as_ref(), &id).await {
        Ok(record) => record,
        Err(code) => return code,
    };
    let mut stdout = std::io::stdout().lock();
    if output == OutputFormat::Json {
        let _ = writeln!(
            stdout,
            "{}",
            serde_json::to_string_pretty(&record).unwrap_or_default()
        );
        return exit_codes::OK;
    }
    let _ = writeln!(
        stdout,
        "run {}  pipeline {}  {}  ref {}{}",
        record.id,
        record.pipeline,
        record.status.as_str(),
        record.trigger.git_ref,
        record
            .context
            .get("sha")
            .map(|sha| format!("  sha {sha}"))
            .unwrap_or_default()
    );
    for stage in &record.stages {
        let _ = writeln!(
            stdout,
            "  {:<12} {:<10} {}",
            stage.name,
            format!("{:?}", stage.status).to_lowercase(),
            stage.error.as_deref().unwrap_or("")
        );
        let outputs = serde_json::to_value(&stage.outputs).unwrap_or_default();
        if let Some(map) = outputs.as_object() {
            for (key, value) in map {
                let _ = writeln!(
                    stdout,
                    "  {:<12}   {key}: {}",
                    "",
                    value
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| value.to_string())
                );
            }
        }
    }
    exit_codes::OK
}

async fn history(
    project: &Path,
    pipeline: Option<String>,
    limit: usize,
    output: OutputFormat,
    args: &StoreArgs,
) -> i32 {
    let store = match open_store(project, args).await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let runs = match store.list_runs(pipeline.as_deref(), limit, None).await {
        Ok(runs) => runs,
        Err(error) => {
            eprintln!("error: {error}");
            return error.exit_code();
        }
    };
    let mut stdout = std::io::stdout().lock();
    if output == OutputFormat::Json {
        let _ = writeln!(
            stdout,
            "{}",
            serde_json::to_string_pretty(&runs).unwrap_or_default()
        );
        return exit_codes::OK;
    }
    for run in runs {
        let _ = writeln!(
            stdout,
            "{}  {:<10} {:<10} {:<12} {}",
            run.id,
            run.pipeline,
            run.status.as_str(),
            run.git_ref,
            run.created_at
        );
    }
    exit_codes::OK
}

async fn logs(
    project: &Path,
    run: &str,
    stage: Option<String>,
    follow: bool,
    output: OutputFormat,
    args: &StoreArgs,
) -> i32 {
    let store = match open_store(project, args).await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let id = RunId(run.to_owned());
    let mut after = None;
    loop {
        let events = match store.events(&id, after, 1000).await {
            Ok(events) => events,
            Err(error) => {
                eprintln!("error: {error}");
                return error.exit_code();
            }
        };
        let mut finished = false;
        for (seq, json) in &events {
            after = Some(*seq);
            let Ok(event) = serde_json::from_str::<serde_json::Value>(json) else {
                continue;
            };
            if event["event"] == "run_finished" {
                finished = true;
            }
            if let Some(stage) = &stage
                && event.get("stage").and_then(|s| s.as_str()) != Some(stage.as_str())
            {
                continue;
            }
            match output {
                OutputFormat::Json => println!("{json}"),
                OutputFormat::Text => {
                    if let Ok(typed) = serde_json::from_value::<crate::event::Event>(event.clone())
                        && let Some(text) = crate::report::describe(&typed)
                    {
                        println!("{text}");
                    }
                }
            }
        }
        if !follow || finished {
            return exit_codes::OK;
        }
        if events.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
