//! The read-only commands: `status` (one run, its stages and outputs), `history` (recent runs)
//! and `logs` (a run's event log, optionally followed until the run finishes).

use super::shared::{find_run, open_store, store_failed};
use crate::cli::{OutputFormat, StoreArgs};
use crate::exit_codes;
use crate::run::RunId;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// `status`: one run (default: the newest), its stages, outputs and errors.
pub(super) async fn status(
    project: &Path,
    run: Option<String>,
    output: OutputFormat,
    args: &StoreArgs,
) -> Result<i32, i32> {
    let store = open_store(project, args).await?;
    let id = match run {
        Some(run) => RunId(run),
        None => match store.list_runs(None, 1, None).await {
            Ok(runs) if !runs.is_empty() => runs[0].id.clone(),
            Ok(_) => {
                eprintln!("no runs yet");
                return Ok(exit_codes::OK);
            }
            Err(error) => return Err(store_failed(error)),
        },
    };
    let record = find_run(store.as_ref(), &id).await?;
    let mut stdout = std::io::stdout().lock();
    if output == OutputFormat::Json {
        return Ok(print_json(&mut stdout, &record));
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
    Ok(exit_codes::OK)
}

/// `history`: recent runs of a pipeline (or of all), newest first.
pub(super) async fn history(
    project: &Path,
    pipeline: Option<String>,
    limit: usize,
    output: OutputFormat,
    args: &StoreArgs,
) -> Result<i32, i32> {
    let store = open_store(project, args).await?;
    let runs = store
        .list_runs(pipeline.as_deref(), limit, None)
        .await
        .map_err(store_failed)?;
    let mut stdout = std::io::stdout().lock();
    if output == OutputFormat::Json {
        return Ok(print_json(&mut stdout, &runs));
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
    Ok(exit_codes::OK)
}

/// `logs`: a run's event log, one stage's or all; with `follow`, until the run finishes.
pub(super) async fn logs(
    project: &Path,
    run: &str,
    stage: Option<String>,
    follow: bool,
    output: OutputFormat,
    args: &StoreArgs,
) -> Result<i32, i32> {
    let store = open_store(project, args).await?;
    let id = RunId(run.to_owned());
    let mut after = None;
    loop {
        let events = store.events(&id, after, 1000).await.map_err(store_failed)?;
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
            return Ok(exit_codes::OK);
        }
        if events.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Print `value` as pretty JSON.
fn print_json(stdout: &mut dyn Write, value: &impl serde::Serialize) -> i32 {
    let _ = writeln!(
        stdout,
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
    exit_codes::OK
}
