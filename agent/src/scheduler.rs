//! Starting and resuming runs.
//!
//! - **One run per release.** A release is claimed in the store (`claim_trigger`) under
//!   `release:<owner/repo>:<release id>` with the id of the run about to be created; only the
//!   first claim anywhere creates a run. An agent that dies between the claim and the run
//!   record leaves an orphan claim; the run id in it is a ULID, so its age is known, and an
//!   old orphan is adopted by creating the run under exactly that id (`create_run` succeeds
//!   once).
//! - **One agent per run.** A run is worked on under the lease `run:<id>`, renewed while held.
//!   A run waiting at an approval gate holds no lease and no execution slot: it is parked, and
//!   resumed (by whichever agent gets the lease first) once the gate is decided or timed out.
//!   Runs left `queued`/`running` by an agent that stopped are resumed the same way once its
//!   lease is free: at once by an agent restarted under the same name, after the lease expires
//!   by any other.
//! - **A concurrency cap.** At most `concurrency` runs execute at once; the rest wait `queued`.
//! - **Shutdown.** Queued runs are let go at once; executing runs get a grace period, then their
//!   futures are dropped. The store already has each stage's state, so a stopped stage simply
//!   runs again when the run is resumed.

use envelope_runner::run::StageKind;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use envelope_runner::exec::driver::{
    Driver, DriverError, RunOutcome, RunSettings, approval_deadline,
};
use envelope_runner::pipeline::{self, CompiledPipeline};
use envelope_runner::plan::{self, PlanContext};
use envelope_runner::report::EventSink;
use envelope_runner::run::{RunId, RunRecord, RunStatus, RunTrigger, StageStatus, TriggerKind};
use envelope_runner::store::{LeaseOutcome, Store, StoreError};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::WatchedRepository;
use crate::metrics::Metrics;
use crate::release::{self, Release};
use crate::reporter::LogReporter;

/// How long a run's lease lasts without renewal; an agent that vanishes frees its runs after
/// this long.
pub const LEASE_TTL: Duration = Duration::from_secs(60);
/// How often a held lease is renewed, and a running run's new events are written to the
/// store (the web UI's live log).
const RENEW_EVERY: Duration = Duration::from_secs(20);
const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// After the grace period, how long checkpointing stages get before their futures are
/// dropped.
const CHECKPOINT_WAIT: Duration = Duration::from_secs(10);
/// A claim whose run record is still missing after this long belongs to an agent that died
/// between the two writes.
const ORPHAN_AFTER: Duration = Duration::from_secs(120);
/// Recovery looks at this many of the newest runs.
const RECOVERY_SCAN: usize = 1000;
/// After a run could not be resumed (its pipeline file fails to load, say), wait this long
/// before trying again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(300);

/// Where runs come from, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Poll,
    Webhook,
}

impl Via {
    pub fn label(self) -> &'static str {
        match self {
            Via::Poll => "poll",
            Via::Webhook => "webhook",
        }
    }
}

/// What offering a release did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// This agent claimed the release and started run.
    Started(RunId),
    /// A run for this release exists already (started here or elsewhere, now or earlier).
    AlreadyStarted(RunId),
    /// Another agent (or this one) is creating the run right now; ask again later.
    Busy,
    /// The release cannot start the pipeline (the pipeline does not load or plan); the reason
    /// is logged.
    NotStartable(String),
}

impl Offer {
    /// Nothing more to do for this release.
    pub fn is_settled(&self) -> bool {
        !matches!(self, Offer::Busy)
    }
}

/// What the scheduler needs to know.
#[derive(Clone)]
pub struct SchedulerSettings {
    pub project: PathBuf,
    pub agent_id: String,
    pub cache_dir: PathBuf,
    pub concurrency: usize,
    /// Pipelines this agent runs; runs of other pipelines in a shared store are left alone.
    pub pipelines: BTreeSet<String>,
    /// The agent's own secret values (GitHub token, webhook secret, approver and metrics
    /// tokens): redacted from every run's output like the run's own secrets.
    pub secrets: Vec<envelope_runner::secret::Secret>,
}

