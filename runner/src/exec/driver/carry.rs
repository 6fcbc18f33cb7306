//! Runs that deploy an earlier run's images without building: `rollback` (the same pipeline
//! and environment, an older release) and `promote` (a release another environment built and
//! verified, through this environment's approval and migration). Each is a new run whose
//! source and push stages carry the earlier run's results (its image digests) as succeeded,
//! whose build stages are skipped, and whose remaining stages run. A promotion whose
//! environment pushes to another repository than the earlier run did leaves that push stage
//! pending instead: it copies the image there by digest (`steps/copy.rs`), as a stage of its
//! own, so a re-attached run does not start the copy over and a finished one is not redone.

use super::state::{context_record, plan_context};
use super::{Driver, DriverError, RunOutcome};
use crate::event::Event;
use crate::plan::{self, PlanContext, Step};
use crate::run::{
    RunId, RunRecord, RunStatus, RunTrigger, StageKind, StageOutputs, StageRecord, StageStatus,
    TriggerKind,
};
use std::collections::BTreeMap;

/// What a carried run is: its trigger, how its start is told (`RunStarted`'s ref), and whether
/// an image pushed to another repository than this plan's is copied (a promotion) rather than
/// carried as it is (a rollback redeploys what the same pipeline pushed).
struct Carried {
    kind: TriggerKind,
    started: String,
    copies: bool,
}

impl Driver {
    /// Redeploy an earlier run's images without building: a new run whose source and push
    /// stages carry the earlier run's results and whose only work is the deploy stages.
    pub async fn rollback(&self, from: &RunRecord) -> Result<RunOutcome, DriverError> {
        let context = plan_context(from);
        let kind = TriggerKind::Rollback {
            from_run: from.id.clone(),
        };
        let started = format!("rollback to run {}", from.id);
        let runs = |step: &Step| matches!(step, Step::Deploy(_));
        let carried = Carried {
            kind,
            started,
            copies: false,
        };
        self.carry(
            from,
            context,
            carried,
            runs,
            DriverError::NothingToRollBackTo,
        )
        .await
    }

    /// Deploy the images of `from` (a run of this pipeline in another environment) in this
    /// pipeline's environment: approval, migrate and deploy run as this environment says; the
    /// region and account are this environment's, the ref, commit and release `from`'s.
    /// `env`: the values of the pipeline's declared `env:` variables for this run. The caller
    /// decides whether `from` may be promoted (see `promotable`).
    pub async fn promote(
        &self,
        from: &RunRecord,
        env: BTreeMap<String, String>,
    ) -> Result<RunOutcome, DriverError> {
        let mut context = plan_context(from);
        context.account = None;
        context.region = None;
        context.created = None;
        context.env = env;
        let kind = TriggerKind::Promotion {
            from_run: from.id.clone(),
            from_pipeline: from.pipeline.clone(),
        };
        let started = format!("promotion of run {} ({})", from.id, from.pipeline);
        let runs =
            |step: &Step| matches!(step, Step::Approval(_) | Step::Migrate(_) | Step::Deploy(_));
        let carried = Carried {
            kind,
            started,
            copies: true,
        };
        self.carry(from, context, carried, runs, DriverError::NothingToPromote)
            .await
    }

    /// Create and execute a run that carries `from`'s source and push results; the steps
    /// `runs` picks are pending, every other step is skipped. `nothing`: the error when `from`
    /// pushed no image. The run is created now; its plan keeps the context's creation time
    /// when it has one (a rollback plans as the run it rolls back to did).
    async fn carry(
        &self,
        from: &RunRecord,
        mut context: PlanContext,
        carried: Carried,
        runs: impl Fn(&Step) -> bool,
        nothing: fn(RunId) -> DriverError,
    ) -> Result<RunOutcome, DriverError> {
        let id = RunId::new();
        let created = self.now();
        context.run_id = Some(id.0.clone());
        context.created.get_or_insert_with(|| created.clone());
        self.settle_aws(&mut context).await?;
        let plan = plan::plan(&self.compiled, &context)?;
        let copied = if carried.copies {
            copied_pushes(&plan, from)
        } else {
            Vec::new()
        };
        let stages = plan
            .steps
            .iter()
            .map(|step| carried_stage(step, from, &runs, &copied))
            .collect::<Vec<_>>();
        if !stages.iter().any(|s| {
            s.kind == StageKind::Push
                && matches!(s.status, StageStatus::Succeeded | StageStatus::Pending)
        }) {
            return Err(nothing(from.id.clone()));
        }
        let record = RunRecord {
            id: id.clone(),
            pipeline: self.compiled.run_key(),
            status: RunStatus::Running,
            trigger: RunTrigger {
                kind: carried.kind,
                git_ref: from.trigger.git_ref.clone(),
                sha: from.trigger.sha.clone(),
                tag: from.trigger.tag.clone(),
            },
            created_at: created,
            finished_at: None,
            context: context_record(&context),
            stages,
        };
        self.store.create_run(&record).await?;
        self.events.emit(Event::RunStarted {
            run: id,
            pipeline: record.pipeline.clone(),
            git_ref: carried.started,
        });
        self.execute(record, context).await
    }
}

