//! Adaptive polling: quick looks while a change is likely soon, then a steady, capped pace.

use std::time::Duration;

/// How often a wait loop looks again: `first`, then each wait `factor` times the last, never
/// more than `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollSchedule {
    pub first: Duration,
    pub factor: f64,
    pub max: Duration,
}

impl PollSchedule {
    /// A migration task: its first seconds decide whether it started at all, and its log
    /// lines should appear within a few seconds of being written.
    pub const MIGRATION: PollSchedule = PollSchedule {
        first: Duration::from_millis(500),
        factor: 1.5,
        max: Duration::from_secs(3),
    };

    /// A rollout while its new tasks start: one DescribeServices call (up to 10 services) per
    /// look, under one a second. Once a service's new tasks all run, the deploy's wait looks
    /// more often (`deploy::pace`), since then ECS's verdict is near.
    pub const DEPLOY: PollSchedule = PollSchedule {
        first: Duration::from_millis(1000),
        factor: 1.25,
        max: Duration::from_millis(1500),
    };

    /// A fixed interval.
    pub const fn every(interval: Duration) -> PollSchedule {
        PollSchedule {
            first: interval,
            factor: 1.0,
            max: interval,
        }
    }

    /// The waits between looks, endless.
    pub fn delays(&self) -> Delays {
        Delays {
            schedule: *self,
            next: self.first.min(self.max),
        }
    }
}

/// The waits of a [`PollSchedule`].
#[derive(Debug, Clone)]
pub struct Delays {
    schedule: PollSchedule,
    next: Duration,
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let current = self.next;
        self.next = current
            .mul_f64(self.schedule.factor.max(1.0))
            .min(self.schedule.max);
        Some(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_by_the_factor_up_to_the_cap() {
        let cases: [(PollSchedule, &[u64]); 3] = [
            (
                PollSchedule::MIGRATION,
                &[500, 750, 1125, 1687, 2531, 3000, 3000],
            ),
            (PollSchedule::DEPLOY, &[1000, 1250, 1500, 1500]),
            (
                PollSchedule::every(Duration::from_secs(2)),
                &[2000, 2000, 2000],
            ),
        ];
        for (schedule, expected) in cases {
            let got: Vec<u64> = schedule
                .delays()
                .take(expected.len())
                .map(|d| d.as_millis() as u64)
                .collect();
            assert_eq!(got, expected, "{schedule:?}");
        }
    }
}
