//! Pure parts of the run's bookkeeping: new stage records, the record's plan context, what
//! finished stages left for later ones, and where the deploy lease starts.

use super::*;
use crate::plan::{Plan, PlanContext, Step};
use crate::run::{RunRecord, StageOutputs, StageRecord, StageStatus};
use std::collections::BTreeMap;

/// The index of the first step that needs the pipeline's deploy lease: the step after the
/// last approval gate, or the first migrate or deploy step when there is no gate.
pub fn gate_index(plan: &Plan) -> usize {
    if let Some(last_gate) = plan
        .steps
        .iter()
        .rposition(|s| matches!(s, Step::Approval(_)))
    {
        return last_gate + 1;
    }
    plan.steps
        .iter()
        .position(|s| matches!(s, Step::Migrate(_) | Step::Deploy(_)))
        .unwrap_or(plan.steps.len())
}

/// One pending stage record per step of a plan: a new run's stages.
pub fn pending_stages(plan: &Plan) -> Vec<StageRecord> {
    plan.steps
        .iter()
        .map(|step| StageRecord {
            name: step.name().to_owned(),
            kind: step.kind().to_owned(),
            status: StageStatus::Pending,
            started_at: None,
            finished_at: None,
            outputs: StageOutputs::default(),
            error: None,
        })
        .collect()
}

/// What resuming needs to re-plan a run exactly: the record's `context` (read back by
/// `plan_context`). Anything that creates run records writes it with this.
pub fn context_record(context: &PlanContext) -> BTreeMap<String, String> {
    let mut record = BTreeMap::new();
    record.insert("git_ref".to_owned(), context.git_ref.clone());
    for (key, value) in [
        ("sha", &context.sha),
        ("run_id", &context.run_id),
        ("created", &context.created),
        ("account", &context.account),
        ("region", &context.region),
    ] {
        if let Some(value) = value {
            record.insert(key.to_owned(), value.clone());
        }
    }
    for (name, value) in &context.env {
        record.insert(format!("env.{name}"), value.clone());
    }
    record
}

pub(super) fn plan_context(record: &RunRecord) -> PlanContext {
    let get = |key: &str| record.context.get(key).cloned();
    PlanContext {
        git_ref: get("git_ref").unwrap_or_else(|| record.trigger.git_ref.clone()),
        sha: get("sha").or_else(|| record.trigger.sha.clone()),
        run_id: Some(record.id.0.clone()),
        created: get("created").or_else(|| Some(record.created_at.clone())),
        account: get("account"),
        region: get("region"),
        env: record
            .context
            .iter()
            .filter_map(|(key, value)| {
                key.strip_prefix("env.")
                    .map(|name| (name.to_owned(), value.clone()))
            })
            .collect(),
        outputs: BTreeMap::new(),
    }
}

/// `<build>.image`, `.repository` and `.digest` of every pushed image, for the plan.
pub(super) fn build_outputs(state: &RunState) -> BTreeMap<String, String> {
    let mut outputs = BTreeMap::new();
    for (build, image) in &state.images {
        outputs.insert(format!("{build}.image"), image.clone());
        if let Some((repository, digest)) = image.rsplit_once('@') {
            outputs.insert(format!("{build}.repository"), repository.to_owned());
            outputs.insert(format!("{build}.digest"), digest.to_owned());
        }
    }
    outputs
}

/// Outputs of finished stages, so a resumed run does not redo them.
pub(super) fn restore_state(record: &RunRecord) -> RunState {
    let mut state = RunState::default();
    for stage in record
        .stages
        .iter()
        .filter(|s| s.status == StageStatus::Succeeded)
    {
        if let Some(sha) = &stage.outputs.sha {
            state.sha = Some(sha.clone());
        }
        if let Some(id) = &stage.outputs.image_id {
            state.image_ids.insert(stage.name.clone(), id.clone());
        }
        state.exported.extend(stage.outputs.exported.clone());
    }
    for stage in record
        .stages
        .iter()
        .filter(|s| s.status == StageStatus::Succeeded && s.kind == "push")
    {
        if let Some(image) = &stage.outputs.image {
            let build = stage
                .name
                .strip_suffix("-push")
                .unwrap_or("build")
                .to_owned();
            state.images.insert(build, image.clone());
        }
    }
    state
}

pub(super) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
