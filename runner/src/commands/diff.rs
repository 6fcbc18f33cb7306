//! `diff`: what a deploy of a run's images (or `--image`) would change per service, and the
//! checks that run after it; ECS is only described. Exit codes: 0, or with `--exit-code` 1
//! when a service would change; 6 when a service's diff could not be read; 2 for bad input.

use super::Context;
use super::outcome;
use super::shared::{find_run, load_pipeline_in, open_store, store_failed};
use crate::cli::{OutputFormat, RunArgs, StoreArgs};
use crate::exec::driver::{DiffReport, Driver, pushed_images};
use crate::exit_codes;
use crate::report::{EventSink, PlainReporter};
use crate::run::{RunId, RunRecord};
use crate::store::Store;

/// Runs a diff looks through for the newest one that pushed an image.
const RUNS_SEARCHED: usize = 200;

/// `diff`'s arguments.
pub(super) struct Request {
    pub pipeline: String,
    pub run: Option<String>,
    pub images: Vec<String>,
    pub environment: Option<String>,
    pub exit_on_changes: bool,
    pub region: Option<String>,
    pub output: OutputFormat,
}

pub(super) async fn diff(
    context: &Context,
    request: Request,
    store_args: &StoreArgs,
) -> Result<i32, i32> {
    let compiled = load_pipeline_in(context, &request.pipeline, request.environment.as_deref())?;
    // Runs are kept per environment (`api@prod`); a run of another environment of the same
    // pipeline may be compared too (what promoting it would change).
    let key = compiled.run_key();
    for image in &request.images {
        if !image.contains("@sha256:") {
            eprintln!(
                "error: --image {image}: give the image by digest, `repository@sha256:…` (the \
                 push stage prints it, `status RUN` shows it)"
            );
            return Err(exit_codes::INVALID_INPUT);
        }
    }
    let store = open_store(&context.project, store_args).await?;
    let record = match &request.run {
        Some(run) => Some(find_run(store.as_ref(), &RunId(run.clone())).await?),
        None => newest_pushed(store.as_ref(), &key).await?,
    };
    if let Some(record) = &record
        && crate::pipeline::environment::split_run_key(&record.pipeline).0 != compiled.name
    {
        eprintln!(
            "error: run {} belongs to pipeline `{}`, not `{}`",
            record.id, record.pipeline, compiled.name
        );
        return Err(exit_codes::INVALID_INPUT);
    }
    let images = match (&record, request.images.is_empty()) {
        (_, false) => request.images.clone(),
        (Some(record), true) => pushed_images(record),
        (None, true) => Vec::new(),
    };
    if images.is_empty() {
        match &record {
            Some(record) => eprintln!(
                "error: run {} pushed no image; pick a run that did (`envelope-runner history \
                 {}`) or pass --image REF@DIGEST",
                record.id,
                history_args(&record.pipeline)
            ),
            None => eprintln!(
                "error: no run of `{}` pushed an image yet; run the pipeline first or pass \
                 --image REF@DIGEST",
                key
            ),
        }
        return Err(exit_codes::INVALID_INPUT);
    }
    let settings = super::settings::settings(&RunArgs {
        store: store_args.clone(),
        registry_endpoint: None,
        region: request.region.clone(),
        cache_dir: None,
        log_format: OutputFormat::Text,
        approval_poll: 5.0,
        lease_ttl: 60.0,
    });
    let events = EventSink::new(Box::new(PlainReporter::new(std::io::stderr(), false)));
    let driver = Driver::new(compiled, store, settings, events);
    let report = driver
        .diff(record.as_ref(), &images)
        .await
        .map_err(|error| {
            eprintln!("error: {error}");
            outcome::error_code(&error)
        })?;
    match request.output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        OutputFormat::Text => print!("{}", render_text(&report)),
    }
    Ok(if report.diff.has_unavailable() {
        exit_codes::ENVIRONMENT
    } else if request.exit_on_changes && report.diff.has_changes() {
        exit_codes::CHANGES
    } else {
        exit_codes::OK
    })
}

