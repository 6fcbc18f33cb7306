//! The approval stage: wait for a decision until the gate's deadline, and tell the
//! approvers what they are asked to approve.

use crate::event::Event;
use crate::exec::driver::diff::GATE_DIFF_TIMEOUT;
use crate::exec::driver::notify::Delivery;
use crate::exec::driver::*;
use crate::exec::ecs::release_diff::{self, ReleaseDiff};
use crate::exec::notify;
use crate::pipeline::CompiledPipeline;
use crate::plan::{self, Plan, Step};
use crate::report::EventSink;
use crate::run::{ApprovalRecord, RunRecord, RunStatus, StageOutputs, StageRecord, StageStatus};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// When the approval gate `stage` of `record` fails closed: when it started plus the gate's
/// timeout in the plan, or [`plan::DEFAULT_APPROVAL_TIMEOUT`] when `compiled` is missing or no
/// longer plans that gate. `None` until the gate has started.
pub fn approval_deadline(
    compiled: Option<&CompiledPipeline>,
    record: &RunRecord,
    stage: &str,
) -> Option<DateTime<Utc>> {
    let gate = record.stage(stage)?;
    let planned = compiled
        .and_then(|compiled| plan::plan(compiled, &plan_context(record)).ok())
        .and_then(|plan| {
            plan.steps.into_iter().find_map(|step| match step {
                Step::Approval(approval) if approval.name == stage => Some(approval),
                _ => None,
            })
        });
    match planned {
        Some(step) => gate_deadline(gate, &step),
        None => Some(started_at(gate)? + plan::DEFAULT_APPROVAL_TIMEOUT),
    }
}

/// The deadline of a gate that started: its start plus the planned timeout.
fn gate_deadline(gate: &StageRecord, step: &plan::ApprovalStep) -> Option<DateTime<Utc>> {
    Some(started_at(gate)? + timeout_of(step))
}

fn timeout_of(step: &plan::ApprovalStep) -> Duration {
    Duration::from_secs(step.timeout_seconds)
}

fn started_at(stage: &StageRecord) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(stage.started_at.as_deref()?)
        .ok()
        .map(|time| time.with_timezone(&Utc))
}

/// What an approval gate shows when it opens: the diff of the ECS stages after it (when the
/// run pushed an image), that diff as bounded lines for its record, and the checks that run
/// after the deploy.
pub(in crate::exec::driver) struct GateDiff {
    diff: Option<ReleaseDiff>,
    lines: Vec<String>,
    checks: Vec<String>,
}

impl GateDiff {
    /// The notice tells the same: each deployed service's changes, the whole diff, the checks.
    fn fill(self, notice: &mut notify::ApprovalNotice) {
        if let Some(diff) = &self.diff {
            notice.services = diff
                .services
                .iter()
                .filter(|service| service.kind == "deploy")
                .map(|service| notify::ServiceChange {
                    service: service.service.clone(),
                    changes: service.change_lines(),
                })
                .collect();
        }
        notice.diff = self.lines;
        notice.checks = self.checks;
    }
}