/// The push steps of this plan whose image `from` pushed to another repository than the one
/// the step names: their stage copies the image instead of carrying it.
fn copied_pushes(plan: &plan::Plan, from: &RunRecord) -> Vec<String> {
    plan.steps
        .iter()
        .filter_map(|step| {
            let Step::Push(push) = step else { return None };
            let image = from.stage(&push.name)?.outputs.image.as_deref()?;
            let repository = image
                .split_once('@')
                .map_or(image, |(repository, _)| repository);
            (repository != push.repository).then(|| push.name.clone())
        })
        .collect()
}

/// The stage record of `step` in a run that carries `from`'s images: source and push as `from`
/// left them (when they succeeded there), a push in `copied` pending (it copies the image that
/// succeeded there), the steps `runs` picks pending, the rest skipped.
fn carried_stage(
    step: &Step,
    from: &RunRecord,
    runs: impl Fn(&Step) -> bool,
    copied: &[String],
) -> StageRecord {
    let earlier = from.stage(step.name());
    let (status, outputs, error) = match step {
        Step::Push(push) if copied.contains(&push.name) => {
            (StageStatus::Pending, StageOutputs::default(), None)
        }
        Step::Source(_) | Step::Push(_) => match earlier {
            Some(stage) if stage.status == StageStatus::Succeeded => (
                StageStatus::Succeeded,
                stage.outputs.clone(),
                Some(format!("taken from run {}", from.id)),
            ),
            _ => (StageStatus::Skipped, StageOutputs::default(), None),
        },
        step if runs(step) => (StageStatus::Pending, StageOutputs::default(), None),
        _ => (StageStatus::Skipped, StageOutputs::default(), None),
    };
    StageRecord {
        name: step.name().to_owned(),
        kind: step.kind(),
        status,
        started_at: None,
        finished_at: None,
        outputs,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::compile_text;
    use crate::run::sample;

    const PIPELINE: &str = r#"
source: {repository: acme/app, tags: ["v*"]}
aws: {region: eu-west-2, registry: registry.staging.example}
environments:
  prod: {aws: {registry: registry.prod.example}}
  staging: {}
stages:
  - build: {image: app}
  - deploy: {cluster: prod, services: [app]}
"#;

    fn plan_in(environment: &str) -> plan::Plan {
        let compiled = compile_text(PIPELINE)
            .in_environment(Some(environment))
            .unwrap();
        let context = PlanContext {
            git_ref: "v1.0.0".into(),
            ..PlanContext::default()
        };
        plan::plan(&compiled, &context).unwrap()
    }

    #[test]
    fn a_promotion_to_another_registry_copies_the_image_in_its_push_stage() {
        let mut push = sample::stage("push", StageKind::Push, StageStatus::Succeeded);
        push.outputs.image = Some("registry.staging.example/app@sha256:0123".into());
        let from = sample::run(RunStatus::Succeeded, vec![push]);
        let deploys = |step: &Step| matches!(step, Step::Deploy(_));
        let push_status = |environment: &str| {
            let plan = plan_in(environment);
            let copied = copied_pushes(&plan, &from);
            let step = plan
                .steps
                .iter()
                .find(|s| matches!(s, Step::Push(_)))
                .expect("a push step");
            (
                copied.clone(),
                carried_stage(step, &from, deploys, &copied).status,
            )
        };
        assert_eq!(push_status("staging"), (vec![], StageStatus::Succeeded));
        assert_eq!(
            push_status("prod"),
            (vec!["push".to_owned()], StageStatus::Pending)
        );
    }
}
