//! Exponential backoff with jitter for the failures a second attempt can cure (a connection
//! reset midway, a 5xx, throttling), and never for the ones it cannot (refused credentials,
//! an immutable tag).

use std::time::Duration;

use rand::Rng;

/// How many attempts a push or a check makes, and how long it waits in between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backoff {
    /// Attempts in all, the first included.
    pub(crate) max_attempts: u32,
    /// The wait after the first failed attempt, before jitter.
    pub(crate) base: Duration,
    /// No wait is longer than this.
    pub(crate) cap: Duration,
}

impl Backoff {
    /// Four attempts over roughly 1 + 2 + 4 seconds: long enough to ride out a registry's
    /// restart or a burst of throttling, short enough that a broken registry fails the run
    /// within seconds.
    pub(crate) const PUSH: Backoff = Backoff {
        max_attempts: 4,
        base: Duration::from_secs(1),
        cap: Duration::from_secs(15),
    };

    /// The wait after attempt number `failed_attempt` (1-based) failed: the exponential
    /// delay `base * 2^(n-1)` capped at `cap`, of which a random half is taken off
    /// ("equal jitter"), so that several runners retrying the same registry spread out.
    pub(crate) fn delay(&self, failed_attempt: u32, rng: &mut impl Rng) -> Duration {
        let exponent = failed_attempt.saturating_sub(1).min(16);
        let full = self.base.saturating_mul(1u32 << exponent).min(self.cap);
        let half = full / 2;
        half + half.mul_f64(rng.random::<f64>())
    }

    /// Whether another attempt may follow attempt number `attempt` (1-based).
    pub(crate) fn allows_another(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn delays_grow_exponentially_within_jitter_and_stop_at_the_cap() {
        let backoff = Backoff {
            max_attempts: 10,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(1000),
        };
        let mut rng = StdRng::seed_from_u64(7);
        // (failed attempt, lowest possible, highest possible)
        let cases = [
            (1, 50, 100),
            (2, 100, 200),
            (3, 200, 400),
            (4, 400, 800),
            (5, 500, 1000),
            (9, 500, 1000),
        ];
        for (attempt, low, high) in cases {
            for _ in 0..200 {
                let delay = backoff.delay(attempt, &mut rng);
                assert!(
                    delay >= Duration::from_millis(low) && delay <= Duration::from_millis(high),
                    "attempt {attempt}: {delay:?} not in {low}..={high} ms"
                );
            }
        }
    }

    #[test]
    fn jitter_spreads_the_delays() {
        let mut rng = StdRng::seed_from_u64(1);
        let delays: std::collections::BTreeSet<_> =
            (0..20).map(|_| Backoff::PUSH.delay(2, &mut rng)).collect();
        assert!(delays.len() > 10, "{delays:?}");
    }

    #[test]
    fn attempts_are_bounded() {
        let backoff = Backoff::PUSH;
        assert!(backoff.allows_another(1));
        assert!(backoff.allows_another(backoff.max_attempts - 1));
        assert!(!backoff.allows_another(backoff.max_attempts));
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let mut rng = StdRng::seed_from_u64(3);
        assert!(Backoff::PUSH.delay(u32::MAX, &mut rng) <= Backoff::PUSH.cap);
    }
}
