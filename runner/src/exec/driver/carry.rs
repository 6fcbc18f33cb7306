//! Runs that deploy an earlier run's images without building: `rollback` (the same pipeline
//! and environment, an older release) and `promote` (a release another environment built and
//! verified, through this environment's approval and migration). Each is a new run whose
//! source and push stages carry the earlier run's results (its image digests) as succeeded,
//! whose build stages are skipped, and whose remaining stages run.

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
/// its images must already be in the repositories this pipeline pushes to (a promotion to an
/// environment with another registry: the images are not copied, so the deploy could not pull
/// them).
struct Carried {
    kind: TriggerKind,
    started: String,
    same_repositories: bool,
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
            same_repositories: false,
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
            same_repositories: true,
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
        if carried.same_repositories
            && let Some((pushed, deploys)) = other_repository(&plan, from)
        {
            return Err(DriverError::OtherRegistry {
                run: from.id.clone(),
                pushed,
                deploys,
            });
        }
        let stages = plan
            .steps
            .iter()
            .map(|step| carried_stage(step, from, &runs))
            .collect::<Vec<_>>();
        if !stages
            .iter()
            .any(|s| s.kind == StageKind::Push && s.status == StageStatus::Succeeded)
        {
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

/// The first image `from` pushed to another repository than the one this plan's push step of
/// the same name deploys from: (`from`'s image, this plan's repository).
fn other_repository(plan: &plan::Plan, from: &RunRecord) -> Option<(String, String)> {
    plan.steps.iter().find_map(|step| {
        let Step::Push(push) = step else { return None };
        let image = from.stage(&push.name)?.outputs.image.as_deref()?;
        let repository = image
            .split_once('@')
            .map_or(image, |(repository, _)| repository);
        (repository != push.repository).then(|| (image.to_owned(), push.repository.clone()))
    })
}

/// The stage record of `step` in a run that carries `from`'s images: source and push as `from`
/// left them (when they succeeded there), the steps `runs` picks pending, the rest skipped.
fn carried_stage(step: &Step, from: &RunRecord, runs: impl Fn(&Step) -> bool) -> StageRecord {
    let earlier = from.stage(step.name());
    let (status, outputs, error) = match step {
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
    fn a_promotion_to_another_registry_names_both_repositories() {
        let mut push = sample::stage("push", StageKind::Push, StageStatus::Succeeded);
        push.outputs.image = Some("registry.staging.example/app@sha256:0123".into());
        let from = sample::run(RunStatus::Succeeded, vec![push]);
        assert_eq!(other_repository(&plan_in("staging"), &from), None);
        assert_eq!(
            other_repository(&plan_in("prod"), &from),
            Some((
                "registry.staging.example/app@sha256:0123".to_owned(),
                "registry.prod.example/app".to_owned()
            ))
        );
    }
}
