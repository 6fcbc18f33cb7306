//! The time leases are measured against.
//!
//! Lease expiry compares against this clock, never against SQLite's (or DynamoDB's) idea of
//! now, so every store implementation agrees and tests can expire a lease without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Where the store reads the current time.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Milliseconds since the Unix epoch, when the time is set by hand (tests).
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The machine's wall clock.
    pub fn system() -> Self {
        Clock { manual: None }
    }

    pub fn now(&self) -> DateTime<Utc> {
        match &self.manual {
            None => Utc::now(),
            Some(millis) => from_millis(millis.load(Ordering::SeqCst)),
        }
    }

    pub(crate) fn now_millis(&self) -> i64 {
        match &self.manual {
            None => Utc::now().timestamp_millis(),
            Some(millis) => millis.load(Ordering::SeqCst),
        }
    }
}

/// A clock that moves only when told to; hand [`ManualClock::clock`] to a store.
#[derive(Debug, Clone)]
pub struct ManualClock {
    millis: Arc<AtomicI64>,
}

impl ManualClock {
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        ManualClock {
            millis: Arc::new(AtomicI64::new(start.timestamp_millis())),
        }
    }

    /// A clock that reads this one's time (and follows every later `advance`).
    pub fn clock(&self) -> Clock {
        Clock {
            manual: Some(Arc::clone(&self.millis)),
        }
    }

    pub fn advance(&self, by: Duration) {
        self.millis.fetch_add(duration_millis(by), Ordering::SeqCst);
    }
}

/// Milliseconds of a duration, saturating (a lease of centuries is still a lease).
pub(crate) fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn from_millis(millis: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis).unwrap_or(DateTime::<Utc>::MAX_UTC)
}