/// Starts, executes, parks and resumes runs. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    settings: SchedulerSettings,
    permits: Arc<Semaphore>,
    jobs: Mutex<HashMap<RunId, Job>>,
    /// Claim keys being offered in this process right now.
    offering: Mutex<HashSet<String>>,
    /// Runs that failed to resume, and when to try again.
    retry_at: Mutex<HashMap<RunId, Instant>>,
    metrics: Arc<Metrics>,
    wake: Notify,
    jobs_changed: Notify,
    /// No new runs, queued ones let go.
    stopping: CancellationToken,
    /// Executing runs checkpoint their stage and stop (the driver's cancellation).
    cancel_runs: CancellationToken,
}

/// A run this process holds the lease of: queued for a slot or executing.
struct Job {
    executing: bool,
    events: Option<EventSink>,
    handle: Option<JoinHandle<()>>,
}

/// Lease key of a run.
fn lease_key(run: &RunId) -> String {
    format!("run:{run}")
}

impl Scheduler {
    pub fn new(store: Arc<dyn Store>, settings: SchedulerSettings, metrics: Arc<Metrics>) -> Self {
        Scheduler {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(settings.concurrency.max(1))),
                store,
                settings,
                jobs: Mutex::default(),
                offering: Mutex::default(),
                retry_at: Mutex::default(),
                metrics,
                wake: Notify::new(),
                jobs_changed: Notify::new(),
                stopping: CancellationToken::new(),
                cancel_runs: CancellationToken::new(),
            }),
        }
    }

    /// True once shutdown began.
    pub fn is_stopping(&self) -> bool {
        self.inner.stopping.is_cancelled()
    }

    /// Look at waiting runs now (a decision was just recorded).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Runs this process is executing, and holding queued.
    pub fn job_counts(&self) -> (usize, usize) {
        let jobs = lock(&self.inner.jobs);
        let executing = jobs.values().filter(|job| job.executing).count();
        (executing, jobs.len() - executing)
    }

    /// When agents began watching `repository`: the first agent to ask records the time in
    /// the store (as the ULID of a claim), later ones and restarts read it back. Releases
    /// published before it existed already and start nothing.
    pub async fn watching_since(&self, repository: &str) -> Result<DateTime<Utc>, StoreError> {
        let marker = RunId::new();
        let first = self
            .inner
            .store
            .claim_trigger(&release::watch_key(repository), &marker)
            .await?
            .unwrap_or(marker);
        Ok(ulid_time(&first).unwrap_or_else(Utc::now))
    }

    /// Start the run `release` calls for, unless one exists: see the module documentation.
    pub async fn offer(
        &self,
        repository: &WatchedRepository,
        release: &Release,
        via: Via,
    ) -> Result<Offer, StoreError> {
        if self.is_stopping() {
            return Ok(Offer::Busy);
        }
        let key = release::claim_key(&repository.repository, release.id);
        if !lock(&self.inner.offering).insert(key.clone()) {
            return Ok(Offer::Busy);
        }
        let result = self.offer_claimed(&key, repository, release, via).await;
        lock(&self.inner.offering).remove(&key);
        result
    }

    async fn offer_claimed(
        &self,
        key: &str,
        repository: &WatchedRepository,
        release: &Release,
        via: Via,
    ) -> Result<Offer, StoreError> {
        let store = &self.inner.store;
        // The tag is whatever the publisher typed: shown escaped, so it cannot forge log lines.
        let tag = envelope_runner::pipeline::untrusted::Shown(&release.tag_name).to_string();
        let not_startable = |pipeline: &str, message: String| {
            tracing::error!(
                repository = %repository.repository,
                release = %tag,
                "release {tag} of {} cannot start pipeline `{pipeline}`: {message}",
                repository.repository,
            );
            Offer::NotStartable(message)
        };
        let compiled = match self.load_pipeline(&repository.pipeline) {
            Ok(compiled) => compiled,
            Err(message) => return Ok(not_startable(&repository.pipeline, message)),
        };
        let trigger = RunTrigger {
            kind: TriggerKind::Release {
                repository: repository.repository.clone(),
                release_id: release.id,
                author: release.author.as_ref().map(|author| author.login.clone()),
            },
            git_ref: release.tag_name.clone(),
            sha: None,
            tag: Some(release.tag_name.clone()),
        };
        let context = PlanContext {
            git_ref: release.tag_name.clone(),
            env: compiled.declared_env(),
            ..PlanContext::default()
        };
        // A release the pipeline cannot plan is refused before anything is claimed.
        if let Err(error) = plan::plan(&compiled, &context) {
            return Ok(not_startable(&compiled.name, error.to_string()));
        }
        let id = RunId::new();
        let run = match store.claim_trigger(key, &id).await? {
            None => id,
            // A retried conditional write can find its own first attempt (DynamoDB).
            Some(existing) if existing == id => id,
            Some(existing) => {
                if store.get_run(&existing).await?.is_some() {
                    return Ok(Offer::AlreadyStarted(existing));
                }
                let age = ulid_time(&existing)
                    .map(|time| (Utc::now() - time).to_std().unwrap_or_default())
                    .unwrap_or_default();
                if age < ORPHAN_AFTER {
                    return Ok(Offer::Busy);
                }
                tracing::warn!(
                    run = %existing,
                    "release {} of {} was claimed for run {existing} {}s ago but the run was never recorded; starting it now",
                    release.tag_name,
                    repository.repository,
                    age.as_secs()
                );
                existing
            }
        };
        let agent = &self.inner.settings.agent_id;
        match store
            .acquire_lease(&lease_key(&run), agent, LEASE_TTL)
            .await?
        {
            LeaseOutcome::Granted { .. } => {}
            LeaseOutcome::Held { .. } => return Ok(Offer::Busy),
        }
        // The record, older runs superseded, `run_started`: the runner's lifecycle API, with
        // the events going to this agent's log.
        let events = EventSink::new(Box::new(LogReporter::new(
            run.clone(),
            compiled.name.clone(),
        )));
        events.redactor().add_all(
            self.inner
                .settings
                .secrets
                .iter()
                .map(|secret| secret.expose()),
        );
        let driver = Driver::new(compiled, store.clone(), self.run_settings(None), events);
        let record = match driver
            .create(run.clone(), trigger, context, RunStatus::Queued)
            .await
        {
            Ok(record) => record,
            Err(error) => {
                let _ = store.release_lease(&lease_key(&run), agent).await;
                return match error {
                    DriverError::Store(StoreError::RunExists { .. }) => {
                        Ok(Offer::AlreadyStarted(run))
                    }
                    DriverError::Store(error) => Err(error),
                    error => Ok(Offer::NotStartable(error.to_string())),
                };
            }
        };
        tracing::info!(
            run = %run,
            pipeline = %record.pipeline,
            "release {} of {} ({}) starts run {run} of pipeline `{}`",
            release.tag_name,
            repository.repository,
            via.label(),
            record.pipeline
        );
        self.inner.metrics.started(via.label());
        self.spawn_job(run.clone(), record.pipeline.clone());
        Ok(Offer::Started(run))
    }

    /// Run `run` (whose lease this process holds) in a task of its own.
    fn spawn_job(&self, run: RunId, pipeline: String) {
        {
            let mut jobs = lock(&self.inner.jobs);
            if jobs.contains_key(&run) {
                return;
            }
            jobs.insert(
                run.clone(),
                Job {
                    executing: false,
                    events: None,
                    handle: None,
                },
            );
        }
        self.update_job_metrics();
        let scheduler = self.clone();
        let task_run = run.clone();
        let handle = tokio::spawn(async move {
            scheduler.job(task_run.clone(), pipeline).await;
            lock(&scheduler.inner.jobs).remove(&task_run);
            scheduler.update_job_metrics();
            scheduler.inner.jobs_changed.notify_waiters();
        });
        if let Some(job) = lock(&self.inner.jobs).get_mut(&run) {
            job.handle = Some(handle);
        }
    }

    fn update_job_metrics(&self) {
        let (executing, queued) = self.job_counts();
        self.inner.metrics.jobs(executing, queued);
    }

    /// Wait for a slot, execute until the run finishes or parks, let the lease go.
    async fn job(&self, run: RunId, pipeline: String) {
        let store = &self.inner.store;
        let agent = &self.inner.settings.agent_id;
        let key = lease_key(&run);
        let lost = CancellationToken::new();
        let keep_lease = {
            let lost = lost.clone();
            let store = store.clone();
            let key = key.clone();
            let agent = agent.clone();
            let run = run.clone();
            async move {
                loop {
                    tokio::time::sleep(RENEW_EVERY).await;
                    match store.renew_lease(&key, &agent, LEASE_TTL).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::error!(
                                run = %run,
                                "lost the lease of run {run} to another agent; stopping here so that only one agent works on it"
                            );
                            lost.cancel();
                            return;
                        }
                        Err(error) => {
                            tracing::warn!(run = %run, "cannot renew the lease of run {run}: {error}")
                        }
                    }
                }
            }
        };
        let work = self.execute(&run, &pipeline);
        tokio::select! {
            () = work => {}
            () = keep_lease => {}
            () = lost.cancelled() => {}
        }
        if !lost.is_cancelled() {
            let _ = store.release_lease(&key, agent).await;
        }
    }

    async fn execute(&self, run: &RunId, pipeline: &str) {
        let permit = tokio::select! {
            permit = self.inner.permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = self.inner.stopping.cancelled() => return,
        };
        let store = &self.inner.store;
        let compiled = match self.load_pipeline(pipeline) {
            Ok(compiled) => compiled,
            Err(message) => {
                tracing::error!(run = %run, "cannot run {run}: pipeline `{pipeline}` does not load: {message}");
                self.retry_later(run);
                return;
            }
        };
        let record = match store.get_run(run).await {
            Ok(Some(record)) => record,
            Ok(None) => return,
            Err(error) => {
                tracing::error!(run = %run, "cannot read run {run}: {error}");
                return;
            }
        };
        let until = match self.park_at(&record).await {
            Ok(until) => until,
            Err(error) => {
                tracing::error!(run = %run, "cannot read the approvals of run {run}: {error}");
                return;
            }
        };
        let events = EventSink::new(Box::new(LogReporter::new(run.clone(), pipeline.to_owned())));
        events.redactor().add_all(
            self.inner
                .settings
                .secrets
                .iter()
                .map(|secret| secret.expose()),
        );
        if let Some(job) = lock(&self.inner.jobs).get_mut(run) {
            job.executing = true;
            job.events = Some(events.clone());
        }
        self.update_job_metrics();
        let driver = Driver::new(
            compiled,
            store.clone(),
            self.run_settings(until),
            events.clone(),
        );
        let result = tokio::select! {
            result = driver.resume(run) => result,
            () = flush_periodically(store.as_ref(), run, &events) => return,
        };
        flush_events(store.as_ref(), run, &events).await;
        drop(permit);
        match result {
            Ok(outcome)
                if outcome.status == RunStatus::Cancelled
                    && self.inner.cancel_runs.is_cancelled() =>
            {
                // Stopped for shutdown, not by a person: queued again, for whichever agent
                // starts next.
                let _ = store.set_run_status(run, RunStatus::Queued, None).await;
                tracing::warn!(
                    run = %run,
                    "run {run} stopped for shutdown at `{}`; an agent resumes it from there",
                    outcome.stage.as_deref().unwrap_or("-")
                );
            }
            Ok(outcome) => log_outcome(&outcome),
            Err(DriverError::Store(error)) => {
                tracing::error!(run = %run, "run {run} stopped: {error}; it is tried again later");
                self.retry_later(run);
            }
            Err(error) => {
                tracing::error!(run = %run, "run {run} cannot go on: {error}");
                let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
                let _ = store
                    .set_run_status(run, RunStatus::Failed, Some(&now))
                    .await;
            }
        }
    }

    fn run_settings(&self, until: Option<String>) -> RunSettings {
        RunSettings {
            cache_dir: self.inner.settings.cache_dir.clone(),
            until,
            local_source: None,
            local_registry: None,
            registry_endpoint: None,
            user: self.inner.settings.agent_id.clone(),
            approval_poll: Duration::from_secs(5),
            lease_ttl: LEASE_TTL,
            cancel: self.inner.cancel_runs.clone(),
            region: None,
        }
    }

    fn retry_later(&self, run: &RunId) {
        lock(&self.inner.retry_at).insert(run.clone(), Instant::now() + RETRY_AFTER_FAILURE);
    }

    /// The approval gate this run should stop at: the first one from where it stands that
    /// has no decision yet. A run parked there holds no slot; recovery resumes it once the
    /// gate is decided.
    async fn park_at(&self, record: &RunRecord) -> Result<Option<String>, StoreError> {
        let from = record
            .stages
            .iter()
            .position(|stage| !stage.status.is_finished())
            .unwrap_or(record.stages.len());
        for stage in &record.stages[from..] {
            if stage.kind == StageKind::Approval
                && self
                    .inner
                    .store
                    .approval(&record.id, &stage.name)
                    .await?
                    .is_none()
            {
                return Ok(Some(stage.name.clone()));
            }
        }
        Ok(None)
    }

    /// Find runs of this agent's pipelines that nobody is working on and that can go on:
    /// queued or running ones whose agent stopped, and waiting ones whose gate was decided or
    /// timed out. Resume each whose lease this agent gets.
    pub async fn recover(&self) -> Result<(), StoreError> {
        if self.is_stopping() {
            return Ok(());
        }
        let store = &self.inner.store;
        let mut before: Option<RunId> = None;
        let mut scanned = 0;
        let mut pipelines: BTreeMap<String, Option<CompiledPipeline>> = BTreeMap::new();
        loop {
            let page = store.list_runs(None, 100, before.as_ref()).await?;
            scanned += page.len();
            for summary in &page {
                if !self.inner.settings.pipelines.contains(&summary.pipeline)
                    || !matches!(
                        summary.status,
                        RunStatus::Queued | RunStatus::Running | RunStatus::Waiting
                    )
                    || lock(&self.inner.jobs).contains_key(&summary.id)
                {
                    continue;
                }
                if lock(&self.inner.retry_at)
                    .get(&summary.id)
                    .is_some_and(|at| Instant::now() < *at)
                {
                    continue;
                }
                let compiled = pipelines
                    .entry(summary.pipeline.clone())
                    .or_insert_with(|| self.load_pipeline(&summary.pipeline).ok());
                self.consider(&summary.id, compiled.as_ref()).await?;
            }
            if page.len() < 100 || scanned >= RECOVERY_SCAN {
                break;
            }
            before = page.last().map(|summary| summary.id.clone());
        }
        Ok(())
    }

    async fn consider(
        &self,
        run: &RunId,
        compiled: Option<&CompiledPipeline>,
    ) -> Result<(), StoreError> {
        let store = &self.inner.store;
        let Some(record) = store.get_run(run).await? else {
            return Ok(());
        };
        if !self.resumable(&record, compiled).await? {
            return Ok(());
        }
        let agent = &self.inner.settings.agent_id;
        match store
            .acquire_lease(&lease_key(run), agent, LEASE_TTL)
            .await?
        {
            LeaseOutcome::Held { .. } => return Ok(()),
            LeaseOutcome::Granted { .. } => {}
        }
        // Someone may have finished it between the look and the lease.
        let still = match store.get_run(run).await? {
            Some(record) => self.resumable(&record, compiled).await?,
            None => false,
        };
        if !still || self.is_stopping() {
            store.release_lease(&lease_key(run), agent).await?;
            return Ok(());
        }
        tracing::info!(
            run = %run,
            pipeline = %record.pipeline,
            "resuming run {run} of pipeline `{}` ({})",
            record.pipeline,
            record.status.as_str()
        );
        self.inner.metrics.resumed();
        self.spawn_job(run.clone(), record.pipeline.clone());
        Ok(())
    }

    /// Whether a run of this agent's kind can go on now.
    async fn resumable(
        &self,
        record: &RunRecord,
        compiled: Option<&CompiledPipeline>,
    ) -> Result<bool, StoreError> {
        if !matches!(record.trigger.kind, TriggerKind::Release { .. }) {
            // CLI and CI runs are resumed by whoever started them.
            return Ok(false);
        }
        match record.status {
            RunStatus::Queued | RunStatus::Running => Ok(true),
            RunStatus::Waiting => {
                let Some(stage) = record.next_stage() else {
                    return Ok(true);
                };
                if stage.kind != StageKind::Approval || stage.status != StageStatus::Waiting {
                    return Ok(true);
                }
                if self
                    .inner
                    .store
                    .approval(&record.id, &stage.name)
                    .await?
                    .is_some()
                {
                    return Ok(true);
                }
                Ok(approval_deadline(compiled, record, &stage.name)
                    .is_some_and(|deadline| Utc::now() >= deadline))
            }
            _ => Ok(false),
        }
    }

    /// Look for runs to resume every `interval`, and at once after [`Scheduler::wake`],
    /// until shutdown.
    pub async fn recovery_loop(&self, interval: Duration) {
        loop {
            if let Err(error) = self.recover().await {
                tracing::warn!("cannot look for runs to resume: {error}");
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = self.inner.wake.notified() => {}
                () = self.inner.stopping.cancelled() => return,
            }
        }
    }

    /// Stop: no new runs; queued runs are let go; executing runs get `grace` to finish, then
    /// checkpoint their stage (the driver records it cancelled; the run goes back to
    /// `queued`), and any that still has not stopped is dropped where it is. Leases are given
    /// back, so another agent may resume at once.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.stopping.cancel();
        self.wait_for_jobs(grace).await;
        self.inner.cancel_runs.cancel();
        self.wait_for_jobs(CHECKPOINT_WAIT).await;
        let stopped: Vec<(RunId, Option<EventSink>, Option<JoinHandle<()>>)> =
            lock(&self.inner.jobs)
                .iter_mut()
                .map(|(run, job)| (run.clone(), job.events.take(), job.handle.take()))
                .collect();
        for (run, events, handle) in stopped {
            if let Some(handle) = handle {
                handle.abort();
                let _ = handle.await;
            }
            if let Some(events) = events {
                flush_events(self.inner.store.as_ref(), &run, &events).await;
            }
            let _ = self
                .inner
                .store
                .release_lease(&lease_key(&run), &self.inner.settings.agent_id)
                .await;
            tracing::warn!(
                run = %run,
                "stopped run {run} for shutdown; an agent resumes it from its unfinished stage"
            );
        }
        lock(&self.inner.jobs).clear();
        self.update_job_metrics();
    }

    /// Wait until no job is left, or `limit` passed.
    async fn wait_for_jobs(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.inner.jobs_changed.notified();
            if lock(&self.inner.jobs).is_empty() {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return;
            }
        }
    }

    /// Load `pipelines/<name>.yaml` afresh, so that a run uses the pipeline as it is now.
    pub fn load_pipeline(&self, name: &str) -> Result<CompiledPipeline, String> {
        load_pipeline(&self.inner.settings.project, name)
    }
}

