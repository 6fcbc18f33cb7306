//! The run page: a run's stages, its approval gates and their decisions, what the open gate
//! would migrate and deploy, and the newest lines of its log.

use std::sync::Arc;

use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::SecondsFormat;
use envelope_runner::event::Event;
use envelope_runner::exec::driver::approval_deadline;
use envelope_runner::pipeline::model::Stage;
use envelope_runner::report::describe;
use envelope_runner::run::{RunId, RunStatus, StageKind, StageStatus};
use serde::Deserialize;

use super::pages::{self, DeployView, MigrationView, RunView};
use super::{App, SignedIn, store_error};
use crate::scheduler::load_pipeline;

/// Log lines a run page shows (the newest).
const LOG_LINES: usize = 500;

#[derive(Debug, Deserialize)]
pub(super) struct RunQuery {
    notice: Option<String>,
}

pub(super) async fn run_page(
    State(app): State<Arc<App>>,
    Extension(signed): Extension<SignedIn>,
    Path(id): Path<String>,
    Query(query): Query<RunQuery>,
) -> Response {
    let id = RunId(id);
    let record = match app.store.get_run(&id).await {
        Ok(Some(record)) => record,
        Ok(None) => {
            return (
                StatusCode::NOT_FOUND,
                Html(pages::message(
                    Some(&signed.viewer()),
                    "No such run",
                    &format!("There is no run {id} in the store."),
                    "/",
                )),
            )
                .into_response();
        }
        Err(error) => return store_error(&signed, &error),
    };
    let mut decisions = Vec::new();
    for stage in record
        .stages
        .iter()
        .filter(|stage| stage.kind == StageKind::Approval)
    {
        let decision = match app.store.approval(&id, &stage.name).await {
            Ok(decision) => decision,
            Err(error) => return store_error(&signed, &error),
        };
        decisions.push((stage.name.clone(), decision));
    }
    let open_gate = record
        .stages
        .iter()
        .find(|stage| {
            stage.kind == StageKind::Approval
                && stage.status == StageStatus::Waiting
                && decisions
                    .iter()
                    .any(|(name, decision)| name == &stage.name && decision.is_none())
        })
        .map(|stage| stage.name.clone());
    let compiled = load_pipeline(&app.project, &record.pipeline).ok();
    let mut migrations = Vec::new();
    let mut deploys = Vec::new();
    let mut gate_deadline = None;
    if let Some(compiled) = &compiled {
        for stage in &compiled.pipeline.stages {
            match stage {
                Stage::Migrate(migrate) => migrations.push(MigrationView {
                    stage: stage.name().to_owned(),
                    cluster: migrate.cluster.clone(),
                    service: migrate.service.clone(),
                    container: migrate.container.clone(),
                    command: migrate.command.clone(),
                }),
                Stage::Deploy(deploy) => deploys.push(DeployView {
                    stage: stage.name().to_owned(),
                    cluster: deploy.cluster.clone(),
                    services: deploy.services.clone(),
                }),
                Stage::Approval(_) if Some(stage.name()) == open_gate.as_deref() => {
                    gate_deadline = approval_deadline(Some(compiled), &record, stage.name())
                        .map(|deadline| deadline.to_rfc3339_opts(SecondsFormat::Secs, true));
                }
                _ => {}
            }
        }
    }
    let events = match app.store.events(&id, None, usize::MAX).await {
        Ok(events) => events,
        Err(error) => return store_error(&signed, &error),
    };
    let mut log = Vec::new();
    let mut recorded_for_gate = Vec::new();
    for (_, json) in &events {
        let Ok(event) = serde_json::from_str::<Event>(json) else {
            continue;
        };
        if let Some(gate) = &open_gate {
            match &event {
                Event::Output { stage, key, value } if stage == gate => {
                    recorded_for_gate.push(format!("{key}: {value}"))
                }
                Event::Log { stage, line } if stage == gate => recorded_for_gate.push(line.clone()),
                _ => {}
            }
        }
        if let Some(line) = describe(&event) {
            log.push(line);
        }
    }
    let log_hidden = log.len().saturating_sub(LOG_LINES);
    log.drain(..log_hidden);
    let notice = match query.notice.as_deref() {
        Some("approved")
            if matches!(
                record.status,
                RunStatus::Queued | RunStatus::Running | RunStatus::Waiting
            ) =>
        {
            Some("Approved. The run goes on in a moment.")
        }
        Some("approved") => Some("Approved."),
        Some("rejected") => Some("Rejected. Nothing after the gate runs."),
        Some("already") => Some("Someone decided first; their decision is below."),
        _ => None,
    };
    let cannot_approve = app
        .rules
        .check(&signed.name, &record, true)
        .err()
        .map(|refusal| refusal.to_string());
    let cannot_reject = app
        .rules
        .check(&signed.name, &record, false)
        .err()
        .map(|refusal| refusal.to_string());
    let view = RunView {
        record: &record,
        cannot_approve,
        cannot_reject,
        decisions,
        open_gate,
        gate_deadline,
        migrations,
        deploys,
        recorded_for_gate,
        log,
        log_hidden,
        notice,
    };
    Html(pages::run(&signed.viewer(), &view)).into_response()
}