/// `history`'s arguments for the runs kept under `key` (`api@prod` → `api --env prod`).
fn history_args(key: &str) -> String {
    match crate::pipeline::environment::split_run_key(key) {
        (pipeline, Some(environment)) => format!("{pipeline} --env {environment}"),
        (pipeline, None) => pipeline.to_owned(),
    }
}

/// The newest run of `pipeline` that pushed an image, if any.
async fn newest_pushed(store: &dyn Store, pipeline: &str) -> Result<Option<RunRecord>, i32> {
    let runs = store
        .list_runs(Some(pipeline), RUNS_SEARCHED, None)
        .await
        .map_err(store_failed)?;
    for summary in runs {
        if let Some(record) = store.get_run(&summary.id).await.map_err(store_failed)?
            && !pushed_images(&record).is_empty()
        {
            return Ok(Some(record));
        }
    }
    Ok(None)
}

/// The report for people: what is compared, each service's changes, then the checks.
fn render_text(report: &DiffReport) -> String {
    let mut out = match &report.run {
        Some(run) => format!(
            "pipeline {}: a deploy of run {run}'s images\n",
            report.pipeline
        ),
        None => format!(
            "pipeline {}: a deploy of the given images\n",
            report.pipeline
        ),
    };
    for image in &report.diff.images {
        out.push_str(&format!("  image {image}\n"));
    }
    if report.diff.services.is_empty() {
        out.push_str("The pipeline has no migrate or deploy stage: nothing to compare.\n");
    }
    for line in report.diff.lines() {
        out.push_str(&line);
        out.push('\n');
    }
    if report.checks.is_empty() {
        out.push_str("checks after the deploy: none\n");
    } else {
        out.push_str("checks after the deploy:\n");
        for check in &report.checks {
            out.push_str(&format!("  {check}\n"));
        }
    }
    if !report.diff.has_changes() && !report.diff.has_unavailable() {
        out.push_str("No service would change.\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::ecs::release_diff::{ReleaseDiff, ServiceDiff};
    use crate::exec::ecs::taskdef::{FieldChange, ImageChange, TaskDefinitionDiff};

    #[test]
    fn the_text_names_the_run_each_change_and_the_checks() {
        let arn = |name: &str| format!("arn:aws:ecs:eu-west-1:123456789012:task-definition/{name}");
        let service = |name: &str, diff: TaskDefinitionDiff| ServiceDiff {
            stage: "deploy".into(),
            kind: "deploy",
            cluster: "envelope-prod".into(),
            service: name.into(),
            current: Some(arn(&format!("{name}:7"))),
            diff: Some(diff),
            unavailable: None,
            newer: None,
        };
        let changed = TaskDefinitionDiff {
            family: "api".into(),
            from: arn("api:7"),
            images: vec![ImageChange {
                container: "api".into(),
                before: "r.example/envelope-api@sha256:aaaa".into(),
                after: "r.example/envelope-api@sha256:bbbb".into(),
            }],
            other: vec![FieldChange {
                field: "cpu".into(),
                before: "256".into(),
                after: "512".into(),
            }],
        };
        let report = DiffReport {
            pipeline: "api".into(),
            run: Some("01jd0000000000000000000000".into()),
            diff: ReleaseDiff {
                images: vec!["r.example/envelope-api@sha256:bbbb".into()],
                services: vec![
                    service("api", changed),
                    service("worker", TaskDefinitionDiff::default()),
                ],
            },
            checks: vec![
                "after `deploy`: GET https://api.example/up must answer 200 with a body \
                 containing \"Application up\" (retried every 5s for up to 2m)"
                    .into(),
            ],
        };
        insta::assert_snapshot!(render_text(&report));
        let unchanged = DiffReport {
            diff: ReleaseDiff {
                services: vec![service("worker", TaskDefinitionDiff::default())],
                ..report.diff.clone()
            },
            checks: Vec::new(),
            ..report
        };
        insta::assert_snapshot!(render_text(&unchanged));
    }
}
