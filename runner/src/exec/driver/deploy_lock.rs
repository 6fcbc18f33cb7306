//! The pipeline's deploy lock at the gate: one run at a time past the approval gate. A run
//! waits its turn while another holds the lease; a lease whose holder died expires and is taken
//! over, except from a run an agent resumes (see [`Driver::kept_for`]).

use chrono::{DateTime, SecondsFormat, Utc};

use super::{Driver, DriverError, GateResult, RunOutcome};
use crate::event::Event;
use crate::exec::lease::{self, GateLease};
use crate::pipeline::model::Concurrency;
use crate::run::{RunId, RunRecord, RunStatus};
use crate::store::{LeaseOutcome, LeaseState};

impl Driver {
    /// Take the pipeline's deploy lease: one run at a time past the approval gate. Queued runs
    /// wait their turn; the lease expires if its holder dies, and is renewed while it lives.
    pub(super) async fn hold_gate(
        &self,
        record: &RunRecord,
        concurrency: Concurrency,
    ) -> Result<GateResult, DriverError> {
        let key = format!("pipeline:{}:gate", self.compiled.run_key());
        let holder = record.id.0.clone();
        let ttl = self.settings.lease_ttl;
        let mut announced = None;
        loop {
            let waiting = if let Some(kept) = self.kept_for(&key, &holder).await? {
                if kept.expires_at <= self.store.clock().now() {
                    Waiting::Kept(kept.holder, kept.expires_at)
                } else {
                    Waiting::Held(kept.holder, kept.expires_at)
                }
            } else {
                match lease::acquire(self.store.as_ref(), &key, &holder, ttl).await? {
                    LeaseOutcome::Granted { generation, .. } => {
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
                            ttl,
                        )));
                    }
                    LeaseOutcome::Held { by, expires_at } => Waiting::Held(by, expires_at),
                }
            };
            if announced
                .as_ref()
                .is_none_or(|told: &Waiting| !told.same_as(&waiting))
            {
                self.events.emit(Event::Notice {
                    stage: None,
                    message: waiting.notice(&self.compiled.run_key(), concurrency),
                });
                let _ = self.flush_events(&record.id).await;
                announced = Some(waiting);
            }
            // A store that does not answer this check is not a reason to leave the queue: the
            // next `acquire` retries it for up to the lease's time to live and fails the run
            // only if the store stays away longer than that.
            match self.stopped_from_outside(record).await {
                Ok(Some(stopped)) => return Ok(GateResult::Stopped(stopped)),
                Ok(None) => {}
                Err(error) => tracing::warn!(
                    run = %record.id.0,
                    %error,
                    "could not check whether the waiting run was stopped; checking again"
                ),
            }
            tokio::select! {
                () = tokio::time::sleep(self.settings.approval_poll) => {}
                () = self.settings.cancel.cancelled() => {
                    return Ok(GateResult::Stopped(RunOutcome::of(record.id.clone(), RunStatus::Cancelled, record.next_stage().map(|s| s.name.clone()), Some("cancelled while waiting for the pipeline's lock".into()))));
                }
            }
        }
    }

    /// The lease `key` when another run holds it that an agent resumes (a release's run) and
    /// that is queued or running: that run keeps the lock, after its lease expired too, until an
    /// agent resumes it and it finishes. Taking the lease over would deploy over its release
    /// while that release's migration or rollout may still be in flight, and the resumed run
    /// would find its deployment replaced. This run then does not ask for the lease at all, so
    /// the lease cannot expire between this look and a grant. `None` when the lease is free,
    /// this run's, or another's that may be taken over once it expired: a finished run's, or
    /// one of a run only its starter resumes (a CLI or CI run).
    async fn kept_for(&self, key: &str, holder: &str) -> Result<Option<LeaseState>, DriverError> {
        let Some(state) = lease::read(self.store.as_ref(), key, self.settings.lease_ttl).await?
        else {
            return Ok(None);
        };
        if state.holder == holder {
            return Ok(None);
        }
        let holder_run = RunId(state.holder.clone());
        let read = lease::retrying(
            self.settings.lease_ttl,
            "could not read the run that holds the deploy lease; retrying",
            key,
            || self.store.get_run(&holder_run),
        )
        .await?;
        let Some(run) = read else {
            return Ok(None);
        };
        // A run parked at a later approval gate gave the lock back when it parked; one that
        // holds it parked anyway is not worth the wait for a person's decision.
        let in_flight = matches!(run.status, RunStatus::Queued | RunStatus::Running);
        Ok((in_flight && run.trigger.kind.resumed_by_agents()).then_some(state))
    }
}

/// Why a run is not past the gate yet: who holds the lock, and until when its lease runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Waiting {
    /// A run holds the lease.
    Held(String, DateTime<Utc>),
    /// A run stopped unfinished past the gate (its lease expired) and keeps the lock until an
    /// agent resumes and finishes it.
    Kept(String, DateTime<Utc>),
}

impl Waiting {
    /// The same situation as told before (a renewed lease is not news).
    pub(super) fn same_as(&self, other: &Waiting) -> bool {
        match (self, other) {
            (Waiting::Held(a, _), Waiting::Held(b, _))
            | (Waiting::Kept(a, _), Waiting::Kept(b, _)) => a == b,
            _ => false,
        }
    }

    fn notice(&self, pipeline: &str, concurrency: Concurrency) -> String {
        match self {
            Waiting::Held(by, expires_at) => format!(
                "run {by} of `{pipeline}` is past the approval gate; waiting for it to finish ({} mode, its lease expires at {} unless renewed)",
                match concurrency {
                    Concurrency::Queued => "queued",
                    Concurrency::Superseded => "superseded",
                },
                expires_at.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
            Waiting::Kept(by, expired) => format!(
                "run {by} of `{pipeline}` stopped past the approval gate without finishing (its lease expired at {}); an agent resumes it, and this run waits for it to finish rather than deploy over a release in flight (`envelope-runner resume {by}` finishes it by hand)",
                expired.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
        }
    }
}
