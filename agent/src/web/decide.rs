//! The decision handler: an approver's approve or reject of a run's gate, posted from the run
//! page with the session's CSRF token and checked against the approval rules.

use std::sync::Arc;

use axum::extract::{Extension, Form, Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{SecondsFormat, Utc};
use envelope_runner::exec::driver::gate_to_decide;
use envelope_runner::run::{ApprovalRecord, RunId};
use envelope_runner::store::ApprovalOutcome;
use serde::Deserialize;

use super::pages;
use super::session::same;
use super::{App, SignedIn, forbidden_form, query_escape, store_error};

#[derive(Debug, Deserialize)]
pub(super) struct DecisionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    stage: String,
    #[serde(default)]
    decision: String,
    comment: Option<String>,
}

pub(super) async fn decide(
    State(app): State<Arc<App>>,
    Extension(signed): Extension<SignedIn>,
    Path(id): Path<String>,
    Form(form): Form<DecisionForm>,
) -> Response {
    let back = format!("/runs/{}", query_escape(&id));
    let Some(csrf) = &signed.csrf else {
        return forbidden_form(Some(&signed.viewer()), &back);
    };
    if form.csrf.is_empty() || !same(&form.csrf, csrf) {
        tracing::warn!(approver = %signed.name, "refused a decision on run {id} without this session's CSRF token");
        return forbidden_form(Some(&signed.viewer()), &back);
    }
    let approved = match form.decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Html(pages::message(
                    Some(&signed.viewer()),
                    "No decision",
                    "Press Approve or Reject.",
                    &back,
                )),
            )
                .into_response();
        }
    };
    let id = RunId(id);
    let record = match app.store.get_run(&id).await {
        Ok(Some(record)) => record,
        Ok(None) => return StatusCode::NOT_FOUND.into_response(),
        Err(error) => return store_error(&signed, &error),
    };
    if gate_to_decide(&record, Some(&form.stage)).is_err() {
        return (
            StatusCode::CONFLICT,
            Html(pages::message(
                Some(&signed.viewer()),
                "Not waiting",
                &format!(
                    "Run {id} is not waiting at an approval gate named `{}`.",
                    form.stage
                ),
                &back,
            )),
        )
            .into_response();
    }
    if let Err(refusal) = app.rules.check(&signed.name, &record, approved) {
        tracing::warn!(run = %id, approver = %signed.name, "refused a decision on run {id}: {refusal}");
        return (
            StatusCode::FORBIDDEN,
            Html(pages::message(
                Some(&signed.viewer()),
                "Not yours to decide",
                &format!("{refusal}."),
                &back,
            )),
        )
            .into_response();
    }
    let comment = form
        .comment
        .map(|comment| comment.trim().chars().take(500).collect::<String>())
        .filter(|comment| !comment.is_empty());
    let decision = ApprovalRecord {
        approved,
        by: signed.name.clone(),
        at: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        comment,
    };
    match app.store.decide_approval(&id, &form.stage, &decision).await {
        Ok(ApprovalOutcome::Recorded) => {
            tracing::info!(
                run = %id,
                approver = %signed.name,
                "{} {} run {id} at `{}` in the web UI",
                signed.name,
                if approved { "approved" } else { "rejected" },
                form.stage
            );
            app.scheduler.wake();
            let notice = if approved { "approved" } else { "rejected" };
            Redirect::to(&format!("{back}?notice={notice}")).into_response()
        }
        Ok(ApprovalOutcome::AlreadyDecided(_)) => {
            Redirect::to(&format!("{back}?notice=already")).into_response()
        }
        Err(error) => store_error(&signed, &error),
    }
}
