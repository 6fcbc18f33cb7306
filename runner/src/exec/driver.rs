//! The driver takes a run through its steps: it records every stage transition in the store
//! before and after the work, skips stages a resumed run already finished, and turns each
//! stage's outcome into the run's verdict.

use crate::event::Event;
use crate::exec::lease::GateLease;
use crate::exec::source::{self, SourceProgress, SourceRequest};
use crate::exec::{aws_target, build, build_limits, buildspec as phases, ecs, notify, push};
use crate::pipeline::CompiledPipeline;
use crate::plan::{self, Plan, PlanContext, Step};
use crate::report::EventSink;
use crate::run::{
    ApprovalRecord, RunId, RunRecord, RunStatus, RunTrigger, StageOutputs, StageRecord, StageStatus,
};
use crate::secret::Secret;
use crate::store::Store;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// How a run is executed, beyond what the pipeline says.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Mirrors, checkouts and other reusable state (`~/.cache/envelope-runner` by default).
    pub cache_dir: PathBuf,
    /// Stop after this step (name or kind), leaving the rest for `resume`.
    pub until: Option<String>,
    /// Build from this working tree instead of cloning; skip approval, migrate and deploy.
    pub local_source: Option<PathBuf>,
    /// With `local_source`: push to this registry host instead of only tagging locally.
    pub local_registry: Option<String>,
    /// Contact this `host:port` instead of the registry host the pipeline names (mirrors,
    /// VPC endpoints, a local emulator).
    pub registry_endpoint: Option<String>,
    /// Who started the run, recorded with it.
    pub user: String,
    /// How often a waiting approval gate (or a queued run) looks again.
    pub approval_poll: Duration,
    /// How long the pipeline's deploy lease lives without a heartbeat.
    pub lease_ttl: Duration,
    /// Cancelled on Ctrl-C / SIGTERM: the current stage is checkpointed and the run stops.
    pub cancel: tokio_util::sync::CancellationToken,
    /// `--region`: beats every region a file or the environment names (see `aws_target`).
    pub region: Option<String>,
}

impl RunSettings {
    pub fn is_local(&self) -> bool {
        self.local_source.is_some()
    }
}

/// How a run ended, for the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    pub run: RunId,
    pub status: RunStatus,
    /// The stage that failed or is waiting, if any.
    pub stage: Option<String>,
    pub error: Option<String>,
    /// The failure lies with the environment (Docker, registry, network, credentials).
    pub environment: bool,
    /// The run lost its pipeline's deploy lease and stopped before its next AWS change.
    pub lock_lost: bool,
}

/// Errors that stop a run before or outside its stages.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("no run {0} in the store")]
    UnknownRun(RunId),
    #[error(
        "run {0} pushed no image, so there is nothing to roll back to; pick a run that succeeded"
    )]
    NothingToRollBackTo(RunId),
    #[error("run {run} belongs to pipeline `{found}`, not `{expected}`")]
    WrongPipeline {
        run: RunId,
        found: String,
        expected: String,
    },
    #[error(transparent)]
    AwsTarget(#[from] aws_target::AwsTargetError),
}

/// A failed stage: what to tell people, and whether the environment (not the input) is at fault.
#[derive(Debug)]
struct StageFailure {
    message: String,
    status: RunStatus,
    environment: bool,
    /// What the stage did before it failed (a migration task, deployments, rollbacks).
    outputs: Option<StageOutputs>,
}

impl StageFailure {
    fn new(message: impl Into<String>) -> Self {
        StageFailure {
            message: message.into(),
            status: RunStatus::Failed,
            environment: false,
            outputs: None,
        }
    }

    /// A failure of the machine, network or credentials rather than of the pipeline or code.
    fn environment(message: impl Into<String>) -> Self {
        StageFailure {
            environment: true,
            ..StageFailure::new(message)
        }
    }

    fn of(message: impl ToString, environment: bool) -> Self {
        StageFailure {
            environment,
            ..StageFailure::new(message.to_string())
        }
    }
}

/// What earlier steps produced, for later ones.
#[derive(Debug, Default, Clone)]
struct RunState {
    sha: Option<String>,
    checkout: Option<PathBuf>,
    image_ids: BTreeMap<String, String>,
    images: BTreeMap<String, String>,
    exported: BTreeMap<String, String>,
}

/// Executes runs of one pipeline.
pub struct Driver {
    pub compiled: CompiledPipeline,
    pub store: Arc<dyn Store>,
    pub settings: RunSettings,
    pub events: EventSink,
    docker: OnceCell<bollard::Docker>,
    aws: OnceCell<aws_config::SdkConfig>,
    ecr_auth: OnceCell<push::ecr::EcrAuth>,
    ecs: OnceCell<ecs::EcsAws>,
    /// The region `settle_aws` chose, for every AWS client of the run.
    region: std::sync::OnceLock<String>,
    /// The deploy lease while the run holds it: every ECS change passes it first.
    gate_lease: std::sync::Mutex<Option<GateLease>>,
}

impl Driver {
    pub fn new(
        compiled: CompiledPipeline,
        store: Arc<dyn Store>,
        settings: RunSettings,
        events: EventSink,
    ) -> Self {
        // Secrets the run can know before it starts; those it fetches are added as it does.
        events
            .redactor()
            .add_all(crate::redact::environment_secrets());
        events
            .redactor()
            .add_all(crate::redact::pipeline_secrets(&compiled));
        Driver {
            compiled,
            store,
            settings,
            events,
            docker: OnceCell::new(),
            aws: OnceCell::new(),
            ecr_auth: OnceCell::new(),
            ecs: OnceCell::new(),
            region: std::sync::OnceLock::new(),
            gate_lease: std::sync::Mutex::new(None),
        }
    }

    /// Settle the run's AWS region and account (see `aws_target`) into `context`, so that no
    /// step reaches Docker, a registry, ECS or SNS with a placeholder in a name. Learns the
    /// account from STS only when a step that will run names it.
    async fn settle_aws(&self, context: &mut PlanContext) -> Result<(), DriverError> {
        let local = self.settings.is_local();
        context.region = aws_target::resolve_region(
            self.settings.region.as_deref(),
            context.region.as_deref(),
            self.compiled.aws.region.as_deref(),
        )
        .await;
        let plan = plan::plan(&self.compiled, context)?;
        for step in &plan.steps {
            if let Step::Approval(approval) = step
                && let Some(url) = &approval.notify_webhook
            {
                self.events
                    .redactor()
                    .add_all(crate::redact::webhook_secrets(url));
            }
        }
        match &context.region {
            Some(region) => {
                let _ = self.region.set(region.clone());
            }
            None => {
                let needs_region = !local
                    && plan
                        .steps
                        .iter()
                        .any(|step| matches!(step, Step::Migrate(_) | Step::Deploy(_)));
                if needs_region
                    || !aws_target::steps_naming(&plan, aws_target::REGION_PLACEHOLDER, local)
                        .is_empty()
                {
                    return Err(aws_target::AwsTargetError::NoRegion {
                        pipeline: self.compiled.name.clone(),
                    }
                    .into());
                }
            }
        }
        if context.account.is_none()
            && self.compiled.aws.account.is_none()
            && !aws_target::steps_naming(&plan, aws_target::ACCOUNT_PLACEHOLDER, local).is_empty()
        {
            let config =
                self.aws()
                    .await
                    .map_err(|failure| aws_target::AwsTargetError::Identity {
                        detail: failure.message,
                    })?;
            context.account = Some(aws_target::caller_account(config).await?);
        }
        Ok(())
    }

    /// Create a run record for this trigger and execute it.
    pub async fn start(
        &self,
        trigger: RunTrigger,
        mut context: PlanContext,
    ) -> Result<RunOutcome, DriverError> {
        let id = RunId::new();
        context.run_id = Some(id.0.clone());
        let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        context.created.get_or_insert(created.clone());
        self.settle_aws(&mut context).await?;
        // Planning first rejects a trigger the pipeline cannot run before anything is recorded.
        let plan = plan::plan(&self.compiled, &context)?;
        let record = RunRecord {
            id: id.clone(),
            pipeline: self.compiled.name.clone(),
            status: RunStatus::Running,
            trigger,
            created_at: created,
            finished_at: None,
            context: context_record(&context),
            stages: pending_stages(&plan),
        };
        self.store.create_run(&record).await?;
        if plan.concurrency == crate::pipeline::model::Concurrency::Superseded {
            self.supersede_older_runs(&record, gate_index(&plan))
                .await?;
        }
        self.events.emit(Event::RunStarted {
            run: id.clone(),
            pipeline: record.pipeline.clone(),
            git_ref: record.trigger.git_ref.clone(),
        });
        self.execute(record, context).await
    }

