//! Jobs: runs this process holds the lease of. Spawning one, waiting for a slot, executing
//! under a renewed lease with the live log flushed to the store, parking at an undecided
//! approval gate, and stopping every job at shutdown.

use std::time::{Duration, Instant};

use chrono::SecondsFormat;
use envelope_runner::exec::driver::{Driver, DriverError, RunOutcome, RunSettings};
use envelope_runner::report::EventSink;
use envelope_runner::run::{RunId, RunRecord, RunStatus, StageKind};
use envelope_runner::store::{Store, StoreError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Job, Scheduler, lease_key, lock};

/// How often a running run's new events are written to the store (the web UI's live log). A
/// held lease is renewed every third of its time to live.
const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// After the grace period, how long checkpointing stages get before their futures are
/// dropped.
const CHECKPOINT_WAIT: Duration = Duration::from_secs(10);
/// After a run could not be resumed (its pipeline file fails to load, say), wait this long
/// before trying again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(300);

impl Scheduler {
    /// Run `run` (whose lease this process holds) in a task of its own.
    pub(super) fn spawn_job(&self, run: RunId, pipeline: String) {
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
        let ttl = self.inner.settings.lease_ttl;
        let keep_lease = {
            let lost = lost.clone();
            let store = store.clone();
            let key = key.clone();
            let agent = agent.clone();
            let run = run.clone();
            async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    match store.renew_lease(&key, &agent, ttl).await {
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
        let store = &self.inner.store;
        // A run past its gate holds its pipeline's deploy lock (kept for it while no agent
        // worked on it), and the runs waiting for that lock may hold every slot: it goes on
        // at once. At most one run per pipeline is past its gate.
        let past_gate =
            matches!(store.get_run(run).await, Ok(Some(record)) if record.past_its_gate());
        let permit = if past_gate {
            None
        } else {
            tokio::select! {
                permit = self.inner.permits.clone().acquire_owned() => match permit {
                    Ok(permit) => Some(permit),
                    Err(_) => return,
                },
                () = self.inner.stopping.cancelled() => return,
            }
        };
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
        let events = self.event_sink(run, pipeline.to_owned());
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
                let now = store
                    .clock()
                    .now()
                    .to_rfc3339_opts(SecondsFormat::Secs, true);
                let _ = store
                    .set_run_status(run, RunStatus::Failed, Some(&now))
                    .await;
            }
        }
    }

    pub(super) fn run_settings(&self, until: Option<String>) -> RunSettings {
        RunSettings {
            cache_dir: self.inner.settings.cache_dir.clone(),
            until,
            local_source: None,
            local_registry: None,
            build_secrets: Default::default(),
            registry_endpoint: None,
            user: self.inner.settings.agent_id.clone(),
            approval_poll: Duration::from_secs(5),
            lease_ttl: self.inner.settings.lease_ttl,
            cancel: self.inner.cancel_runs.clone(),
            region: None,
            // The store's: the agent's leases, its runs' records and their approval deadlines
            // are all measured on one clock.
            clock: self.inner.store.clock(),
            run_link: self
                .inner
                .settings
                .public_url
                .as_deref()
                .map(|url| format!("{}/runs/{{run}}", url.trim_end_matches('/'))),
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