/// Load and compile a pipeline of the project; errors rendered for a log line.
pub fn load_pipeline(project: &std::path::Path, name: &str) -> Result<CompiledPipeline, String> {
    let path = pipeline::find(project, name)?;
    pipeline::load(&path).map_err(|diagnostics| diagnostics.render(false))
}

/// When a run id (a ULID) was made.
fn ulid_time(run: &RunId) -> Option<DateTime<Utc>> {
    let ulid = ulid::Ulid::from_string(&run.0.to_ascii_uppercase()).ok()?;
    DateTime::from_timestamp_millis(i64::try_from(ulid.timestamp_ms()).ok()?)
}

/// Write a running run's new events every few seconds: the web UI's live log. Never returns.
async fn flush_periodically(store: &dyn Store, run: &RunId, events: &EventSink) {
    loop {
        tokio::time::sleep(FLUSH_EVERY).await;
        flush_events(store, run, events).await;
    }
}

async fn flush_events(store: &dyn Store, run: &RunId, events: &EventSink) {
    let unsaved = events.take_unsaved();
    if !unsaved.is_empty()
        && let Err(error) = store.append_events(run, &unsaved).await
    {
        tracing::warn!(run = %run, "cannot write {} log lines of run {run}: {error}", unsaved.len());
    }
}

fn log_outcome(outcome: &RunOutcome) {
    let run = &outcome.run;
    match (outcome.status, &outcome.stage) {
        (RunStatus::Waiting, Some(stage)) => tracing::info!(
            run = %run,
            "run {run} waits for approval at `{stage}`; decide in the web UI or with `envelope-runner approve {run}`"
        ),
        (RunStatus::Waiting, None) => tracing::info!(run = %run, "run {run} paused"),
        (status, stage) => {
            let stage = stage
                .as_deref()
                .map(|s| format!(" at `{s}`"))
                .unwrap_or_default();
            match &outcome.error {
                Some(error) => tracing::warn!(
                    run = %run,
                    "run {run} {}{stage}: {error}",
                    status.as_str()
                ),
                None => tracing::info!(run = %run, "run {run} {}{stage}", status.as_str()),
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_tell_when_they_were_made() {
        let before = Utc::now() - chrono::Duration::seconds(1);
        let time = ulid_time(&RunId::new()).unwrap();
        assert!(time >= before && time <= Utc::now(), "{time}");
        assert_eq!(ulid_time(&RunId("not-a-ulid".into())), None);
    }
}
