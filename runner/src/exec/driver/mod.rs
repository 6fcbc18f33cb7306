//! The driver takes a run through its steps: it records every stage transition in the store
//! before and after the work, skips stages a resumed run already finished, and turns each
//! stage's outcome into the run's verdict.
//!
//! This file holds the run-lifecycle API the CLI and the agent use (start, resume, retry,
//! supersede) and the types the parts share; `carry` the runs that deploy an earlier run's
//! images (roll back, promote); `execute` is the run loop, `steps`
//! one module per stage kind, `clients`/`secrets` what stages need from outside,
//! `progress` the stages' events, `state` the pure bookkeeping, `verdict` what a stage's
//! result makes of the stage and the run, `notify` sending notifications and `run_end` telling
//! how a run ended. Every time a run records (creation, stage start and end, approval
//! deadlines, the end of the run) is read from `RunSettings::clock`.

mod carry;
mod clients;
mod deploy_lock;
#[cfg(test)]
mod deploy_lock_tests;
mod diff;
mod execute;
mod gate;
mod notify;
mod progress;
mod run_end;
mod secrets;
mod state;
mod steps;
mod verdict;

pub use diff::{DiffReport, pushed_images};
pub use gate::{GateRefusal, gate_to_decide};
use state::{context_record, gate_index, pending_stages};
use state::{plan_context, timestamp};
pub use steps::approval_deadline;
pub(crate) use steps::local_head;

use crate::event::Event;
use crate::exec::lease::GateLease;
use crate::exec::{aws_target, ecs, push};
use crate::pipeline::CompiledPipeline;
use crate::plan::{self, PlanContext};
use crate::report::EventSink;
use crate::run::{RunId, RunRecord, RunStatus, RunTrigger, StageOutputs, StageStatus};
use crate::store::{Clock, Store};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
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
    /// Build secret values by id that replace the source the pipeline declares for them
    /// (`run --local --secret`); the driver adds them to the redactor.
    pub build_secrets: BTreeMap<String, crate::secret::Secret>,
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
    /// Where the run reads the time it records (run creation, stage starts and ends) and
    /// measures approval deadlines against: the store's clock ([`Store::clock`]), or
    /// [`Clock::system`]. Waits still sleep on tokio's timer, so a test can move both.
    pub clock: Clock,
    /// The run's page, for the notification at its end: `{run}` stands for the run id (the
    /// agent's `<public_url>/runs/{run}`, a GitHub Actions workflow run's URL).
    pub run_link: Option<String>,
}

impl RunSettings {
    pub fn is_local(&self) -> bool {
        self.local_source.is_some()
    }