    /// Mark older runs of this pipeline that have not passed the approval gate superseded;
    /// they stop at their next stage boundary or while waiting for approval. Each is one
    /// conditional write that leaves a run already past its gate alone.
    pub async fn supersede_older_runs(
        &self,
        newer: &RunRecord,
        gate: usize,
    ) -> Result<(), DriverError> {
        let older = self
            .store
            .list_runs(Some(&self.compiled.name), 200, Some(&newer.id))
            .await?;
        for summary in older {
            if !matches!(
                summary.status,
                RunStatus::Running | RunStatus::Waiting | RunStatus::Queued
            ) {
                continue;
            }
            if self.store.supersede_run(&summary.id, gate, &now()).await? {
                self.events.emit(Event::Notice {
                    stage: None,
                    message: format!("run {} superseded by this newer run", summary.id),
                });
            }
        }
        Ok(())
    }

    /// Redeploy an earlier run's images without building: a new run whose source and push
    /// stages carry the earlier run's results and whose only work is the deploy stages.
    pub async fn rollback(&self, from: &RunRecord) -> Result<RunOutcome, DriverError> {
        let id = RunId::new();
        let mut context = plan_context(from);
        context.run_id = Some(id.0.clone());
        self.settle_aws(&mut context).await?;
        let plan = plan::plan(&self.compiled, &context)?;
        let created = now();
        let stages = plan
            .steps
            .iter()
            .map(|step| {
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
                    Step::Deploy(_) => (StageStatus::Pending, StageOutputs::default(), None),
                    _ => (StageStatus::Skipped, StageOutputs::default(), None),
                };
                StageRecord {
                    name: step.name().to_owned(),
                    kind: step.kind().to_owned(),
                    status,
                    started_at: None,
                    finished_at: None,
                    outputs,
                    error,
                }
            })
            .collect::<Vec<_>>();
        if !stages
            .iter()
            .any(|s| s.kind == "push" && s.status == StageStatus::Succeeded)
        {
            return Err(DriverError::NothingToRollBackTo(from.id.clone()));
        }
        let record = RunRecord {
            id: id.clone(),
            pipeline: self.compiled.name.clone(),
            status: RunStatus::Running,
            trigger: RunTrigger {
                kind: crate::run::TriggerKind::Rollback {
                    from_run: from.id.clone(),
                },
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
            git_ref: format!("rollback to run {}", from.id),
        });
        self.execute(record, context).await
    }

    /// Re-run a failed (or rejected) run's failed stage and everything after it.
    pub async fn retry(&self, id: &RunId) -> Result<RunOutcome, DriverError> {
        let mut record = self
            .store
            .get_run(id)
            .await?
            .ok_or_else(|| DriverError::UnknownRun(id.clone()))?;
        if let Some(failed) = record
            .stages
            .iter()
            .position(|s| s.status == StageStatus::Failed)
        {
            for stage in record.stages.iter_mut().skip(failed) {
                if matches!(
                    stage.status,
                    StageStatus::Failed | StageStatus::Skipped | StageStatus::Cancelled
                ) {
                    stage.status = StageStatus::Pending;
                    stage.error = None;
                    stage.finished_at = None;
                    self.save_stage(id, stage).await?;
                }
            }
        }
        self.resume(id).await
    }

    /// Continue a run from its first unfinished stage.
    pub async fn resume(&self, id: &RunId) -> Result<RunOutcome, DriverError> {
        let record = self
            .store
            .get_run(id)
            .await?
            .ok_or_else(|| DriverError::UnknownRun(id.clone()))?;
        if record.pipeline != self.compiled.name {
            return Err(DriverError::WrongPipeline {
                run: id.clone(),
                found: record.pipeline,
                expected: self.compiled.name.clone(),
            });
        }
        let context = plan_context(&record);
        let seen = self.store.events(id, None, usize::MAX).await?;
        self.events
            .start_at(seen.last().map(|(seq, _)| seq + 1).unwrap_or(1));
        self.events.emit(Event::Notice {
            stage: None,
            message: format!(
                "resuming run {id} at stage `{}`",
                record.next_stage().map(|s| s.name.as_str()).unwrap_or("-")
            ),
        });
        self.execute(record, context).await
    }

    async fn execute(
        &self,
        mut record: RunRecord,
        mut context: PlanContext,
    ) -> Result<RunOutcome, DriverError> {
        let started = Instant::now();
        let mut state = restore_state(&record);
        if let Some(sha) = &state.sha {
            context.sha = Some(sha.clone());
        }
        if let Err(error) = self.settle_aws(&mut context).await {
            // The run cannot go on without its account or region: say so in the record too.
            self.store
                .set_run_status(&record.id, RunStatus::Failed, Some(&now()))
                .await?;
            return Err(error);
        }
        record.status = RunStatus::Running;
        self.store
            .set_run_status(&record.id, RunStatus::Running, None)
            .await?;
        let gate = gate_index(&plan::plan(&self.compiled, &context)?);
        let mut lease: Option<GateLease> = None;
        let names: Vec<String> = record.stages.iter().map(|s| s.name.clone()).collect();
        let mut outcome = None;
        for (index, name) in names.into_iter().enumerate() {
            let stage = record.stage(&name).cloned().expect("stage from the record");
            if stage.status.is_finished() {
                continue;
            }
            // Re-plan with what is known now (the sha after the source step, the images after
            // the push): pure and cheap.
            context.outputs = build_outputs(&state);
            let plan = plan::plan(&self.compiled, &context)?;
            let Some(step) = plan.steps.iter().find(|s| s.name() == name).cloned() else {
                continue;
            };
            let skip_locally = self.settings.is_local()
                && (matches!(step, Step::Approval(_) | Step::Migrate(_) | Step::Deploy(_))
                    || (matches!(step, Step::Push(_)) && self.settings.local_registry.is_none()));
            if skip_locally {
                self.finish_stage(
                    &mut record,
                    &name,
                    StageStatus::Skipped,
                    StageOutputs::default(),
                    None,
                    0.0,
                )
                .await?;
                continue;
            }
            if let Some(stopped) = self.stopped_from_outside(&record).await? {
                outcome = Some(stopped);
                break;
            }
            let mut gate_passed_now = false;
            if index >= gate && lease.is_none() {
                match self.hold_gate(&record, plan.concurrency).await? {
                    GateResult::Held(held) => {
                        *self.gate_lease.lock().expect("gate lease lock") = Some(held.clone());
                        lease = Some(held);
                        gate_passed_now = true;
                    }
                    GateResult::Stopped(stopped) => {
                        outcome = Some(stopped);
                        break;
                    }
                }
            }
            let stage_started = Instant::now();
            self.begin_stage(&mut record, &name, step.kind()).await?;
            // Superseding touches only runs with no stage started past the gate; this run looks
            // again once its first one is recorded, so the two never both go ahead.
            if gate_passed_now && let Some(stopped) = self.stopped_from_outside(&record).await? {
                self.finish_stage(
                    &mut record,
                    &name,
                    StageStatus::Cancelled,
                    StageOutputs::default(),
                    stopped.error.clone(),
                    0.0,
                )
                .await?;
                outcome = Some(stopped);
                break;
            }
            let result = tokio::select! {
                result = self.run_step(&step, &plan, &mut record, &mut state) => Some(result),
                () = self.settings.cancel.cancelled() => None,
            };
            let seconds = stage_started.elapsed().as_secs_f64();
            match result {
                None => {
                    let message = format!(
                        "cancelled during `{name}`; `envelope-runner resume {}` continues from this stage",
                        record.id
                    );
                    self.finish_stage(
                        &mut record,
                        &name,
                        StageStatus::Cancelled,
                        StageOutputs::default(),
                        Some(message.clone()),
                        seconds,
                    )
                    .await?;
                    outcome = Some(RunOutcome {
                        run: record.id.clone(),
                        status: RunStatus::Cancelled,
                        stage: Some(name.clone()),
                        error: Some(message),
                        environment: false,
                        lock_lost: false,
                    });
                    break;
                }
                Some(Ok(StepResult::Done(outputs))) => {
                    if let Some(sha) = &outputs.sha {
                        context.sha = Some(sha.clone());
                    }
                    self.finish_stage(
                        &mut record,
                        &name,
                        StageStatus::Succeeded,
                        outputs,
                        None,
                        seconds,
                    )
                    .await?;
                }
                Some(Ok(StepResult::Waiting)) => {
                    self.finish_stage(
                        &mut record,
                        &name,
                        StageStatus::Waiting,
                        StageOutputs::default(),
                        None,
                        seconds,
                    )
                    .await?;
                    outcome = Some(RunOutcome {
                        run: record.id.clone(),
                        status: RunStatus::Waiting,
                        stage: Some(name.clone()),
                        error: None,
                        environment: false,
                        lock_lost: false,
                    });
                    break;
                }
                Some(Ok(StepResult::Stopped(stopped))) => {
                    self.finish_stage(
                        &mut record,
                        &name,
                        StageStatus::Cancelled,
                        StageOutputs::default(),
                        stopped.error.clone(),
                        seconds,
                    )
                    .await?;
                    outcome = Some(stopped);
                    break;
                }
                Some(Err(failure)) => {
                    self.finish_stage(
                        &mut record,
                        &name,
                        StageStatus::Failed,
                        failure.outputs.clone().unwrap_or_default(),
                        Some(failure.message.clone()),
                        seconds,
                    )
                    .await?;
                    for later in record
                        .stages
                        .iter_mut()
                        .filter(|s| s.status == StageStatus::Pending)
                    {
                        later.status = StageStatus::Skipped;
                        self.save_stage(&record.id, later).await?;
                    }
                    outcome = Some(RunOutcome {
                        run: record.id.clone(),
                        status: failure.status,
                        stage: Some(name.clone()),
                        error: Some(failure.message),
                        environment: failure.environment,
                        lock_lost: lease.as_ref().is_some_and(|l| l.lost().is_some()),
                    });
                    break;
                }
            }
            if self
                .settings
                .until
                .as_deref()
                .is_some_and(|until| until == name || until == step.kind())
                && record.stages.iter().any(|s| !s.status.is_finished())
            {
                outcome = Some(RunOutcome {
                    run: record.id.clone(),
                    status: RunStatus::Waiting,
                    stage: None,
                    error: None,
                    environment: false,
                    lock_lost: false,
                });
                break;
            }
        }
        if let Some(lease) = lease {
            self.gate_lease.lock().expect("gate lease lock").take();
            lease.release().await;
        }
        let outcome = outcome.unwrap_or(RunOutcome {
            run: record.id.clone(),
            status: RunStatus::Succeeded,
            stage: None,
            error: None,
            environment: false,
            lock_lost: false,
        });
        let finished_at = (outcome.status != RunStatus::Waiting)
            .then(|| chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        self.store
            .set_run_status(&record.id, outcome.status, finished_at.as_deref())
            .await?;
        self.events.emit(Event::RunFinished {
            run: record.id.clone(),
            status: outcome.status,
            seconds: started.elapsed().as_secs_f64(),
        });
        self.flush_events(&record.id).await?;
        self.events.finish();
        Ok(outcome)
    }

    /// A run another process marked superseded or cancelled stops at the next stage boundary.
    async fn stopped_from_outside(
        &self,
        record: &RunRecord,
    ) -> Result<Option<RunOutcome>, DriverError> {
        let Some(current) = self.store.get_run(&record.id).await? else {
            return Ok(None);
        };
        Ok(match current.status {
            RunStatus::Superseded | RunStatus::Cancelled => Some(RunOutcome {
                run: record.id.clone(),
                status: current.status,
                stage: record.next_stage().map(|s| s.name.clone()),
                error: Some(match current.status {
                    RunStatus::Superseded => {
                        "superseded by a newer run of this pipeline before the approval gate".into()
                    }
                    _ => "cancelled from another process".into(),
                }),
                environment: false,
                lock_lost: false,
            }),
            _ => None,
        })
    }

    /// Take the pipeline's deploy lease: one run at a time past the approval gate. Queued runs
    /// wait their turn; the lease expires if its holder dies, and is renewed while it lives.
    async fn hold_gate(
        &self,
        record: &RunRecord,
        concurrency: crate::pipeline::model::Concurrency,
    ) -> Result<GateResult, DriverError> {
        let key = format!("pipeline:{}:gate", self.compiled.name);
        let holder = record.id.0.clone();
        let mut announced = None;
        loop {
            match crate::exec::lease::acquire(
                self.store.as_ref(),
                &key,
                &holder,
                self.settings.lease_ttl,
            )
            .await?
            {
                crate::store::LeaseOutcome::Granted { generation, .. } => {
                    // A newer run may have superseded this one while it waited.
                    if let Some(stopped) = self.stopped_from_outside(record).await? {
                        let _ = self.store.release_lease(&key, &holder).await;
                        return Ok(GateResult::Stopped(stopped));
                    }
                    return Ok(GateResult::Held(GateLease::start(
                        self.store.clone(),
                        key,
                        holder,
                        generation,
                        self.settings.lease_ttl,
                    )));
                }
                crate::store::LeaseOutcome::Held { by, expires_at } => {
                    if announced.as_ref() != Some(&by) {
                        self.events.emit(Event::Notice {
                            stage: None,
                            message: format!(
                                "run {by} of `{}` is past the approval gate; waiting for it to finish ({} mode, its lease expires at {} unless renewed)",
                                self.compiled.name,
                                match concurrency {
                                    crate::pipeline::model::Concurrency::Queued => "queued",
                                    crate::pipeline::model::Concurrency::Superseded => "superseded",
                                },
                                expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                            ),
                        });
                        let _ = self.flush_events(&record.id).await;
                        announced = Some(by);
                    }
                    if let Some(stopped) = self.stopped_from_outside(record).await? {
                        return Ok(GateResult::Stopped(stopped));
                    }
                    tokio::select! {
                        () = tokio::time::sleep(self.settings.approval_poll) => {}
                        () = self.settings.cancel.cancelled() => {
                            return Ok(GateResult::Stopped(RunOutcome {
                                run: record.id.clone(),
                                status: RunStatus::Cancelled,
                                stage: record.next_stage().map(|s| s.name.clone()),
                                error: Some("cancelled while waiting for the pipeline's lock".into()),
                                environment: false,
                                lock_lost: false,
                            }));
                        }
                    }
                }
            }
        }
    }

    async fn begin_stage(
        &self,
        record: &mut RunRecord,
        name: &str,
        kind: &str,
    ) -> Result<(), DriverError> {
        let stage = record.stage_mut(name).expect("stage exists");
        stage.status = StageStatus::Running;
        if stage.started_at.is_none() {
            stage.started_at = Some(now());
        }
        stage.error = None;
        let stage = stage.clone();
        self.save_stage(&record.id, &stage).await?;
        self.events.emit(Event::StageStarted {
            stage: name.to_owned(),
            kind: kind.to_owned(),
        });
        Ok(())
    }

    async fn finish_stage(
        &self,
        record: &mut RunRecord,
        name: &str,
        status: StageStatus,
        outputs: StageOutputs,
        error: Option<String>,
        seconds: f64,
    ) -> Result<(), DriverError> {
        let stage = record.stage_mut(name).expect("stage exists");
        stage.status = status;
        if status != StageStatus::Waiting {
            stage.finished_at = Some(now());
        }
        if outputs != StageOutputs::default() {
            stage.outputs = outputs;
        }
        stage.error = error.clone();
        let stage = stage.clone();
        self.save_stage(&record.id, &stage).await?;
        self.events.emit(Event::StageFinished {
            stage: name.to_owned(),
            status,
            seconds,
            error,
        });
        self.flush_events(&record.id).await
    }

    /// Save a stage's record with the run's secrets redacted from its error and outputs.
    async fn save_stage(
        &self,
        run: &RunId,
        stage: &StageRecord,
    ) -> Result<(), crate::store::StoreError> {
        let redacted = self.events.redactor().redact_texts(stage);
        let stage = redacted.as_ref().unwrap_or(stage);
        self.store.save_stage(run, stage).await
    }

    async fn flush_events(&self, run: &RunId) -> Result<(), DriverError> {
        let events = self.events.take_unsaved();
        if !events.is_empty() {
            self.store.append_events(run, &events).await?;
        }
        Ok(())
    }

    async fn run_step(
        &self,
        step: &Step,
        plan: &Plan,
        record: &mut RunRecord,
        state: &mut RunState,
    ) -> Result<StepResult, StageFailure> {
        match step {
            Step::Source(source) => self.source(source, record, state).await,
            Step::Build(build) => {
                self.ensure_checkout(plan, record, state).await?;
                let limit = Duration::from_secs(build.timeout_seconds);
                tokio::time::timeout(limit, self.build(build, plan, record, state))
                    .await
                    .unwrap_or_else(|_| {
                        let history = self.events.history();
                        Err(StageFailure::environment(build_limits::timed_out(
                            &build.name,
                            limit,
                            &history,
                        )))
                    })
            }
            Step::Push(push) => self.push(push, state).await,
            Step::Approval(approval) => self.approval(approval, plan, record, state).await,
            Step::Migrate(migrate) => self.migrate(migrate, plan, record, state).await,
            Step::Deploy(deploy) => self.deploy(deploy, record, state).await,
        }
    }

    async fn source(
        &self,
        step: &plan::SourceStep,
        record: &RunRecord,
        state: &mut RunState,
    ) -> Result<StepResult, StageFailure> {
        if let Some(local) = &self.settings.local_source {
            let sha = local_head(local);
            self.events.emit(Event::Output {
                stage: step.name.clone(),
                key: "working tree".into(),
                value: format!(
                    "{} ({})",
                    local.display(),
                    sha.as_deref().unwrap_or("not a git repository")
                ),
            });
            state.checkout = Some(local.clone());
            state.sha = sha.clone();
            return Ok(StepResult::Done(StageOutputs {
                sha,
                ..StageOutputs::default()
            }));
        }
        let checkout_dir = self
            .settings
            .cache_dir
            .join("work")
            .join(&record.id.0)
            .join("source");
        if checkout_dir.exists() {
            // A resumed run re-fetches into a clean tree: half-written checkouts are not trusted.
            let _ = std::fs::remove_dir_all(&checkout_dir);
        }
        let token = std::env::var(&step.token_env)
            .ok()
            .filter(|t| !t.is_empty())
            .map(Secret::new);
        let request = SourceRequest {
            url: step.url.clone(),
            reference: step.reference.clone(),
            expected_sha: step.expected_sha.clone(),
            token,
            cache_dir: self.settings.cache_dir.clone(),
            checkout_dir: checkout_dir.clone(),
            shallow_without_mirror: false,
        };
        let events = self.events.clone();
        let stage = step.name.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut last_percent = None;
            source::fetch(&request, &mut |progress| match progress {
                SourceProgress::Fetching { url } => events.emit(Event::Log {
                    stage: stage.clone(),
                    line: format!("fetching {url}"),
                }),
                SourceProgress::Transfer {
                    received_objects,
                    total_objects,
                    received_bytes,
                } => {
                    let percent = (received_objects * 100)
                        .checked_div(total_objects)
                        .unwrap_or(100)
                        / 25;
                    if last_percent != Some(percent) && received_objects == total_objects {
                        last_percent = Some(percent);
                        events.emit(Event::Log {
                            stage: stage.clone(),
                            line: format!(
                                "received {received_objects}/{total_objects} objects ({} KiB)",
                                received_bytes / 1024
                            ),
                        });
                    }
                }
                SourceProgress::CheckedOut { sha } => events.emit(Event::Log {
                    stage: stage.clone(),
                    line: format!("checked out {sha}"),
                }),
            })
        })
        .await
        .map_err(|error| {
            StageFailure::new(format!("the source step stopped unexpectedly: {error}"))
        })?;
        let output = result.map_err(|error| {
            let environment = error.is_environment();
            StageFailure::of(error, environment)
        })?;
        self.events.emit(Event::Output {
            stage: step.name.clone(),
            key: "commit".into(),
            value: output.sha.clone(),
        });
        state.sha = Some(output.sha.clone());
        state.checkout = Some(output.checkout_dir.clone());
        Ok(StepResult::Done(StageOutputs {
            sha: Some(output.sha),
            ..StageOutputs::default()
        }))
    }

    /// A resumed run whose source stage finished in another process (or before a crash) needs
    /// the checkout again: reuse it when it is still there, else fetch the recorded commit.
    async fn ensure_checkout(
        &self,
        plan: &Plan,
        record: &RunRecord,
        state: &mut RunState,
    ) -> Result<(), StageFailure> {
        if let Some(local) = &self.settings.local_source {
            state.checkout = Some(local.clone());
            return Ok(());
        }
        if state.checkout.as_ref().is_some_and(|dir| dir.is_dir()) {
            return Ok(());
        }
        let existing = self
            .settings
            .cache_dir
            .join("work")
            .join(&record.id.0)
            .join("source");
        if existing.is_dir()
            && existing
                .read_dir()
                .is_ok_and(|mut entries| entries.next().is_some())
        {
            state.checkout = Some(existing);
            return Ok(());
        }
        let Some(Step::Source(source)) = plan.steps.first() else {
            return Err(StageFailure::new("the plan has no source step"));
        };
        self.events.emit(Event::Notice {
            stage: None,
            message: format!(
                "checking out {} again for the resumed run",
                state.sha.as_deref().unwrap_or(&source.reference)
            ),
        });
        let mut source = source.clone();
        source.expected_sha = state.sha.clone().or(source.expected_sha);
        self.source(&source, record, state).await.map(|_| ())
    }

    /// The repository a build's image goes to: the plan's, or for `--local` the bare image name
    /// (or the `--registry` given).
    fn repository_of(&self, planned: &str, image_name: &str) -> String {
        match (&self.settings.local_source, &self.settings.local_registry) {
            (Some(_), Some(registry)) => format!("{registry}/{image_name}"),
            (Some(_), None) => image_name.to_owned(),
            (None, _) => planned.to_owned(),
        }
    }

    async fn build(
        &self,
        step: &plan::BuildStep,
        plan: &Plan,
        record: &RunRecord,
        state: &mut RunState,
    ) -> Result<StepResult, StageFailure> {
        let docker = self.docker().await?;
        let checkout = state
            .checkout
            .clone()
            .ok_or_else(|| StageFailure::new("no source checkout: the source stage did not run"))?;
        crate::pipeline::paths::check_build_inputs(
            &self.compiled,
            &step.name,
            &checkout,
            &step.context,
            &step.dockerfile,
        )
        .map_err(StageFailure::new)?;
        let repository = self.repository_of(&step.repository, &step.image_name);
        let credentials = self.credentials_for(&repository).await?;
        let endpoint = self.endpoint_for(&repository);
        let secrets = self.resolve_secrets(step).await?;
        let request = build::BuildRequest {
            context_dir: checkout.join(&step.context),
            dockerfile: PathBuf::from(&step.dockerfile),
            target: step.target.clone(),
            platform: step.platform.clone(),
            build_args: step.build_args.clone(),
            secrets,
            labels: step.labels.clone(),
            tags: step
                .tags
                .iter()
                .map(|tag| format!("{repository}:{tag}"))
                .collect(),
            cache_from: if self.settings.is_local() && self.settings.local_registry.is_none() {
                Vec::new()
            } else {
                step.cache_from
                    .iter()
                    .map(|reference| {
                        with_endpoint(
                            reference,
                            &step.repository,
                            &repository,
                            endpoint.as_deref(),
                        )
                    })
                    .collect()
            },
            registry_auth: credentials
                .iter()
                .map(|c| build::RegistryCredentials {
                    server: endpoint.clone().unwrap_or_else(|| c.server.clone()),
                    ..c.clone()
                })
                .collect(),
            no_cache: false,
            idle_timeout: Some(Duration::from_secs(step.idle_timeout_seconds)),
        };
        let stage = step.name.clone();
        let events = self.events.clone();
        let progress = move |progress: build::BuildProgress| {
            if let Some(event) = build_event(&stage, progress) {
                events.emit(event);
            }
        };
        let output = match &step.buildspec {
            None => build::build(&docker, &request, &progress)
                .await
                .map_err(|error| {
                    let environment = error.is_environment();
                    StageFailure::of(error, environment)
                })?,
            Some(spec_plan) => {
                let spec = self
                    .compiled
                    .buildspecs
                    .get(&spec_plan.path)
                    .cloned()
                    .ok_or_else(|| {
                        StageFailure::new(format!("buildspec {} was not loaded", spec_plan.path))
                    })?;
                self.build_with_buildspec(
                    &spec, &docker, request, &checkout, plan, record, step, &progress, state,
                )
                .await?
            }
        };
        self.events.emit(Event::Output {
            stage: step.name.clone(),
            key: "image id".into(),
            value: output.image_id.clone(),
        });
        state
            .image_ids
            .insert(step.name.clone(), output.image_id.clone());
        Ok(StepResult::Done(StageOutputs {
            image_id: Some(output.image_id),
            exported: state.exported.clone(),
            ..StageOutputs::default()
        }))
    }

    #[allow(clippy::too_many_arguments)]
    async fn build_with_buildspec(
        &self,
        spec: &crate::buildspec::Buildspec,
        docker: &bollard::Docker,
        request: build::BuildRequest,
        checkout: &std::path::Path,
        plan: &Plan,
        record: &RunRecord,
        step: &plan::BuildStep,
        progress: &(dyn Fn(build::BuildProgress) + Send + Sync),
        state: &mut RunState,
    ) -> Result<build::BuildOutput, StageFailure> {
        let secret_env = match self.aws_if_needed(spec).await? {
            Some(config) => phases::resolve_secret_env(spec, &config)
                .await
                .map_err(|error| {
                    let environment = error.is_environment();
                    StageFailure::of(error, environment)
                })?,
            None => BTreeMap::new(),
        };
        self.events
            .redactor()
            .add_all(secret_env.values().map(Secret::expose));
        let start_ms = chrono::DateTime::parse_from_rfc3339(&record.created_at)
            .map(|t| t.timestamp_millis())
            .unwrap_or_default();
        let sha = plan.trigger.sha.clone().unwrap_or_default();
        let trigger = plan
            .trigger
            .tag
            .as_ref()
            .map(|tag| format!("tag/{tag}"))
            .or_else(|| {
                plan.trigger
                    .branch
                    .as_ref()
                    .map(|branch| format!("branch/{branch}"))
            });
        let run_id = record.id.0.clone();
        let env = phases::codebuild_variables(&phases::CodebuildFacts {
            source_dir: checkout,
            resolved_source_version: &sha,
            build_number: 1,
            project: &plan.pipeline,
            run_id: &run_id,
            start_time_ms: start_ms,
            initiator: &self.settings.user,
            webhook_trigger: trigger.as_deref(),
        });
        let context = phases::BuildspecContext {
            source_dir: checkout.to_path_buf(),
            env,
            secret_env,
        };
        let stage = step.name.clone();
        let events = self.events.clone();
        let on_progress = move |progress: phases::BuildspecProgress| {
            if let Some(event) = buildspec_event(&stage, progress) {
                events.emit(event);
            }
        };
        let built: Arc<tokio::sync::Mutex<Option<build::BuildOutput>>> = Arc::default();
        let build_error: Arc<tokio::sync::Mutex<Option<build::BuildError>>> = Arc::default();
        let (slot, error_slot) = (built.clone(), build_error.clone());
        let outcome = phases::run(spec, &context, &on_progress, move |_env| {
            Box::pin(async move {
                match build::build(docker, &request, progress).await {
                    Ok(output) => *slot.lock().await = Some(output),
                    Err(error) => {
                        let message = error.to_string();
                        *error_slot.lock().await = Some(error);
                        return Err(message);
                    }
                }
                Ok::<(), String>(())
            })
        })
        .await
        .map_err(|error| StageFailure::new(error.to_string()))?;
        state.exported.extend(outcome.exported.clone());
        if !outcome.succeeded {
            let (message, environment) =
                build::buildspec_failure(&outcome, build_error.lock().await.as_ref());
            return Err(StageFailure::of(message, environment));
        }
        let output = built.lock().await.take();
        output
            .ok_or_else(|| StageFailure::new("the buildspec finished but the image was not built"))
    }

    async fn push(
        &self,
        step: &plan::PushStep,
        state: &mut RunState,
    ) -> Result<StepResult, StageFailure> {
        let docker = self.docker().await?;
        let image_id = state.image_ids.get(&step.build).cloned().ok_or_else(|| {
            StageFailure::new(format!(
                "no image from stage `{}`: it did not run",
                step.build
            ))
        })?;
        let image_name = step
            .repository
            .rsplit('/')
            .next()
            .unwrap_or(&step.repository);
        let repository = self.repository_of(&step.repository, image_name);
        if !self.settings.is_local()
            && let Some(host) =
                push::ecr::parse_ecr_host(repository.split('/').next().unwrap_or(""))
        {
            let create = self.compiled.pipeline.stages.iter().any(|stage| {
                matches!(stage, crate::pipeline::model::Stage::Build(b) if b.create_repository == Some(true) && stage.name() == step.build)
            });
            let client = aws_sdk_ecr::Client::new(self.aws().await?);
            let path = repository
                .split_once('/')
                .map(|(_, p)| p)
                .unwrap_or(&repository);
            push::ecr::ensure_repository(
                &client,
                path,
                &push::ecr::RepositoryOptions {
                    registry_id: Some(host.account_id.clone()),
                    create_if_missing: create,
                    ..Default::default()
                },
            )
            .await
            .map_err(|error| {
                let environment = error.is_environment();
                StageFailure::of(error, environment)
            })?;
        }
        let request = push::PushRequest {
            local_image: image_id,
            repository: repository.clone(),
            tags: step.tags.clone(),
            credentials: self.credentials_for(&repository).await?,
            endpoint_override: self.endpoint_for(&repository),
        };
        let stage = step.name.clone();
        let events = self.events.clone();
        let progress = move |progress: push::PushProgress| {
            if let Some(event) = push_event(&stage, progress) {
                events.emit(event);
            }
        };
        let output = push::push(&docker, &request, &progress)
            .await
            .map_err(|error| {
                let environment = error.is_environment();
                StageFailure::of(error, environment)
            })?;
        self.events.emit(Event::Output {
            stage: step.name.clone(),
            key: "image".into(),
            value: output.image_ref.clone(),
        });
        self.events.emit(Event::Output {
            stage: step.name.clone(),
            key: "layers".into(),
            value: format!(
                "{} uploaded ({} bytes), {} already in the registry",
                output.layers_uploaded, output.bytes_uploaded, output.layers_skipped
            ),
        });
        state
            .images
            .insert(step.build.clone(), output.image_ref.clone());
        Ok(StepResult::Done(StageOutputs {
            digest: Some(output.digest),
            image: Some(output.image_ref),
            ..StageOutputs::default()
        }))
    }

    async fn approval(
        &self,
        step: &plan::ApprovalStep,
        plan: &Plan,
        record: &mut RunRecord,
        state: &RunState,
    ) -> Result<StepResult, StageFailure> {
        let run = record.id.clone();
        let started = record
            .stage(&step.name)
            .and_then(|s| s.started_at.clone())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_else(chrono::Utc::now);
        let deadline = started + chrono::Duration::seconds(step.timeout_seconds as i64);
        let mut announced = false;
        loop {
            let decision = self
                .store
                .approval(&run, &step.name)
                .await
                .map_err(|error| StageFailure::new(error.to_string()))?;
            if let Some(decision) = decision {
                return approval_verdict(&step.name, decision, &self.events);
            }
            if let Ok(Some(stopped)) = self.stopped_from_outside(record).await {
                return Ok(StepResult::Stopped(stopped));
            }
            if chrono::Utc::now() >= deadline {
                return Err(StageFailure {
                    status: RunStatus::Rejected,
                    ..StageFailure::new(format!(
                        "approval timed out after {}: nothing after the gate ran",
                        step.timeout
                    ))
                });
            }
            if !announced {
                announced = true;
                let stage = record.stage_mut(&step.name).expect("stage exists");
                stage.status = StageStatus::Waiting;
                let stage = stage.clone();
                self.save_stage(&run, &stage)
                    .await
                    .map_err(|error| StageFailure::new(error.to_string()))?;
                self.events.emit(Event::AwaitingApproval {
                    stage: step.name.clone(),
                    run: run.clone(),
                });
                if stage.outputs.notified.is_none() {
                    let mut notice = self.approval_notice(step, plan, record, state, deadline);
                    if step.notify_sns.is_some() || step.notify_webhook.is_some() {
                        self.task_definition_changes(step, plan, state, &mut notice)
                            .await;
                    }
                    let (sent, warnings) = self.notify(step, &notice).await;
                    if !sent.is_empty() || !warnings.is_empty() {
                        let stage = record.stage_mut(&step.name).expect("stage exists");
                        if !sent.is_empty() {
                            stage.outputs.notified =
                                Some(format!("{} at {}", sent.join(", "), now()));
                        }
                        stage.outputs.warnings.extend(warnings);
                        let stage = stage.clone();
                        self.save_stage(&run, &stage)
                            .await
                            .map_err(|error| StageFailure::new(error.to_string()))?;
                    }
                }
                let _ = self.flush_events(&run).await;
                if self
                    .settings
                    .until
                    .as_deref()
                    .is_some_and(|u| u == step.name || u == "approval")
                {
                    return Ok(StepResult::Waiting);
                }
            }
            let remaining = (deadline - chrono::Utc::now()).to_std().unwrap_or_default();
            tokio::time::sleep(
                self.settings
                    .approval_poll
                    .min(remaining.max(Duration::from_millis(10))),
            )
            .await;
        }
    }

    async fn ecs(&self) -> Result<&ecs::EcsAws, StageFailure> {
        let config = self.aws().await?.clone();
        Ok(self
            .ecs
            .get_or_init(|| async move { ecs::EcsAws::new(&config) })
            .await)
    }

    /// Save what a stage did so far, so a process killed mid-stage resumes without redoing it.
    async fn checkpoint(
        &self,
        record: &mut RunRecord,
        stage: &str,
        update: impl FnOnce(&mut StageOutputs),
    ) -> Result<(), StageFailure> {
        let entry = record.stage_mut(stage).expect("stage exists");
        update(&mut entry.outputs);
        let entry = entry.clone();
        self.save_stage(&record.id, &entry)
            .await
            .map_err(|error| StageFailure::environment(error.to_string()))
    }

    fn built_images(&self, state: &RunState) -> Result<Vec<String>, StageFailure> {
        if state.images.is_empty() {
            return Err(StageFailure::new(
                "no pushed image: the build and push stages did not run",
            ));
        }
        Ok(state.images.values().cloned().collect())
    }

    async fn migrate(
        &self,
        step: &plan::MigrateStep,
        plan: &Plan,
        record: &mut RunRecord,
        state: &RunState,
    ) -> Result<StepResult, StageFailure> {
        let aws = self.ecs().await?;
        let request = ecs::migrate::MigrationRequest {
            cluster: step.cluster.clone(),
            service: step.service.clone(),
            container: step.container.clone(),
            command: step.command.clone(),
            images: self.built_images(state)?,
            run_id: record.id.0.clone(),
            pipeline: plan.pipeline.clone(),
            stage: step.name.clone(),
            timeout: Duration::from_secs(step.timeout_seconds),
            poll: ecs::PollSchedule::MIGRATION,
        };
        let recorded = record
            .stage(&step.name)
            .map(|stage| ecs::migrate::MigrationRecord {
                task_definition: stage.outputs.task_definitions.get(&step.service).cloned(),
                task_arn: stage.outputs.task_arn.clone(),
            })
            .unwrap_or_default();
        let stage = step.name.clone();
        let events = self.events.clone();
        let progress = move |progress: ecs::migrate::MigrationProgress| {
            use ecs::migrate::MigrationProgress as P;
            events.emit(match progress {
                P::Registered {
                    task_definition,
                    diff,
                } => Event::Output {
                    stage: stage.clone(),
                    key: "task definition".into(),
                    value: format!("{task_definition} ({diff})"),
                },
                P::Started {
                    task_arn,
                    reattached,
                } => Event::Output {
                    stage: stage.clone(),
                    key: if reattached {
                        "task (re-attached)".into()
                    } else {
                        "task".into()
                    },
                    value: task_arn,
                },
                P::Status { status, .. } => Event::Log {
                    stage: stage.clone(),
                    line: format!("task {status}"),
                },
                P::Log { line } => Event::Log {
                    stage: stage.clone(),
                    line,
                },
                P::Notice { message } => Event::Notice {
                    stage: Some(stage.clone()),
                    message,
                },
            });
        };
        let lease = self.gate_lease.lock().expect("gate lease lock").clone();
        let mut migration = ecs::migrate::Migration::new(aws, &request, recorded)
            .fenced(lease.as_ref().map(|l| l as &dyn ecs::fence::Fence));
        let ecs_failure = |error: ecs::EcsError| {
            let environment = error.is_environment();
            StageFailure::of(error, environment)
        };
        migration.register(&progress).await.map_err(ecs_failure)?;
        let saved = migration.record().clone();
        let service = step.service.clone();
        self.checkpoint(record, &step.name, |outputs| {
            if let Some(definition) = &saved.task_definition {
                outputs.task_definitions.insert(service, definition.clone());
            }
        })
        .await?;
        migration.start(&progress).await.map_err(ecs_failure)?;
        let saved = migration.record().clone();
        self.checkpoint(record, &step.name, |outputs| {
            outputs.task_arn = saved.task_arn.clone()
        })
        .await?;
        let outcome = migration.wait(&progress).await.map_err(|error| {
            let mut failure = ecs_failure(error);
            let mut outputs = record
                .stage(&step.name)
                .map(|s| s.outputs.clone())
                .unwrap_or_default();
            outputs.task_arn = migration.record().task_arn.clone();
            failure.outputs = Some(outputs);
            failure
        })?;
        let mut outputs = record
            .stage(&step.name)
            .map(|s| s.outputs.clone())
            .unwrap_or_default();
        outputs.task_arn = Some(outcome.task_arn);
        outputs.exit_code = Some(outcome.exit_code);
        outputs
            .task_definitions
            .insert(step.service.clone(), outcome.task_definition);
        Ok(StepResult::Done(outputs))
    }

    async fn deploy(
        &self,
        step: &plan::DeployStep,
        record: &mut RunRecord,
        state: &RunState,
    ) -> Result<StepResult, StageFailure> {
        let aws = self.ecs().await?;
        let timeout = Duration::from_secs(step.timeout_seconds);
        let request = ecs::deploy::DeployRequest {
            cluster: step.cluster.clone(),
            services: step.services.clone(),
            images: self.built_images(state)?,
            run_id: record.id.0.clone(),
            stage: step.name.clone(),
            timeout,
            rollback_timeout: timeout,
            on_failure: step.on_failure,
            poll: ecs::PollSchedule::DEPLOY,
        };
        let recorded = record
            .stage(&step.name)
            .map(|stage| ecs::deploy::DeployRecord {
                previous_task_definitions: stage.outputs.previous_task_definitions.clone(),
                task_definitions: stage.outputs.task_definitions.clone(),
                deployments: stage.outputs.deployments.clone(),
            })
            .unwrap_or_default();
        let stage = step.name.clone();
        let events = self.events.clone();
        let progress = move |progress: ecs::deploy::DeployProgress| {
            use ecs::deploy::DeployProgress as P;
            let event = match progress {
                P::Preflight(preflight) => Event::Log {
                    stage: stage.clone(),
                    line: format!(
                        "{}: {} of {} running on {}; circuit breaker {}",
                        preflight.service,
                        preflight.running,
                        preflight.desired,
                        preflight.task_definition,
                        match preflight.circuit_breaker {
                            Some(breaker) if breaker.rollback => "on (with rollback)",
                            Some(_) => "on (without rollback)",
                            None => "off",
                        }
                    ),
                },
                P::Registered {
                    service,
                    task_definition,
                    diff,
                } => Event::Output {
                    stage: stage.clone(),
                    key: format!("{service} task definition"),
                    value: format!("{task_definition} ({diff})"),
                },
                P::Updated {
                    service,
                    phase,
                    deployment_id,
                } => Event::Output {
                    stage: stage.clone(),
                    key: format!(
                        "{service} {}",
                        match phase {
                            ecs::deploy::Phase::Deploy => "deployment",
                            ecs::deploy::Phase::Rollback => "rollback",
                        }
                    ),
                    value: deployment_id,
                },
                P::Rollout(rollout) => Event::ServiceProgress {
                    stage: stage.clone(),
                    service: rollout.service,
                    running: rollout.new.running,
                    desired: rollout.new.desired,
                    pending: rollout.new.pending,
                    rollout: if rollout.old.running > 0 {
                        format!(
                            "{} (old deployment: {} running)",
                            rollout.rollout_state, rollout.old.running
                        )
                    } else {
                        rollout.rollout_state
                    },
                },
                P::ServiceEvent {
                    service, message, ..
                } => Event::Log {
                    stage: stage.clone(),
                    line: format!("{service}: {message}"),
                },
                P::Finished {
                    service,
                    phase,
                    outcome,
                } => Event::Log {
                    stage: stage.clone(),
                    line: match (phase, outcome) {
                        (ecs::deploy::Phase::Deploy, Ok(())) => format!("{service}: deployed"),
                        (ecs::deploy::Phase::Rollback, Ok(())) => {
                            format!("{service}: rolled back to its previous revision")
                        }
                        (_, Err(failure)) => format!("{service}: {failure}"),
                    },
                },
                P::RollbackStarted { reason } => Event::Notice {
                    stage: Some(stage.clone()),
                    message: format!("rolling back every service of the release: {reason}"),
                },
            };
            events.emit(event);
        };
        let lease = self.gate_lease.lock().expect("gate lease lock").clone();
        let mut deploy = ecs::deploy::Deploy::new(aws, &request, recorded)
            .fenced(lease.as_ref().map(|l| l as &dyn ecs::fence::Fence));
        let save = |outputs: &mut StageOutputs, record: &ecs::deploy::DeployRecord| {
            outputs.previous_task_definitions = record.previous_task_definitions.clone();
            outputs.task_definitions = record.task_definitions.clone();
            outputs.deployments = record.deployments.clone();
        };
        let ecs_failure = |error: ecs::EcsError| {
            let environment = error.is_environment();
            StageFailure::of(error, environment)
        };
        deploy.prepare(&progress).await.map_err(ecs_failure)?;
        let saved = deploy.record().clone();
        self.checkpoint(record, &step.name, |outputs| save(outputs, &saved))
            .await?;
        let updated = deploy.update(&progress).await;
        let saved = deploy.record().clone();
        self.checkpoint(record, &step.name, |outputs| save(outputs, &saved))
            .await?;
        updated.map_err(ecs_failure)?;
        match deploy.wait(&progress).await {
            Ok(_) => {
                let mut outputs = record
                    .stage(&step.name)
                    .map(|s| s.outputs.clone())
                    .unwrap_or_default();
                save(&mut outputs, deploy.record());
                Ok(StepResult::Done(outputs))
            }
            Err(error) => {
                let mut failure = ecs_failure(error);
                let mut outputs = record
                    .stage(&step.name)
                    .map(|s| s.outputs.clone())
                    .unwrap_or_default();
                save(&mut outputs, deploy.record());
                failure.outputs = Some(outputs);
                Err(failure)
            }
        }
    }

    /// What the approver is asked to approve: release, images, migration, service changes.
    fn approval_notice(
        &self,
        step: &plan::ApprovalStep,
        plan: &Plan,
        record: &RunRecord,
        state: &RunState,
        deadline: chrono::DateTime<chrono::Utc>,
    ) -> notify::ApprovalNotice {
        let after_gate = plan
            .steps
            .iter()
            .skip_while(|s| s.name() != step.name)
            .skip(1);
        let mut migration = None;
        let mut services = Vec::new();
        for later in after_gate {
            match later {
                Step::Migrate(m) if migration.is_none() => migration = Some(m.command.clone()),
                Step::Deploy(d) => {
                    for service in &d.services {
                        services.push(notify::ServiceChange {
                            service: service.clone(),
                            changes: state
                                .images
                                .values()
                                .map(|image| format!("image → {image}"))
                                .collect(),
                        });
                    }
                }
                _ => {}
            }
        }
        notify::ApprovalNotice {
            pipeline: plan.pipeline.clone(),
            run: record.id.0.clone(),
            stage: step.name.clone(),
            git_ref: plan.trigger.git_ref.clone(),
            release: plan.trigger.tag.clone(),
            commit: plan.trigger.sha.clone(),
            images: state.images.values().cloned().collect(),
            migration,
            services,
            approve_with: format!("envelope-runner approve {}", record.id),
            expires_at: deadline.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }

    /// Replace the notice's per-service changes with the real task definition diff of each
    /// service the release deploys (image before → after, anything else that changes). When
    /// ECS cannot be asked, the planned image change stays and a notice says why.
    async fn task_definition_changes(
        &self,
        step: &plan::ApprovalStep,
        plan: &Plan,
        state: &RunState,
        notice: &mut notify::ApprovalNotice,
    ) {
        let images: Vec<String> = state.images.values().cloned().collect();
        let deploys = plan
            .steps
            .iter()
            .skip_while(|s| s.name() != step.name)
            .filter_map(|s| match s {
                Step::Deploy(deploy) => Some(deploy.clone()),
                _ => None,
            })
            .collect::<Vec<_>>();
        if deploys.is_empty() || images.is_empty() {
            return;
        }
        let aws = match self.ecs().await {
            Ok(aws) => aws,
            Err(_) => return,
        };
        let mut services = Vec::new();
        for deploy in deploys {
            match ecs::deploy::preview(aws, &deploy.cluster, &deploy.services, &images).await {
                Ok(diffs) => {
                    for (service, diff) in diffs {
                        let mut changes: Vec<String> = diff
                            .images
                            .iter()
                            .map(|c| {
                                format!(
                                    "container {}: image {} → {}",
                                    c.container, c.before, c.after
                                )
                            })
                            .collect();
                        changes.extend(
                            diff.other
                                .iter()
                                .map(|c| format!("{}: {} → {}", c.field, c.before, c.after)),
                        );
                        if changes.is_empty() {
                            changes.push("no change".into());
                        }
                        services.push(notify::ServiceChange { service, changes });
                    }
                }
                Err(error) => {
                    self.events.emit(Event::Notice {
                        stage: Some(step.name.clone()),
                        message: format!(
                            "the approval notice shows planned image changes only: {error}"
                        ),
                    });
                    return;
                }
            }
        }
        notice.services = services;
    }

    /// Send the gate's notifications: where they went, and a warning line for each that could
    /// not be sent. A failure is loud (a warning in every output mode and in the stage's
    /// record) but never fatal: the gate still works.
    async fn notify(
        &self,
        step: &plan::ApprovalStep,
        notice: &notify::ApprovalNotice,
    ) -> (Vec<String>, Vec<String>) {
        let mut sent = Vec::new();
        let mut warnings = Vec::new();
        // Approvers read the notice outside the run: it carries no secret either.
        let Some(notice) = self.events.redactor().redact_texts(notice) else {
            let message =
                "approvers were not told: the approval notice could not be checked for secrets"
                    .to_owned();
            self.events.emit(Event::Warning {
                stage: Some(step.name.clone()),
                message: message.clone(),
            });
            return (sent, vec![message]);
        };
        let notice = &notice;
        let mut warn = |error: notify::NotifyError| {
            let message = error.to_string();
            self.events.emit(Event::Warning {
                stage: Some(step.name.clone()),
                message: message.clone(),
            });
            warnings.push(message);
        };
        if let Some(topic) = &step.notify_sns {
            let result = match self.aws().await {
                Ok(config) => notify::publish_sns(config, topic, notice).await,
                Err(failure) => Err(notify::NotifyError::Sns {
                    topic: topic.clone(),
                    detail: failure.message,
                }),
            };
            match result {
                Ok(message) => {
                    self.events.emit(Event::Log {
                        stage: step.name.clone(),
                        line: format!("notified SNS topic {topic} (message {message})"),
                    });
                    sent.push(format!("sns:{topic}"));
                }
                Err(error) => warn(error),
            }
        }
        if let Some(url) = &step.notify_webhook {
            match notify::post_webhook(url, notice).await {
                Ok(()) => {
                    self.events.emit(Event::Log {
                        stage: step.name.clone(),
                        line: format!("notified the webhook at {}", crate::redact::url_origin(url)),
                    });
                    sent.push(format!("webhook:{}", crate::redact::url_origin(url)));
                }
                Err(error) => warn(error),
            }
        }
        (sent, warnings)
    }

    async fn docker(&self) -> Result<bollard::Docker, StageFailure> {
        self.docker
            .get_or_try_init(|| async {
                // DOCKER_HOST as the Docker CLI reads it: unix://, tcp://, https://.
                let docker = match std::env::var("DOCKER_HOST") {
                    Ok(host) if !host.is_empty() => bollard::Docker::connect_with_host(&host),
                    _ => bollard::Docker::connect_with_local_defaults(),
                }
                .map_err(docker_unreachable)?;
                docker.negotiate_version().await.map_err(docker_unreachable)
            })
            .await
            .cloned()
    }

    async fn aws(&self) -> Result<&aws_config::SdkConfig, StageFailure> {
        self.aws
            .get_or_try_init(|| async {
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .timeout_config(crate::timeouts::aws_config());
                if let Some(region) = self.region.get().or(self.compiled.aws.region.as_ref()) {
                    loader = loader.region(aws_config::Region::new(region.clone()));
                }
                Ok::<_, StageFailure>(loader.load().await)
            })
            .await
    }

    async fn aws_if_needed(
        &self,
        spec: &crate::buildspec::Buildspec,
    ) -> Result<Option<aws_config::SdkConfig>, StageFailure> {
        let needs = spec
            .env
            .as_ref()
            .is_some_and(|env| !env.secrets_manager.is_empty() || !env.parameter_store.is_empty());
        Ok(if needs {
            Some(self.aws().await?.clone())
        } else {
            None
        })
    }

    /// Registry credentials: ECR's token for an ECR host, else `ENVELOPE_REGISTRY_USERNAME` /
    /// `ENVELOPE_REGISTRY_PASSWORD` (or `_PASSWORD_FILE`) when set.
    async fn credentials_for(
        &self,
        repository: &str,
    ) -> Result<Option<push::RegistryCredentials>, StageFailure> {
        let host = repository.split('/').next().unwrap_or("");
        if push::ecr::parse_ecr_host(host).is_some() {
            let config = self.aws().await?.clone();
            let auth = self
                .ecr_auth
                .get_or_init(|| async {
                    push::ecr::EcrAuth::new(aws_sdk_ecr::Client::new(&config))
                })
                .await;
            let mut credentials = auth.credentials().await.map_err(|error| {
                let environment = error.is_environment();
                StageFailure::of(error, environment)
            })?;
            credentials.server = host.to_owned();
            self.events
                .redactor()
                .add_basic_auth(&credentials.username, credentials.password.expose());
            return Ok(Some(credentials));
        }
        let username = std::env::var("ENVELOPE_REGISTRY_USERNAME").ok();
        let password = std::env::var("ENVELOPE_REGISTRY_PASSWORD")
            .ok()
            .or_else(|| {
                std::env::var("ENVELOPE_REGISTRY_PASSWORD_FILE")
                    .ok()
                    .and_then(|path| std::fs::read_to_string(path).ok())
                    .map(|text| text.trim_end().to_owned())
            });
        if let (Some(username), Some(password)) = (&username, &password) {
            self.events.redactor().add_basic_auth(username, password);
        }
        Ok(match (username, password) {
            (Some(username), Some(password)) => Some(push::RegistryCredentials {
                server: host.to_owned(),
                username,
                password: Secret::new(password),
                expires_at: None,
            }),
            _ => None,
        })
    }

    fn endpoint_for(&self, repository: &str) -> Option<String> {
        let host = repository.split('/').next().unwrap_or("");
        self.settings
            .registry_endpoint
            .clone()
            .filter(|endpoint| !endpoint.is_empty() && endpoint != host)
    }

    async fn resolve_secrets(
        &self,
        step: &plan::BuildStep,
    ) -> Result<Vec<build::BuildSecret>, StageFailure> {
        let mut secrets = Vec::new();
        for reference in &step.secrets {
            let (kind, name) = reference.from.split_once(':').unwrap_or(("", ""));
            let value = match kind {
                "env" => std::env::var(name).map_err(|_| {
                    StageFailure::new(format!(
                        "build secret `{}` reads environment variable {name}, which is not set; export it before the run",
                        reference.id
                    ))
                })?,
                "file" => crate::pipeline::paths::read_secret_file(
                    &self.compiled,
                    &step.name,
                    &reference.id,
                    name,
                )
                .map_err(StageFailure::new)?,
                "aws_secret" => {
                    let client = aws_sdk_secretsmanager::Client::new(self.aws().await?);
                    let answer = client.get_secret_value().secret_id(name).send().await.map_err(|error| {
                        let read = crate::aws_error::AwsFailure::during(&error, "Secrets Manager GetSecretValue");
                        StageFailure::of(
                            format!("build secret `{}`: cannot read AWS secret {name}: {read}", reference.id),
                            read.is_environment(),
                        )
                    })?;
                    match (answer.secret_string(), answer.secret_binary()) {
                        (Some(text), _) => text.to_owned(),
                        (None, Some(_)) => return Err(StageFailure::new(format!(
                            "build secret `{}`: AWS secret {name} is stored as SecretBinary, which is never handed to a build; store it as SecretString (text) instead",
                            reference.id
                        ))),
                        (None, None) => String::new(),
                    }
                }
                _ => return Err(StageFailure::new(format!("build secret `{}` has no source", reference.id))),
            };
            self.events.redactor().add(&value);
            secrets.push(build::BuildSecret {
                id: reference.id.clone(),
                value: Secret::new(value),
            });
        }
        Ok(secrets)
    }
}

