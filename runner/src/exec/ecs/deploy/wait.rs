//! The wait: every service's deployment polled until it completes, fails or times out,
//! with its rollout progress and new service events reported as they change.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use aws_sdk_ecs::types::Service;
use aws_smithy_types::date_time::Format;
use tokio::time::Instant;

use super::judge::{Judgement, judge, rollout_of};
use super::pace::{Pace, RolloutPhase};
use super::{
    Deploy, DeployProgress, DeployReport, DeployedService, Phase, Progress, RolloutFailure,
    SERVICES_PER_CALL,
};
use crate::exec::ecs::EcsError;

impl Deploy<'_> {
    /// Waits for every service's deployment, one DescribeServices call per poll for up to 10
    /// services. On the first failure (or at the timeout) it stops waiting and, with
    /// `on_failure: rollback`, rolls every service of the release back and waits for that.
    pub async fn wait(&mut self, progress: Progress<'_>) -> Result<DeployReport, EcsError> {
        if self.record.deployments.len() < self.request.services.len() {
            self.update(progress).await?;
        }
        let targets: Vec<(String, String)> = self
            .request
            .services
            .iter()
            .map(|name| (name.clone(), self.record.deployments[name].clone()))
            .collect();
        let results = self
            .wait_for(&targets, Phase::Deploy, self.request.timeout, progress)
            .await?;
        let failures: Vec<(String, RolloutFailure)> = results
            .into_iter()
            .filter_map(|(name, result)| result.err().map(|failure| (name, failure)))
            .collect();
        if !failures.is_empty() {
            return Err(self.fail(failures, progress).await);
        }
        let failures = self.verify(progress).await;
        if !failures.is_empty() {
            return Err(self.fail(failures, progress).await);
        }
        Ok(DeployReport {
            services: targets
                .into_iter()
                .map(|(service, deployment_id)| DeployedService {
                    task_definition: self.record.task_definitions[&service].clone(),
                    service,
                    deployment_id,
                })
                .collect(),
            polls: self.polls,
        })
    }

    /// Polls until every target has a verdict, the first failure, or the timeout; quickly
    /// once a service still waited for runs all its new tasks (see [`pace`](super::pace)).
    pub(super) async fn wait_for(
        &mut self,
        targets: &[(String, String)],
        phase: Phase,
        timeout: Duration,
        progress: Progress<'_>,
    ) -> Result<Vec<(String, Result<(), RolloutFailure>)>, EcsError> {
        let deadline = Instant::now() + timeout;
        let mut pace = Pace::new(self.request.poll);
        // The first look comes after a first wait: right after UpdateService a look would
        // only show what UpdateService answered (a re-attached wait loses a second at most).
        let mut delay = pace.next(RolloutPhase::Starting);
        let mut verdicts: BTreeMap<String, Result<(), RolloutFailure>> = BTreeMap::new();
        let mut latest: BTreeMap<String, Service> = BTreeMap::new();
        loop {
            let pending: Vec<String> = targets
                .iter()
                .filter(|(name, _)| !verdicts.contains_key(name))
                .map(|(name, _)| name.clone())
                .collect();
            if pending.is_empty() {
                break;
            }
            tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
            self.polls += 1;
            let mut still_rolling = Vec::new();
            for chunk in pending.chunks(SERVICES_PER_CALL) {
                let output = self
                    .aws
                    .describe_services(&self.request.cluster, chunk)
                    .await?;
                let mut seen = HashSet::new();
                for service in output.services.unwrap_or_default() {
                    let Some(name) = service.service_name.clone() else {
                        continue;
                    };
                    let Some((_, deployment_id)) = targets.iter().find(|(n, _)| *n == name) else {
                        continue;
                    };
                    seen.insert(name.clone());
                    self.show_events(&name, &service, progress);
                    let rollout = rollout_of(&service, &name, phase, deployment_id);
                    if self.last_rollout.get(&name) != Some(&rollout) {
                        progress(DeployProgress::Rollout(rollout.clone()));
                        self.last_rollout.insert(name.clone(), rollout.clone());
                    }
                    match judge(&service, deployment_id) {
                        Judgement::Rolling => still_rolling.push(rollout),
                        Judgement::Completed => {
                            progress(DeployProgress::Finished {
                                service: name.clone(),
                                phase,
                                outcome: Ok(()),
                            });
                            verdicts.insert(name.clone(), Ok(()));
                        }
                        Judgement::Failed(failure) => {
                            progress(DeployProgress::Finished {
                                service: name.clone(),
                                phase,
                                outcome: Err(failure.clone()),
                            });
                            verdicts.insert(name.clone(), Err(failure));
                        }
                    }
                    latest.insert(name, service);
                }
                for name in chunk {
                    if !seen.contains(name) {
                        let failure = RolloutFailure::ServiceGone {
                            status: "missing".to_owned(),
                        };
                        progress(DeployProgress::Finished {
                            service: name.clone(),
                            phase,
                            outcome: Err(failure.clone()),
                        });
                        verdicts.insert(name.clone(), Err(failure));
                    }
                }
            }
            // A failed deploy stops the wait at once: the rollback starts now, for all.
            if phase == Phase::Deploy && verdicts.values().any(Result::is_err) {
                break;
            }
            if verdicts.len() == targets.len() {
                break;
            }
            if Instant::now() >= deadline {
                for (name, deployment_id) in targets {
                    if verdicts.contains_key(name) {
                        continue;
                    }
                    let rollout = latest
                        .get(name)
                        .map(|service| rollout_of(service, name, phase, deployment_id));
                    let failure = RolloutFailure::TimedOut {
                        running: rollout.as_ref().map_or(0, |r| r.new.running),
                        desired: rollout.as_ref().map_or(0, |r| r.new.desired),
                        rollout_state: rollout.map(|r| r.rollout_state).unwrap_or_default(),
                    };
                    progress(DeployProgress::Finished {
                        service: name.clone(),
                        phase,
                        outcome: Err(failure.clone()),
                    });
                    verdicts.insert(name.clone(), Err(failure));
                }
                break;
            }
            delay = pace.next(RolloutPhase::of(&still_rolling));
        }
        Ok(targets
            .iter()
            .filter_map(|(name, _)| verdicts.remove(name).map(|v| (name.clone(), v)))
            .collect())
    }

    pub(super) fn remember_events(&mut self, name: &str, service: &Service) {
        let seen = self.seen_events.entry(name.to_owned()).or_default();
        for event in service.events.as_deref().unwrap_or_default() {
            if let Some(id) = &event.id {
                seen.insert(id.clone());
            }
        }
    }

    /// Emits the service's events not shown before, oldest first.
    fn show_events(&mut self, name: &str, service: &Service, progress: Progress<'_>) {
        let seen = self.seen_events.entry(name.to_owned()).or_default();
        let mut new = Vec::new();
        for event in service.events.as_deref().unwrap_or_default() {
            let Some(id) = &event.id else { continue };
            if seen.insert(id.clone()) {
                new.push(event);
            }
        }
        // ECS lists events newest first.
        for event in new.into_iter().rev() {
            progress(DeployProgress::ServiceEvent {
                service: name.to_owned(),
                at: event
                    .created_at
                    .and_then(|t| t.fmt(Format::DateTime).ok())
                    .unwrap_or_default(),
                message: event.message.clone().unwrap_or_default(),
            });
        }
    }
}
