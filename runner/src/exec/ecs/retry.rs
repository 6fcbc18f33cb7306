//! AWS call hygiene: which failures another attempt can cure, the backoff between attempts
//! (full jitter), and a limiter that holds RegisterTaskDefinition to its sustained
//! rate of one call per second however many services deploy at once.

use std::time::Duration;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use tokio::sync::Mutex;
use tokio::time::Instant;

pub use crate::aws_error::THROTTLING_CODES;

/// What another attempt of a failed call can achieve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// AWS asked us to slow down; the request was not carried out.
    Throttled,
    /// The request may or may not have been carried out (timeout, connection reset, 5xx).
    Transient,
    /// Another attempt gets the same answer (a missing service, a bad parameter, no access).
    Permanent,
}

/// Sorts an SDK error into [`Failure`] by its error code and HTTP status.
pub(crate) fn classify<E>(error: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    // No attempt cures missing, expired or refused credentials.
    if crate::aws_error::AwsFailure::of(error).is_credentials() {
        return Failure::Permanent;
    }
    match error {
        SdkError::ServiceError(context) => {
            if is_throttling_code(context.err().code()) {
                return Failure::Throttled;
            }
            let status = context.raw().status().as_u16();
            if status == 429 {
                Failure::Throttled
            } else if matches!(status, 500 | 502 | 503 | 504) {
                Failure::Transient
            } else {
                Failure::Permanent
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Failure::Transient
        }
        SdkError::ConstructionFailure(_) => Failure::Permanent,
        _ => Failure::Permanent,
    }
}

/// Whether `code` is one of the [`THROTTLING_CODES`].
pub fn is_throttling_code(code: Option<&str>) -> bool {
    code.is_some_and(|code| THROTTLING_CODES.contains(&code))
}

pub use crate::backoff::Backoff;

/// Eight attempts whose ceilings grow 0.2, 0.4, 0.8 … 12.8 s with full jitter (about 25 s in
/// all at worst): enough to ride out a burst of throttling from several pipelines deploying
/// at once, short enough that a broken endpoint fails the stage within a minute.
pub const ECS_BACKOFF: Backoff =
    Backoff::full(8, Duration::from_millis(200), Duration::from_secs(20));

/// Spaces calls at least `interval` apart, across every task that shares it.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    interval: Duration,
    next_free: Mutex<Option<Instant>>,
}

impl RateLimiter {
    pub(crate) fn new(interval: Duration) -> Self {
        RateLimiter {
            interval,
            next_free: Mutex::new(None),
        }
    }

    /// Waits for this caller's slot. Callers queue in arrival order (tokio's mutex is fair),
    /// so a service that asked first registers first.
    pub(crate) async fn acquire(&self) {
        let mut next_free = self.next_free.lock().await;
        let now = Instant::now();
        let slot = match *next_free {
            Some(at) if at > now => at,
            _ => now,
        };
        tokio::time::sleep_until(slot).await;
        *next_free = Some(slot + self.interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn throttling_is_recognised_by_code_alone() {
        for (code, throttled) in [
            (Some("ThrottlingException"), true),
            (Some("Throttling"), true),
            (Some("TooManyRequestsException"), true),
            (Some("RequestLimitExceeded"), true),
            (Some("ClientException"), false),
            (Some("ServiceNotFoundException"), false),
            (None, false),
        ] {
            assert_eq!(is_throttling_code(code), throttled, "{code:?}");
        }
    }

    #[tokio::test]
    async fn the_limiter_spaces_concurrent_callers_one_interval_apart() {
        let interval = Duration::from_millis(100);
        let limiter = Arc::new(RateLimiter::new(interval));
        let start = Instant::now();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    limiter.acquire().await;
                    Instant::now() - start
                })
            })
            .collect();
        let mut times = Vec::new();
        for handle in handles {
            times.push(handle.await.unwrap());
        }
        times.sort();
        assert!(
            times[0] < interval,
            "the first caller goes at once: {times:?}"
        );
        // Slots are one interval apart and a sleeper never wakes early (it may wake late on
        // a busy machine), so the i-th caller goes no sooner than i intervals in.
        for (index, time) in times.iter().enumerate() {
            assert!(*time >= interval * index as u32, "{times:?}");
        }
        // After a quiet spell the next caller goes at once.
        tokio::time::sleep(interval * 2).await;
        let before = Instant::now();
        limiter.acquire().await;
        assert!(Instant::now() - before < interval);
    }
}
