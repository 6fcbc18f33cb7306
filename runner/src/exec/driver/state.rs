//! Pure parts of the run's bookkeeping: new stage records, a stage record's start and end,
//! the record's plan context, what finished stages left for later ones, and where the deploy
//! lease starts. Times arrive from the caller (read from `RunSettings::clock`).

use super::*;
use crate::plan::{Plan, PlanContext, Step};
use crate::run::StageKind;
use crate::run::{RunRecord, StageOutputs, StageRecord, StageStatus};
use std::collections::BTreeMap;

/// The index of the first step that needs the pipeline's deploy lease: the step after the
/// last approval gate, or the first migrate or deploy step when there is no gate.
pub(super) fn gate_index(plan: &Plan) -> usize {
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
pub(super) fn pending_stages(plan: &Plan) -> Vec<StageRecord> {
    plan.steps
        .iter()
        .map(|step| StageRecord {
            name: step.name().to_owned(),
            kind: step.kind(),
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
pub(super) fn context_record(context: &PlanContext) -> BTreeMap<String, String> {
    let mut record = BTreeMap::new();
    record.insert("git_ref".to_owned(), context.git_ref.clone());
    for (key, value) in [
        ("sha", &context.sha),
        ("run_id", &context.run_id),
        ("created", &context.created),
        ("account", &context.account),
        ("region", &context.region),
        ("local_tag", &context.local_tag),
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
        local_tag: get("local_tag"),
    }
}

/// The notice a run continued by `resume` opens with: a run that never started (the agent
/// creates its runs queued) starts; only one that has run before resumes.
pub(super) fn resume_notice(record: &RunRecord) -> String {
    let stage = record.next_stage().map(|s| s.name.as_str()).unwrap_or("-");
    let never_started =
        record.status == RunStatus::Queued && record.stages.iter().all(|s| s.started_at.is_none());
    if never_started {
        format!("starting run {} at stage `{stage}`", record.id)
    } else {
        format!("resuming run {} at stage `{stage}`", record.id)
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
        .filter(|s| s.status == StageStatus::Succeeded && s.kind == StageKind::Push)
    {
        if let Some(image) = &stage.outputs.image {
            let build = crate::plan::build_of_push_step(&stage.name).to_owned();
            state.images.insert(build, image.clone());
        }
    }
    state
}

/// `clock`'s time as run records write it: RFC 3339 in UTC, to the second.
pub(super) fn timestamp(clock: &crate::store::Clock) -> String {
    clock
        .now()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A stage starting (again) at `now`: running, its error cleared. A stage that started
/// before (a resumed gate, a retried deploy) keeps its first start, which an approval
/// deadline is counted from.
pub(super) fn begin(stage: &mut StageRecord, now: &str) {
    stage.status = StageStatus::Running;
    if stage.started_at.is_none() {
        stage.started_at = Some(now.to_owned());
    }
    stage.error = None;
}

/// A stage ending at `now` with `status`: finished then unless it only waits (a gate that
/// stops a run `--until` it); outputs replaced only by non-empty ones, so a stage that ends
/// without any keeps what it saved while it ran.
pub(super) fn end(
    stage: &mut StageRecord,
    status: StageStatus,
    outputs: StageOutputs,
    error: Option<String>,
    now: &str,
) {
    stage.status = status;
    if status != StageStatus::Waiting {
        stage.finished_at = Some(now.to_owned());
    }
    if outputs != StageOutputs::default() {
        stage.outputs = outputs;
    }
    stage.error = error;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::compile_text;
    use crate::plan::plan;
    use crate::run::sample;

    const SOURCE: &str = "source:\n  repository: acme/app\n  tags: [\"v*\"]\naws:\n  region: eu-west-2\n  account: \"123456789012\"\n";

    fn planned(stages: &str) -> Plan {
        let compiled = compile_text(format!("{SOURCE}stages:\n{stages}"));
        let context = PlanContext {
            git_ref: "v1.2.3".into(),
            sha: Some("0123456789abcdef0123456789abcdef01234567".into()),
            ..PlanContext::default()
        };
        plan(&compiled, &context).unwrap()
    }

    const RELEASE: &str = "  - build:\n      image: app\n  - approval: {}\n  - migrate:\n      cluster: c\n      service: s\n      container: app\n      command: [migrate]\n  - deploy:\n      cluster: c\n      services: [s]\n";

    #[test]
    fn the_lease_starts_after_the_last_gate_or_at_the_first_ecs_change() {
        let gated = planned(RELEASE);
        let names: Vec<&str> = gated.steps.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            ["source", "build", "push", "approval", "migrate", "deploy"]
        );
        assert_eq!(gate_index(&gated), 4, "the migration after the gate");
        let ungated = planned(&RELEASE.replace("  - approval: {}\n", ""));
        assert_eq!(gate_index(&ungated), 3, "the migration itself");
        let build_only = planned("  - build:\n      image: app\n");
        assert_eq!(gate_index(&build_only), build_only.steps.len(), "never");
    }

    #[test]
    fn a_new_run_has_one_pending_stage_of_its_kind_per_step() {
        let stages = pending_stages(&planned(RELEASE));
        let kinds: Vec<StageKind> = stages.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, StageKind::ALL);
        assert!(stages.iter().all(|s| s.status == StageStatus::Pending
            && s.started_at.is_none()
            && s.outputs == StageOutputs::default()));
    }

    fn record(stages: Vec<StageRecord>, context: BTreeMap<String, String>) -> RunRecord {
        RunRecord {
            context,
            ..sample::run(RunStatus::Running, stages)
        }
    }

    #[test]
    fn the_recorded_context_plans_the_run_again_exactly() {
        let context = PlanContext {
            git_ref: "v1.2.3".into(),
            sha: Some("abc".into()),
            run_id: Some("01jd0000000000000000000000".into()),
            created: Some("2026-11-26T09:00:00Z".into()),
            account: Some("123456789012".into()),
            region: Some("eu-west-2".into()),
            env: [("APP_ENV".to_owned(), "prod".to_owned())].into(),
            outputs: BTreeMap::new(),
            local_tag: Some("local-0123456".into()),
        };
        let back = plan_context(&record(Vec::new(), context_record(&context)));
        assert_eq!(back, context);
        // A record written before the context was kept falls back to its trigger.
        let old = plan_context(&record(Vec::new(), BTreeMap::new()));
        assert_eq!(old.git_ref, "v1.2.3");
        assert_eq!(old.created.as_deref(), Some("2026-11-26T09:00:00Z"));
        assert_eq!(old.account, None);
    }

    #[test]
    fn finished_stages_leave_their_results_for_later_ones() {
        let stage = |name: &str, kind, status, outputs| StageRecord {
            outputs,
            ..sample::stage(name, kind, status)
        };
        let record = record(
            vec![
                stage(
                    "source",
                    StageKind::Source,
                    StageStatus::Succeeded,
                    StageOutputs {
                        sha: Some("abc".into()),
                        ..StageOutputs::default()
                    },
                ),
                stage(
                    "push",
                    StageKind::Push,
                    StageStatus::Succeeded,
                    StageOutputs {
                        image: Some("r/app@sha256:1".into()),
                        ..StageOutputs::default()
                    },
                ),
                stage(
                    "worker-push",
                    StageKind::Push,
                    StageStatus::Succeeded,
                    StageOutputs {
                        image: Some("r/worker@sha256:2".into()),
                        ..StageOutputs::default()
                    },
                ),
                stage(
                    "sidecar-push",
                    StageKind::Push,
                    StageStatus::Failed,
                    StageOutputs {
                        image: Some("r/sidecar@sha256:3".into()),
                        ..StageOutputs::default()
                    },
                ),
            ],
            BTreeMap::new(),
        );
        let state = restore_state(&record);
        assert_eq!(state.sha.as_deref(), Some("abc"));
        assert_eq!(
            state.images,
            BTreeMap::from([
                ("build".to_owned(), "r/app@sha256:1".to_owned()),
                ("worker".to_owned(), "r/worker@sha256:2".to_owned()),
            ]),
            "keyed by the build each push belongs to; a failed push left nothing"
        );
        let outputs = build_outputs(&state);
        assert_eq!(outputs["worker.image"], "r/worker@sha256:2");
        assert_eq!(outputs["worker.repository"], "r/worker");
        assert_eq!(outputs["worker.digest"], "sha256:2");
    }

    #[test]
    fn only_a_run_that_ran_before_is_resumed() {
        let pending = vec![
            sample::stage("source", StageKind::Source, StageStatus::Pending),
            sample::stage("build", StageKind::Build, StageStatus::Pending),
        ];
        let queued = sample::run(RunStatus::Queued, pending.clone());
        let notice = resume_notice(&queued);
        assert!(notice.starts_with("starting run "), "{notice}");
        assert!(notice.ends_with("at stage `source`"), "{notice}");
        let mut source_done = pending;
        source_done[0].status = StageStatus::Succeeded;
        source_done[0].started_at = Some("2026-11-26T09:00:00Z".into());
        for (status, stages) in [
            (RunStatus::Running, source_done.clone()),
            (RunStatus::Queued, source_done),
        ] {
            let notice = resume_notice(&sample::run(status, stages));
            assert!(notice.starts_with("resuming run "), "{notice}");
            assert!(notice.ends_with("at stage `build`"), "{notice}");
        }
        let crashed = sample::run(RunStatus::Running, queued.stages.clone());
        assert!(resume_notice(&crashed).starts_with("resuming run "));
    }

    #[test]
    fn a_stage_keeps_its_first_start_and_ends_unless_it_only_waits() {
        use crate::store::ManualClock;
        use std::time::Duration;
        let time = ManualClock::starting_at("2026-11-26T09:00:00Z".parse().unwrap());
        let clock = time.clock();
        let saved = StageOutputs {
            task_arn: Some("arn:task".into()),
            ..StageOutputs::default()
        };
        let mut stage = StageRecord {
            error: Some("an earlier attempt failed".into()),
            ..sample::stage("deploy", StageKind::Deploy, StageStatus::Pending)
        };
        begin(&mut stage, &timestamp(&clock));
        assert_eq!(stage.status, StageStatus::Running);
        assert_eq!(stage.started_at.as_deref(), Some("2026-11-26T09:00:00Z"));
        assert_eq!(stage.error, None);
        stage.outputs = saved.clone();
        // (ends with, its outputs, at minutes after the start → finished at, outputs after).
        let rows = [
            (
                StageStatus::Waiting,
                StageOutputs::default(),
                5,
                None,
                &saved,
            ),
            (
                StageStatus::Failed,
                StageOutputs::default(),
                10,
                Some("2026-11-26T09:10:00Z"),
                &saved,
            ),
            (
                StageStatus::Succeeded,
                outputs_with_sha(),
                90,
                Some("2026-11-26T10:30:00Z"),
                &outputs_with_sha(),
            ),
        ];
        let mut elapsed = 0;
        for (status, outputs, minutes, finished, kept) in rows {
            time.advance(Duration::from_secs((minutes - elapsed) * 60));
            elapsed = minutes;
            // A resumed or retried stage begins again: its first start stays.
            begin(&mut stage, &timestamp(&clock));
            assert_eq!(stage.started_at.as_deref(), Some("2026-11-26T09:00:00Z"));
            stage.finished_at = None;
            end(
                &mut stage,
                status,
                outputs,
                Some(format!("{status:?}")),
                &timestamp(&clock),
            );
            assert_eq!(stage.status, status);
            assert_eq!(stage.finished_at.as_deref(), finished, "{status:?}");
            assert_eq!(&stage.outputs, kept, "{status:?}");
            assert_eq!(stage.error, Some(format!("{status:?}")));
        }
    }

    fn outputs_with_sha() -> StageOutputs {
        StageOutputs {
            sha: Some("abc".into()),
            ..StageOutputs::default()
        }
    }
}
