//! The run loop: each stage's record before and after its work, the deploy lease at the
//! gate, stops from outside (superseded, cancelled) and the run's verdict (what each stage's
//! result means is `verdict::stage_end`).

use super::state::{self, build_outputs, restore_state};
use super::verdict::stage_end;
use super::*;
use crate::event::Event;
use crate::exec::build_limits;
use crate::exec::lease::GateLease;
use crate::plan::{self, Plan, PlanContext, Step};
use crate::run::StageKind;
use crate::run::{RunId, RunRecord, RunStatus, StageOutputs, StageRecord, StageStatus};
use std::time::{Duration, Instant};

impl Driver {
    pub(super) async fn execute(
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
                .set_run_status(&record.id, RunStatus::Failed, Some(&self.now()))
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
            let result = if gate_passed_now
                && let Some(stopped) = self.stopped_from_outside(&record).await?
            {
                Some(Ok(StepResult::Stopped(stopped)))
            } else {
                tokio::select! {
                    result = self.run_step(&step, &plan, &mut record, &mut state) => Some(result),
                    () = self.settings.cancel.cancelled() => None,
                }
            };
            let seconds = stage_started.elapsed().as_secs_f64();
            let lock_lost = lease.as_ref().is_some_and(|l| l.lost().is_some());
            let end = stage_end(&record.id, &name, result, lock_lost);
            if end.status == StageStatus::Succeeded
                && let Some(sha) = &end.outputs.sha
            {
                context.sha = Some(sha.clone());
            }
            let failed = end.status == StageStatus::Failed;
            self.finish_stage(
                &mut record,
                &name,
                end.status,
                end.outputs,
                end.error,
                seconds,
            )
            .await?;
            if failed {
                for later in record
                    .stages
                    .iter_mut()
                    .filter(|s| s.status == StageStatus::Pending)
                {
                    later.status = StageStatus::Skipped;
                    self.save_stage(&record.id, later).await?;
                }
            }
            if let Some(stop) = end.stop {
                outcome = Some(stop);
                break;
            }
            if self
                .settings
                .until
                .as_deref()
                .is_some_and(|until| until == name || until == step.kind().as_str())
                && record.stages.iter().any(|s| !s.status.is_finished())
            {
                outcome = Some(RunOutcome::of(
                    record.id.clone(),
                    RunStatus::Waiting,
                    None,
                    None,
                ));
                break;
            }
        }
        let outcome = outcome.unwrap_or(RunOutcome::of(
            record.id.clone(),
            RunStatus::Succeeded,
            None,
            None,
        ));
        if let Some(lease) = lease {
            self.gate_lease.lock().expect("gate lease lock").take();
            // Stopped for an agent's shutdown: an agent resumes the run (its stage may still
            // be rolling out), and until then it keeps the pipeline's lock.
            if outcome.status == RunStatus::Cancelled
                && self.settings.cancel.is_cancelled()
                && record.trigger.kind.resumed_by_agents()
            {
                lease.keep_until_expiry();
            } else {
                lease.release().await;
            }
        }
        // Before the run's status is final: a process killed in between leaves the run
        // unfinished, and the one that finishes it does not tell an ending told already.
        self.notify_run_end(&record, &outcome, &context).await;
        let finished_at = (outcome.status != RunStatus::Waiting).then(|| self.now());
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
    pub(super) async fn stopped_from_outside(
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

    pub(super) async fn begin_stage(
        &self,
        record: &mut RunRecord,
        name: &str,
        kind: StageKind,
    ) -> Result<(), DriverError> {
        let now = self.now();
        let stage = record.stage_mut(name).expect("stage exists");
        state::begin(stage, &now);
        let stage = stage.clone();
        self.save_stage(&record.id, &stage).await?;
        self.events.emit(Event::StageStarted {
            stage: name.to_owned(),
            kind,
        });
        Ok(())
    }

    pub(super) async fn finish_stage(
        &self,
        record: &mut RunRecord,
        name: &str,
        status: StageStatus,
        outputs: StageOutputs,
        error: Option<String>,
        seconds: f64,
    ) -> Result<(), DriverError> {
        let now = self.now();
        let stage = record.stage_mut(name).expect("stage exists");
        state::end(stage, status, outputs, error.clone(), &now);
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
    pub(super) async fn save_stage(
        &self,
        run: &RunId,
        stage: &StageRecord,
    ) -> Result<(), crate::store::StoreError> {
        let redacted = self.events.redactor().redact_texts(stage);
        let stage = redacted.as_ref().unwrap_or(stage);
        self.store.save_stage(run, stage).await
    }

    pub(super) async fn flush_events(&self, run: &RunId) -> Result<(), DriverError> {
        let events = self.events.take_unsaved();
        if !events.is_empty() {
            self.store.append_events(run, &events).await?;
        }
        Ok(())
    }

    pub(super) async fn run_step(
        &self,
        step: &Step,
        plan: &Plan,
        record: &mut RunRecord,
        state: &mut RunState,
    ) -> Result<StepResult, StageFailure> {
        match step {
            Step::Source(source) => self.source(source, &plan.trigger, record, state).await,
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
            Step::Push(push) => self.push(push, record, state).await,
            Step::Approval(approval) => self.approval(approval, plan, record, state).await,
            Step::Migrate(migrate) => self.migrate(migrate, plan, record, state).await,
            Step::Deploy(deploy) => self.deploy(deploy, record, state).await,
        }
    }
}
