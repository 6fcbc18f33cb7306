//! Exponential backoff between the attempts of a call that another attempt may cure: the one
//! shape every retry the runner makes itself uses (ECS calls, registry pushes, the DynamoDB
//! store's own retries). Which failures are worth another attempt is the caller's business.

use std::time::Duration;

use rand::Rng;

/// How much of each wait is random.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Anything from zero to the ceiling: many clients throttled together do not come back
    /// together.
    Full,
    /// The upper half of the ceiling: spread out, but never much shorter than planned.
    Equal,
}

/// How many attempts a call makes and how long it waits in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The ceiling of the first wait.
    pub base: Duration,
    /// No wait is longer than this.
    pub cap: Duration,
    pub jitter: Jitter,
}

impl Backoff {
    pub const fn full(max_attempts: u32, base: Duration, cap: Duration) -> Backoff {
        Backoff {
            max_attempts,
            base,
            cap,
            jitter: Jitter::Full,
        }
    }

    pub const fn equal(max_attempts: u32, base: Duration, cap: Duration) -> Backoff {
        Backoff {
            max_attempts,
            base,
            cap,
            jitter: Jitter::Equal,
        }
    }

    /// The wait after attempt number `failed_attempt` (1-based) failed: a random part (per
    /// [`Jitter`]) of the ceiling `min(cap, base * 2^(n-1))`.
    pub fn delay(&self, failed_attempt: u32, rng: &mut impl Rng) -> Duration {
        let exponent = failed_attempt.saturating_sub(1).min(20);
        let ceiling = self.base.saturating_mul(1u32 << exponent).min(self.cap);
        match self.jitter {
            Jitter::Full => ceiling.mul_f64(rng.random::<f64>()),
            Jitter::Equal => {
                let half = ceiling / 2;
                half + half.mul_f64(rng.random::<f64>())
            }
        }
    }

    /// Whether another attempt may follow attempt number `attempt` (1-based).
    pub fn allows_another(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// (failed attempt, ceiling in ms) for base 100 ms and cap 1 s.
    const CEILINGS: [(u32, u64); 6] =
        [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (9, 1000)];

    #[test]
    fn full_jitter_uses_the_whole_range_under_the_growing_ceiling() {
        let backoff = Backoff::full(10, Duration::from_millis(100), Duration::from_secs(1));
        let mut rng = StdRng::seed_from_u64(7);
        for (attempt, ceiling) in CEILINGS {
            let delays: Vec<_> = (0..500).map(|_| backoff.delay(attempt, &mut rng)).collect();
            let ms = |d: &Duration| d.as_millis() as u64;
            assert!(delays.iter().all(|d| ms(d) <= ceiling), "attempt {attempt}");
            assert!(
                delays.iter().any(|d| ms(d) < ceiling / 10),
                "attempt {attempt}"
            );
            assert!(
                delays.iter().any(|d| ms(d) > ceiling * 9 / 10),
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn equal_jitter_stays_in_the_upper_half_of_the_ceiling() {
        let backoff = Backoff::equal(10, Duration::from_millis(100), Duration::from_secs(1));
        let mut rng = StdRng::seed_from_u64(7);
        for (attempt, ceiling) in CEILINGS {
            for _ in 0..200 {
                let delay = backoff.delay(attempt, &mut rng);
                assert!(
                    delay >= Duration::from_millis(ceiling / 2)
                        && delay <= Duration::from_millis(ceiling),
                    "attempt {attempt}: {delay:?} not in {}..={ceiling} ms",
                    ceiling / 2
                );
            }
        }
        let spread: std::collections::BTreeSet<_> =
            (0..20).map(|_| backoff.delay(2, &mut rng)).collect();
        assert!(spread.len() > 10, "{spread:?}");
    }

    #[test]
    fn attempts_are_bounded_and_huge_attempt_numbers_do_not_overflow() {
        for backoff in [
            Backoff::full(4, Duration::from_secs(1), Duration::from_secs(15)),
            Backoff::equal(4, Duration::from_secs(1), Duration::from_secs(15)),
        ] {
            assert!(backoff.allows_another(1));
            assert!(backoff.allows_another(3));
            assert!(!backoff.allows_another(4));
            let mut rng = StdRng::seed_from_u64(3);
            assert!(backoff.delay(u32::MAX, &mut rng) <= backoff.cap);
        }
    }
}
