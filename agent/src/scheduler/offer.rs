//! Offering a release: claiming it in the store (once, across agents), adopting an orphan
//! claim, and creating the run that then executes as a job.

use std::time::Duration;

use chrono::Utc;
use envelope_runner::exec::driver::{Driver, DriverError};
use envelope_runner::plan::{self, PlanContext};
use envelope_runner::run::{RunId, RunStatus, RunTrigger, TriggerKind};
use envelope_runner::store::{LeaseOutcome, StoreError};

use super::{Offer, Scheduler, Via, lease_key, lock, ulid_time};
use crate::config::WatchedRepository;
use crate::release::{self, Release};

/// A claim whose run record is still missing after this long belongs to an agent that died
/// between the two writes.
const ORPHAN_AFTER: Duration = Duration::from_secs(120);

impl Scheduler {
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
        let compiled = match self.load_pipeline(&repository.run_key()) {
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
            .acquire_lease(&lease_key(&run), agent, self.inner.settings.lease_ttl)
            .await?
        {
            LeaseOutcome::Granted { .. } => {}
            LeaseOutcome::Held { .. } => return Ok(Offer::Busy),
        }
        // The record, older runs superseded, `run_started`: the runner's lifecycle API, with
        // the events going to this agent's log.
        let events = self.event_sink(&run, compiled.name.clone());
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
}
