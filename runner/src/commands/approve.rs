//! `approve` (and `approve --reject`): record a decision at the approval gate a run waits at.
//! The waiting run, or a later `resume`, acts on it.

use super::shared::{current_user, find_run, open_store, store_failed};
use crate::cli::StoreArgs;
use crate::exit_codes;
use crate::run::{ApprovalRecord, RunId, RunStatus, StageKind, StageStatus};
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
    let waiting = matches!(
        (gate.status, record.status),
        (
            StageStatus::Waiting,
            RunStatus::Waiting | RunStatus::Running
        ) | (StageStatus::Cancelled, RunStatus::Cancelled)
    );
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
        Err(error) => store_failed(error),
    }
}
