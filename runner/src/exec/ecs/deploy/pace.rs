//! How often a rollout's wait calls DescribeServices: at the request's steady pace while the
//! new tasks start, and quickly once every new task of a service still waited for is running,
//! because then ECS's COMPLETED is near (ECS completes a deployment once its new tasks are
//! stable and the old ones drained). Pure: the wait loop tells it what the last poll saw.

use std::time::Duration;

use super::ServiceRollout;
use crate::exec::ecs::poll::{Delays, PollSchedule};

/// The waits once a service's new tasks all run: quick looks first (the verdict follows
/// COMPLETED within a fraction of a second), growing back to the steady cap when ECS takes
/// its time (an old task draining from a load balancer can take minutes).
pub(crate) const SETTLING: PollSchedule = PollSchedule {
    first: Duration::from_millis(350),
    factor: 1.1,
    max: Duration::from_millis(1500),
};

/// Where the services still waited for stand, as the last poll saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RolloutPhase {
    /// Some new tasks are not running yet.
    Starting,
    /// A service's new deployment runs every task it wants; its verdict is due.
    Settling,
}

impl RolloutPhase {
    /// Settling when at least one of `rollouts` (the services still without a verdict) runs
    /// all the tasks its new deployment wants.
    pub(crate) fn of<'r>(rollouts: impl IntoIterator<Item = &'r ServiceRollout>) -> RolloutPhase {
        let settling = rollouts
            .into_iter()
            .any(|rollout| rollout.new.desired > 0 && rollout.new.running >= rollout.new.desired);
        if settling {
            RolloutPhase::Settling
        } else {
            RolloutPhase::Starting
        }
    }
}

/// The waits between polls: `starting` (the request's schedule) until the rollout settles,
/// then [`SETTLING`], each schedule starting over when the phase changes.
#[derive(Debug, Clone)]
pub(crate) struct Pace {
    starting: PollSchedule,
    phase: RolloutPhase,
    delays: Delays,
}

impl Pace {
    pub(crate) fn new(starting: PollSchedule) -> Pace {
        Pace {
            starting,
            phase: RolloutPhase::Starting,
            delays: starting.delays(),
        }
    }

    /// The wait before the next poll, given the phase the last poll saw.
    pub(crate) fn next(&mut self, phase: RolloutPhase) -> Duration {
        if phase != self.phase {
            self.phase = phase;
            self.delays = match phase {
                RolloutPhase::Starting => self.starting.delays(),
                RolloutPhase::Settling => SETTLING.delays(),
            };
        }
        self.delays.next().unwrap_or(self.starting.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::ecs::deploy::{DeploymentCounts, Phase};
    use tokio::time::Instant;

    fn rollout(running: i32, desired: i32) -> ServiceRollout {
        ServiceRollout {
            service: "envelope-prod-api".into(),
            phase: Phase::Deploy,
            deployment_id: "ecs-svc/1".into(),
            new: DeploymentCounts {
                running,
                desired,
                pending: 0,
                failed: 0,
            },
            old: DeploymentCounts::default(),
            rollout_state: "IN_PROGRESS".into(),
        }
    }

    #[test]
    fn a_rollout_settles_once_one_waited_for_service_runs_all_its_new_tasks() {
        use RolloutPhase::*;
        let cases: [(&str, Vec<ServiceRollout>, RolloutPhase); 5] = [
            ("nothing running yet", vec![rollout(0, 2)], Starting),
            ("half the tasks", vec![rollout(1, 2)], Starting),
            ("all running", vec![rollout(2, 2)], Settling),
            (
                "one of two services",
                vec![rollout(0, 1), rollout(1, 1)],
                Settling,
            ),
            (
                "a deployment that wants no task yet",
                vec![rollout(0, 0)],
                Starting,
            ),
        ];
        for (name, rollouts, expected) in cases {
            assert_eq!(RolloutPhase::of(&rollouts), expected, "{name}");
        }
    }

    #[test]
    fn the_schedule_starts_over_when_the_phase_changes() {
        use RolloutPhase::*;
        let starting = PollSchedule::DEPLOY;
        let mut pace = Pace::new(starting);
        let phases = [
            Starting, Starting, Settling, Settling, Settling, Starting, Settling,
        ];
        let got: Vec<Duration> = phases.iter().map(|phase| pace.next(*phase)).collect();
        let ms = Duration::from_millis;
        assert_eq!(
            got,
            [
                starting.first,
                starting.first.mul_f64(starting.factor),
                ms(350),
                ms(385),
                Duration::from_micros(423_500),
                starting.first,
                ms(350),
            ]
        );
    }

    /// A rollout as ECS reports it: the new tasks run from `running_at`, the deployment is
    /// COMPLETED from `completed_at` (both from the UpdateService call).
    struct Rollout {
        running_at: Duration,
        completed_at: Duration,
    }

    /// The wait loop's pacing on a paused clock (a wait, then a look, as `Deploy::wait_for`
    /// does): looks until one sees COMPLETED; returns the number of looks and how long after
    /// COMPLETED the last one came.
    async fn poll_until_completed(rollout: &Rollout) -> (u32, Duration) {
        let start = Instant::now();
        let mut pace = Pace::new(PollSchedule::DEPLOY);
        let mut phase = RolloutPhase::Starting;
        let mut polls = 0;
        loop {
            tokio::time::sleep(pace.next(phase)).await;
            let now = start.elapsed();
            polls += 1;
            if now >= rollout.completed_at {
                return (polls, now - rollout.completed_at);
            }
            let running = i32::from(now >= rollout.running_at);
            phase = RolloutPhase::of(&[rollout_with(running)]);
        }
    }

    fn rollout_with(running: i32) -> ServiceRollout {
        rollout(running, 1)
    }

    #[tokio::test(start_paused = true)]
    async fn the_verdict_follows_completed_quickly_and_polls_stay_few() {
        let seconds = Duration::from_secs_f64;
        // (what, tasks running at, COMPLETED at, most polls, longest lag after COMPLETED)
        let cases = [
            ("ministack, quick start", 0.6, 1.6, 3, 0.4),
            ("ministack, slower start", 1.0, 2.0, 4, 0.4),
            ("ministack, loaded machine", 2.2, 3.2, 5, 0.4),
            (
                "Fargate: a minute to start, five minutes of draining",
                60.0,
                360.0,
                260,
                1.5,
            ),
        ];
        for (what, running_at, completed_at, most_polls, longest_lag) in cases {
            let rollout = Rollout {
                running_at: seconds(running_at),
                completed_at: seconds(completed_at),
            };
            let (polls, lag) = poll_until_completed(&rollout).await;
            assert!(polls <= most_polls, "{what}: {polls} polls");
            assert!(lag <= seconds(longest_lag), "{what}: verdict {lag:?} late");
        }
    }
}