enum StepResult {
    Done(StageOutputs),
    Waiting,
    /// Stopped from outside (superseded or cancelled by another process) while waiting.
    Stopped(RunOutcome),
}

enum GateResult {
    Held(GateLease),
    Stopped(RunOutcome),
}

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

fn approval_verdict(
    stage: &str,
    decision: ApprovalRecord,
    events: &EventSink,
) -> Result<StepResult, StageFailure> {
    let comment = decision
        .comment
        .as_deref()
        .map(|c| format!(": {c}"))
        .unwrap_or_default();
    if decision.approved {
        events.emit(Event::Output {
            stage: stage.to_owned(),
            key: "approved".into(),
            value: format!("by {} at {}{comment}", decision.by, decision.at),
        });
        Ok(StepResult::Done(StageOutputs {
            approval: Some(decision),
            ..StageOutputs::default()
        }))
    } else {
        Err(StageFailure {
            status: RunStatus::Rejected,
            ..StageFailure::new(format!(
                "rejected by {} at {}{comment}; nothing after the gate ran",
                decision.by, decision.at
            ))
        })
    }
}

fn docker_unreachable(error: bollard::errors::Error) -> StageFailure {
    let host = std::env::var("DOCKER_HOST")
        .ok()
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
    StageFailure::environment(format!(
        "cannot reach the Docker daemon at {host} ({}); start Docker, or set DOCKER_HOST to a \
         running daemon, and run again",
        crate::error_chain(&error)
    ))
}

