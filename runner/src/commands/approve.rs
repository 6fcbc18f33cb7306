//! `approve` (and `approve --reject`): record a decision at the approval gate a run waits at
//! (which gate, and whether it may be decided, is [`gate_to_decide`]'s rule). The waiting run,
//! or a later `resume`, acts on it.

use super::shared::{current_user, find_run, open_store, store_failed};
use crate::cli::StoreArgs;
use crate::exec::driver::gate_to_decide;
use crate::exit_codes;
use crate::run::{ApprovalRecord, RunId};
use crate::store;
use std::path::Path;

/// A decision as the command line gives it.
pub(super) struct Request {
    /// Approve (`true`) or reject.
    pub approved: bool,
    /// A note recorded with the decision.
    pub comment: Option<String>,
    /// The approval stage, when the run has several.
    pub stage: Option<String>,
    /// Who decides (default: the current user).
    pub approver: Option<String>,
}

pub(super) async fn approve(project: &Path, run: &str, request: Request, args: &StoreArgs) -> i32 {
    let Request {
        approved,
        comment,
        stage,
        approver,
    } = request;
    let store = match open_store(project, args).await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let id = RunId(run.to_owned());
    let record = match find_run(store.as_ref(), &id).await {
        Ok(record) => record,
        Err(code) => return code,
    };
    let gate = match gate_to_decide(&record, stage.as_deref()) {
        Ok(gate) => gate,
        Err(refusal) => {
            eprintln!("error: {refusal}");
            return exit_codes::INVALID_INPUT;
        }
    };
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
        Err(error) => store_failed(error),
    }
}