    /// Settings for a driver test: a run by `user` on `store`'s clock, caching under `dir`.
    #[cfg(test)]
    pub(crate) fn for_tests(
        dir: &std::path::Path,
        store: &dyn Store,
        user: &str,
        approval_poll: Duration,
        lease_ttl: Duration,
    ) -> RunSettings {
        RunSettings {
            cache_dir: dir.join("cache"),
            until: None,
            local_source: None,
            local_registry: None,
            registry_endpoint: None,
            user: user.into(),
            approval_poll,
            lease_ttl,
            cancel: tokio_util::sync::CancellationToken::new(),
            region: None,
            clock: store.clock(),
            build_secrets: Default::default(),
            run_link: None,
        }
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

impl RunOutcome {
    /// An outcome that is neither the environment's fault nor a lost lock.
    fn of(run: RunId, status: RunStatus, stage: Option<String>, error: Option<String>) -> Self {
        RunOutcome {
            run,
            status,
            stage,
            error,
            environment: false,
            lock_lost: false,
        }
    }
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
    #[error("run {0} pushed no image, so there is nothing to promote; pick a run that succeeded")]
    NothingToPromote(RunId),
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
    outputs: Option<Box<StageOutputs>>,
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
    docker: OnceCell<(bollard::Docker, crate::exec::docker_host::DockerTarget)>,
    /// `config.json` of the Docker CLI (registry credentials), read when first needed.
    docker_config: OnceCell<crate::exec::docker_config::DockerConfig>,
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
        events.redactor().add_all(
            settings
                .build_secrets
                .values()
                .map(crate::secret::Secret::expose),
        );
        Driver {
            compiled,
            store,
            settings,
            events,
            docker: OnceCell::new(),
            docker_config: OnceCell::new(),
            aws: OnceCell::new(),
            ecr_auth: OnceCell::new(),
            ecs: OnceCell::new(),
            region: std::sync::OnceLock::new(),
            gate_lease: std::sync::Mutex::new(None),
        }
    }

    /// The settings' clock's time, as run records write it.
    fn now(&self) -> String {
        timestamp(&self.settings.clock)
    }

    /// Create a run record for this trigger and execute it.
    pub async fn start(
        &self,
        trigger: RunTrigger,
        mut context: PlanContext,
    ) -> Result<RunOutcome, DriverError> {
        let id = RunId::new();
        context.run_id = Some(id.0.clone());
        context.created.get_or_insert_with(|| self.now());
        self.settle_aws(&mut context).await?;
        let record = self
            .create(id, trigger, context.clone(), RunStatus::Running)
            .await?;
        self.execute(record, context).await
    }

    /// Write a new run under `id` without executing it (the agent queues runs this way and
    /// executes them with [`Driver::resume`]). The trigger is planned first, so one the
    /// pipeline cannot run is refused ([`DriverError::Plan`]) before anything is written; an
    /// id already in the store is [`crate::store::StoreError::RunExists`]. Then the record
    /// (with `status`), in `superseded` mode older runs marked superseded (a store that fails
    /// at that is a notice, not an error: the deploy lease still keeps runs apart), and the
    /// `run_started` event, written to the store at once.
    pub async fn create(
        &self,
        id: RunId,
        trigger: RunTrigger,
        mut context: PlanContext,
        status: RunStatus,
    ) -> Result<RunRecord, DriverError> {
        context.run_id = Some(id.0.clone());
        let created = context.created.get_or_insert_with(|| self.now()).clone();
        let plan = plan::plan(&self.compiled, &context)?;
        let record = RunRecord {
            id: id.clone(),
            pipeline: self.compiled.run_key(),
            status,
            trigger,
            created_at: created,
            finished_at: None,
            context: context_record(&context),
            stages: pending_stages(&plan),
        };
        self.store.create_run(&record).await?;
        if plan.concurrency == crate::pipeline::model::Concurrency::Superseded
            && let Err(error) = self.supersede_older_runs(&record, gate_index(&plan)).await
        {
            self.events.emit(Event::Notice {
                stage: None,
                message: format!(
                    "cannot mark older runs of `{}` superseded: {error}",
                    record.pipeline
                ),
            });
        }
        self.events.emit(Event::RunStarted {
            run: id,
            pipeline: record.pipeline.clone(),
            git_ref: record.trigger.git_ref.clone(),
        });
        self.flush_events(&record.id).await?;
        Ok(record)
    }

    /// Mark older runs of this pipeline that have not passed the approval gate superseded;
    /// they stop at their next stage boundary or while waiting for approval. Each is one
    /// conditional write that leaves a run already past its gate alone.
    async fn supersede_older_runs(
        &self,
        newer: &RunRecord,
        gate: usize,
    ) -> Result<(), DriverError> {
        let older = self
            .store
            .list_runs(Some(&self.compiled.run_key()), 200, Some(&newer.id))
            .await?;
        for summary in older {
            if !matches!(
                summary.status,
                RunStatus::Running | RunStatus::Waiting | RunStatus::Queued
            ) {
                continue;
            }
            if self
                .store
                .supersede_run(&summary.id, gate, &self.now())
                .await?
            {
                self.events.emit(Event::Notice {
                    stage: None,
                    message: format!("run {} superseded by this newer run", summary.id),
                });
            }
        }
        Ok(())
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
        if record.pipeline != self.compiled.run_key() {
            return Err(DriverError::WrongPipeline {
                run: id.clone(),
                found: record.pipeline,
                expected: self.compiled.run_key(),
            });
        }
        let context = plan_context(&record);
        let seen = self.store.events(id, None, usize::MAX).await?;
        self.events
            .start_at(seen.last().map(|(seq, _)| seq + 1).unwrap_or(1));
        self.events.emit(Event::Notice {
            stage: None,
            message: state::resume_notice(&record),
        });
        self.execute(record, context).await
    }
}

#[derive(Debug)]
enum StepResult {
    /// Boxed: the outputs are several times the size of the other variants.
    Done(Box<StageOutputs>),
    Waiting,
    /// Stopped from outside (superseded or cancelled by another process) while waiting.
    Stopped(RunOutcome),
}

enum GateResult {
    Held(GateLease),
    Stopped(RunOutcome),
}
