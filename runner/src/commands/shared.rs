//! What several commands share: opening the run store, loading a pipeline by name (in an
//! environment, or the one a stored run ran in), reading a run from the store, printing pipeline diagnostics, and who is running the command. Each
//! reports its own errors; an `Err` carries the exit code.

use super::Context;
use crate::cli::StoreArgs;
use crate::exit_codes;
use crate::pipeline::{self, diagnostic::Diagnostics};
use crate::run::{RunId, RunRecord};
use crate::store::{self, Store, StoreError};
use crate::trigger::actions::{DiagnosticFormat, render_diagnostics};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// The person or system running the command.
pub(super) fn current_user() -> String {
    ["ENVELOPE_USER", "GITHUB_ACTOR", "USER", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

pub(super) async fn open_store(project: &Path, args: &StoreArgs) -> Result<Arc<dyn Store>, i32> {
    store::open(&store_url(project, args))
        .await
        .map_err(store_failed)
}

/// `--store`, else the project's SQLite file.
pub(super) fn store_url(project: &Path, args: &StoreArgs) -> String {
    args.store
        .clone()
        .unwrap_or_else(|| project.join(".envelope/state.db").display().to_string())
}

/// The pipeline `name` (or file) of the project, compiled; its diagnostics printed otherwise.
pub(super) fn load_pipeline(
    context: &Context,
    name: &str,
) -> Result<pipeline::CompiledPipeline, i32> {
    let path = pipeline::find(&context.project, name).map_err(|message| {
        eprintln!("error: {message}");
        exit_codes::INVALID_INPUT
    })?;
    pipeline::load(&path).map_err(|diagnostics| {
        eprint!(
            "{}",
            render_diagnostics(&diagnostics, &context.diagnostics())
        );
        exit_codes::INVALID_INPUT
    })
}

/// The pipeline `name` as it runs in `environment` (`None`: as written), compiled; why not
/// printed otherwise.
pub(super) fn load_pipeline_in(
    context: &Context,
    name: &str,
    environment: Option<&str>,
) -> Result<pipeline::CompiledPipeline, i32> {
    load_pipeline(context, name)?
        .in_environment(environment)
        .map_err(|error| {
            eprintln!("error: {error}");
            exit_codes::INVALID_INPUT
        })
}

/// The pipeline a stored run belongs to, in the environment it ran in: its record's key is
/// `PIPELINE` or `PIPELINE@ENVIRONMENT` (see `pipeline::environment`).
pub(super) fn load_run_pipeline(
    context: &Context,
    record: &RunRecord,
) -> Result<pipeline::CompiledPipeline, i32> {
    let (name, environment) = pipeline::environment::split_run_key(&record.pipeline);
    load_pipeline_in(context, name, environment)
}

/// A run from the store, or the exit code after telling the user why there is none.
pub(super) async fn find_run(store: &dyn Store, id: &RunId) -> Result<RunRecord, i32> {
    match store.get_run(id).await {
        Ok(Some(record)) => Ok(record),
        Ok(None) => {
            eprintln!("error: no run {id} in the store; `envelope-runner history` lists runs");
            Err(exit_codes::INVALID_INPUT)
        }
        Err(error) => Err(store_failed(error)),
    }
}

/// Tell the user what went wrong with the store; the exit code for it.
pub(super) fn store_failed(error: StoreError) -> i32 {
    eprintln!("error: {error}");
    error.exit_code()
}

/// Print pipeline diagnostics to `stderr` in `format`.
pub(super) fn report_diagnostics(
    diagnostics: &Diagnostics,
    format: &DiagnosticFormat,
    stderr: &mut dyn Write,
) {
    let _ = write!(stderr, "{}", render_diagnostics(diagnostics, format));
}
