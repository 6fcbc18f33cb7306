//! The read-only commands: `status` (one run, its stages and outputs), `history` (recent runs)
//! and `logs` (a run's event log, optionally followed until the run finishes).

use super::shared::{find_run, open_store, store_failed};
use crate::cli::{OutputFormat, StoreArgs};
use crate::exit_codes;
use crate::run::{RunId, RunRecord};
use crate::store::RunSummary;
use std::io::{self, Write};
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
    Ok(print(output, &record, write_run))
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
    Ok(print(output, runs.as_slice(), write_history))
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

/// Prints `value` as pretty JSON, or as the text `write_text` makes of it. A failed write
/// (stdout closed early, as by `| head`) ends the output quietly: there is no one to tell.
fn print<T: serde::Serialize + ?Sized>(
    output: OutputFormat,
    value: &T,
    write_text: fn(&mut dyn Write, &T) -> io::Result<()>,
) -> i32 {
    let mut stdout = io::stdout().lock();
    let _ = match output {
        OutputFormat::Json => writeln!(
            stdout,
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        ),
        OutputFormat::Text => write_text(&mut stdout, value),
    };
    exit_codes::OK
}

/// `status` as text: the run, then each stage with its status, its error and its outputs.
fn write_run(out: &mut dyn Write, record: &RunRecord) -> io::Result<()> {
    let sha = record
        .context
        .get("sha")
        .map(|sha| format!("  sha {sha}"))
        .unwrap_or_default();
    let pipeline = match crate::pipeline::environment::split_run_key(&record.pipeline) {
        (name, Some(environment)) => format!("{name}  environment {environment}"),
        (name, None) => name.to_owned(),
    };
    writeln!(
        out,
        "run {}  pipeline {pipeline}  {}  ref {}{sha}",
        record.id,
        record.status.as_str(),
        record.trigger.git_ref
    )?;
    for stage in &record.stages {
        writeln!(
            out,
            "  {:<12} {:<10} {}",
            stage.name,
            stage.status.as_str(),
            stage.error.as_deref().unwrap_or("")
        )?;
        let outputs = serde_json::to_value(&stage.outputs).unwrap_or_default();
        for (key, value) in outputs.as_object().into_iter().flatten() {
            let value = value
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            writeln!(out, "  {:<12}   {key}: {value}", "")?;
        }
    }
    Ok(())
}

/// `history` as text: a line per run.
fn write_history(out: &mut dyn Write, runs: &[RunSummary]) -> io::Result<()> {
    for run in runs {
        let RunSummary {
            id,
            pipeline,
            git_ref,
            created_at,
            ..
        } = run;
        let status = run.status.as_str();
        writeln!(
            out,
            "{id}  {pipeline:<10} {status:<10} {git_ref:<12} {created_at}"
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{RunStatus, StageKind, StageStatus, sample};

    fn text(write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        write(&mut out).expect("writing to a Vec cannot fail");
        String::from_utf8(out).expect("the text is UTF-8")
    }

    #[test]
    fn status_shows_the_run_then_each_stage_with_its_error_and_outputs() {
        let mut source = sample::stage("source", StageKind::Source, StageStatus::Succeeded);
        source.outputs.sha = Some("0123456".into());
        let mut build = sample::stage("build", StageKind::Build, StageStatus::Failed);
        build.error = Some("the Dockerfile failed at step 3".into());
        let mut run = sample::run(RunStatus::Failed, vec![source, build]);
        run.context.insert("sha".into(), "0123456".into());

        assert_eq!(
            text(|out| write_run(out, &run)),
            "run 01jd0000000000000000000000  pipeline api  failed  ref v1.2.3  sha 0123456\n\
             \x20 source       succeeded  \n\
             \x20                sha: 0123456\n\
             \x20 build        failed     the Dockerfile failed at step 3\n"
        );
    }

    #[test]
    fn status_names_the_environment_a_run_ran_in() {
        let mut run = sample::run(RunStatus::Succeeded, Vec::new());
        run.pipeline = "api@staging".into();
        assert_eq!(
            text(|out| write_run(out, &run)),
            "run 01jd0000000000000000000000  pipeline api  environment staging  succeeded  ref v1.2.3\n"
        );
    }

    #[test]
    fn history_shows_a_line_per_run() {
        let run = sample::run(RunStatus::Succeeded, Vec::new());
        let summary = RunSummary {
            id: run.id,
            pipeline: run.pipeline,
            status: run.status,
            git_ref: run.trigger.git_ref,
            sha: None,
            tag: None,
            created_at: run.created_at,
            finished_at: None,
            current_stage: None,
        };
        assert_eq!(
            text(|out| write_history(out, &[summary])),
            "01jd0000000000000000000000  api        succeeded  v1.2.3       2026-11-26T09:00:00Z\n"
        );
    }
}