/// Point a registry reference at the endpoint override and the run's repository.
fn with_endpoint(
    reference: &str,
    planned_repository: &str,
    repository: &str,
    endpoint: Option<&str>,
) -> String {
    let reference = match reference.strip_prefix(planned_repository) {
        Some(rest) => format!("{repository}{rest}"),
        None => reference.to_owned(),
    };
    match endpoint {
        Some(endpoint) => match reference.split_once('/') {
            Some((_, path)) => format!("{endpoint}/{path}"),
            None => reference,
        },
        None => reference,
    }
}

fn build_event(stage: &str, progress: build::BuildProgress) -> Option<Event> {
    match progress {
        // A cache that is not there yet fails its import step, not the build.
        build::BuildProgress::Step {
            name,
            error: Some(error),
            ..
        } if name.starts_with(build::CACHE_IMPORT_STEP) => Some(Event::Log {
            stage: stage.to_owned(),
            line: format!("{name}: {error}; the build goes on without that cache"),
        }),
        build::BuildProgress::Step {
            name,
            cached,
            completed,
            duration,
            error,
            ..
        } => Some(Event::BuildStep {
            stage: stage.to_owned(),
            step: name,
            cached,
            completed,
            seconds: duration.map(|d| d.as_secs_f64()),
            error: error.as_deref().map(build::step_reason),
        }),
        build::BuildProgress::Log { line, .. } => Some(Event::Log {
            stage: stage.to_owned(),
            line,
        }),
        build::BuildProgress::Warning { step, message } => Some(Event::Notice {
            stage: Some(stage.to_owned()),
            message: format!("{step}: {message}"),
        }),
        build::BuildProgress::Status { .. } => None,
    }
}

