//! Recovery: finding runs of this agent's pipelines that nobody works on and that can go on,
//! and resuming each whose lease this agent gets.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use envelope_runner::exec::driver::approval_deadline;
use envelope_runner::pipeline::CompiledPipeline;
use envelope_runner::run::{RunId, RunRecord, RunStatus, StageKind, StageStatus};
use envelope_runner::store::{LeaseOutcome, StoreError};

use super::{Scheduler, lease_key, lock};

/// Recovery looks at this many of the newest runs.
const RECOVERY_SCAN: usize = 1000;

impl Scheduler {
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
            .acquire_lease(&lease_key(run), agent, self.inner.settings.lease_ttl)
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
        if !record.trigger.kind.resumed_by_agents() {
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
                // Timed out by the store's clock, the one the run's own wait measures against.
                let now = self.inner.store.clock().now();
                Ok(approval_deadline(compiled, record, &stage.name)
                    .is_some_and(|deadline| now >= deadline))
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
}
