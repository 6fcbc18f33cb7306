//! The backoff of pushes and registry checks: exponential with equal jitter, for the failures
//! a second attempt can cure (a connection reset midway, a 5xx, throttling), and never for
//! the ones it cannot (refused credentials, an immutable tag); which is which is `error`'s.

use std::time::Duration;

pub(crate) use crate::backoff::Backoff;

/// Four attempts over roughly 1 + 2 + 4 seconds: long enough to ride out a registry's restart
/// or a burst of throttling, short enough that a broken registry fails the run within
/// seconds. Equal jitter spreads several runners retrying the same registry.
pub(crate) const PUSH: Backoff = Backoff::equal(4, Duration::from_secs(1), Duration::from_secs(15));