impl Driver {
    pub(in crate::exec::driver) async fn approval(
        &self,
        step: &plan::ApprovalStep,
        plan: &Plan,
        record: &mut RunRecord,
        state: &RunState,
    ) -> Result<StepResult, StageFailure> {
        let run = record.id.clone();
        // `begin_stage` recorded the start (the first one, on a resumed gate); a record
        // without one waits from now. The deadline is on the settings' clock; the waits
        // between looks sleep on tokio's timer.
        let clock = &self.settings.clock;
        let deadline = record
            .stage(&step.name)
            .and_then(|stage| gate_deadline(stage, step))
            .unwrap_or_else(|| clock.now() + timeout_of(step));
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
            if clock.now() >= deadline {
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
                // Computed when the gate opens and kept in its record, so the agent's run
                // page shows it without asking AWS; a resumed gate keeps what it found.
                let recorded =
                    !stage.outputs.changes.is_empty() || !stage.outputs.planned_checks.is_empty();
                let opened = if !recorded || stage.outputs.notified.is_none() {
                    self.gate_diff(step, plan, state).await
                } else {
                    None
                };
                if let Some(opened) = opened.as_ref().filter(|_| !recorded) {
                    let (lines, checks) = (opened.lines.clone(), opened.checks.clone());
                    self.checkpoint(record, &step.name, |outputs| {
                        outputs.changes = lines;
                        outputs.planned_checks = checks;
                    })
                    .await?;
                }
                if stage.outputs.notified.is_none() {
                    let mut notice = self.approval_notice(step, plan, record, state, deadline);
                    if let Some(opened) = opened {
                        opened.fill(&mut notice);
                    }
                    let (sent, warnings) = self.notify(step, &notice).await;
                    if !sent.is_empty() || !warnings.is_empty() {
                        let stage = record.stage_mut(&step.name).expect("stage exists");
                        if !sent.is_empty() {
                            stage.outputs.notified =
                                Some(format!("{} at {}", sent.join(", "), self.now()));
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
            let remaining = (deadline - clock.now()).to_std().unwrap_or_default();
            tokio::time::sleep(
                self.settings
                    .approval_poll
                    .min(remaining.max(Duration::from_millis(10))),
            )
            .await;
        }
    }

    /// What the approver is asked to approve: release, images, migration, service changes.
    pub(in crate::exec::driver) fn approval_notice(
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
            diff: Vec::new(),
            checks: Vec::new(),
            approve_with: format!("envelope-runner approve {}", record.id),
            expires_at: deadline.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }

    /// What the migrate and deploy stages after the gate would change on ECS (read with
    /// Describe calls, bounded by [`GATE_DIFF_TIMEOUT`]; none when the run pushed no image)
    /// and the checks the deploy runs; `None` when no ECS stage follows the gate. A service
    /// ECS could not describe says why (and a notice tells the run's log); the gate opens
    /// either way.
    pub(in crate::exec::driver) async fn gate_diff(
        &self,
        step: &plan::ApprovalStep,
        plan: &Plan,
        state: &RunState,
    ) -> Option<GateDiff> {
        let images: Vec<String> = state.images.values().cloned().collect();
        let after_gate: Vec<Step> = plan
            .steps
            .iter()
            .skip_while(|s| s.name() != step.name)
            .filter(|s| matches!(s, Step::Migrate(_) | Step::Deploy(_)))
            .cloned()
            .collect();
        if after_gate.is_empty() {
            return None;
        }
        let checks = release_diff::bounded(release_diff::planned_checks(&after_gate));
        if images.is_empty() {
            return Some(GateDiff {
                diff: None,
                lines: Vec::new(),
                checks,
            });
        }
        let diff = tokio::time::timeout(GATE_DIFF_TIMEOUT, self.release_diff(&after_gate, &images))
            .await
            .unwrap_or_else(|_| {
                let why = format!("ECS did not answer within {}s", GATE_DIFF_TIMEOUT.as_secs());
                release_diff::unavailable(&after_gate, &images, &why)
            });
        if diff.has_unavailable() {
            self.events.emit(Event::Notice {
                stage: Some(step.name.clone()),
                message: "the approval shows no diff for some services: ECS could not \
                          describe them (the gate's record says why)"
                    .to_owned(),
            });
        }
        Some(GateDiff {
            lines: diff.bounded_lines(),
            diff: Some(diff),
            checks,
        })
    }

    /// Send the gate's notifications: where they went, and a warning line for each that could
    /// not be sent. A failure is loud (a warning in every output mode and in the stage's
    /// record) but never fatal: the gate still works.
    pub(in crate::exec::driver) async fn notify(
        &self,
        step: &plan::ApprovalStep,
        notice: &notify::ApprovalNotice,
    ) -> (Vec<String>, Vec<String>) {
        // Approvers read the notice outside the run: it carries no secret either.
        let Some(notice) = self.events.redactor().redact_texts(notice) else {
            let message =
                "approvers were not told: the approval notice could not be checked for secrets"
                    .to_owned();
            self.events.emit(Event::Warning {
                stage: Some(step.name.clone()),
                message: message.clone(),
            });
            return (Vec::new(), vec![message]);
        };
        let posts = step
            .notify_webhook
            .as_deref()
            .into_iter()
            .filter_map(|url| Some((url, serde_json::to_value(&notice).ok()?)))
            .collect();
        self.deliver(Delivery {
            purpose: notify::Purpose::Approval,
            stage: Some(&step.name),
            sns: step.notify_sns.as_deref(),
            subject: notice.subject(),
            text: notice.text(),
            posts,
        })
        .await
    }
}

pub(in crate::exec::driver) fn approval_verdict(
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
        Ok(StepResult::Done(Box::new(StageOutputs {
            approval: Some(decision),
            ..StageOutputs::default()
        })))
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