fn buildspec_event(stage: &str, progress: phases::BuildspecProgress) -> Option<Event> {
    let line = match progress {
        phases::BuildspecProgress::PhaseStarted { phase } => format!("phase {phase} started"),
        phases::BuildspecProgress::Command { command, .. } => format!("$ {command}"),
        phases::BuildspecProgress::Line { line, .. } => line,
        phases::BuildspecProgress::PhaseFinished {
            phase,
            status,
            seconds,
        } => {
            format!("phase {phase} {status} in {seconds:.1}s")
        }
        phases::BuildspecProgress::Notice { message } => {
            return Some(Event::Notice {
                stage: Some(stage.to_owned()),
                message,
            });
        }
    };
    Some(Event::Log {
        stage: stage.to_owned(),
        line,
    })
}

fn push_event(stage: &str, progress: push::PushProgress) -> Option<Event> {
    use push::PushProgress as P;
    let line = match progress {
        P::TagStarted { target, attempt: 1 } => format!("pushing {target}"),
        P::TagStarted { target, attempt } => format!("pushing {target} (attempt {attempt})"),
        P::LayerUploaded => "layer uploaded".to_owned(),
        P::LayerSkipped {
            mounted_from: Some(from),
        } => format!("layer mounted from {from}"),
        P::LayerSkipped { mounted_from: None } => "layer already in the registry".to_owned(),
        P::LayerRetrying { message } => message,
        P::TagPushed { tag, digest } => format!("pushed {tag} as {digest}"),
        P::Retrying {
            target,
            failed_attempt,
            delay,
            reason,
        } => format!(
            "push of {target} failed (attempt {failed_attempt}: {reason}); retrying in {:.1}s",
            delay.as_secs_f64()
        ),
        P::Verified { tag, digest } => format!("registry resolves {tag} to {digest}"),
        P::LayerUploading { .. } => return None,
    };
    Some(Event::Log {
        stage: stage.to_owned(),
        line,
    })
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The commit of a local working tree, marked `-dirty` when it has changes.
fn local_head(path: &std::path::Path) -> Option<String> {
    let repository = git2::Repository::discover(path).ok()?;
    let sha = repository
        .head()
        .ok()?
        .peel_to_commit()
        .ok()?
        .id()
        .to_string();
    Some(sha)
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

fn plan_context(record: &RunRecord) -> PlanContext {
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
fn build_outputs(state: &RunState) -> BTreeMap<String, String> {
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
fn restore_state(record: &RunRecord) -> RunState {
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
