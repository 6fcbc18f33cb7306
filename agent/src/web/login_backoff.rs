//! Failed sign-ins per client address, and how long each address must wait.
//!
//! An address may fail [`FREE_FAILURES`] − 1 times freely. The next failure locks it out for
//! [`FIRST_LOCK`], and every further failure doubles the wait, up to [`MAX_LOCK`]. While an
//! address is locked out `POST /login` answers 429 with `Retry-After` without looking at the
//! token, so a right guess during the wait is not confirmed. A success clears the address;
//! failures are forgotten [`FORGET_AFTER`] after the last one. IPv6 clients are counted per
//! /64, the block one client usually holds. Pure: the time is passed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The failure that first locks an address out.
pub const FREE_FAILURES: u32 = 5;
/// The first wait; each later failure doubles it.
pub const FIRST_LOCK: Duration = Duration::from_secs(1);
/// The longest wait.
pub const MAX_LOCK: Duration = Duration::from_secs(15 * 60);
/// Failures are forgotten this long after an address's last one.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Addresses remembered at most; past it, forgotten ones go first, then the oldest.
const MAX_CLIENTS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// The failed sign-ins of this process, by client.
#[derive(Debug, Default)]
pub struct LoginBackoff {
    clients: Mutex<HashMap<IpAddr, Failures>>,
}

/// The key an address is counted under: itself, or its /64 for IPv6.
fn client_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

/// The wait after `count` failures in a row.
fn lock_for(count: u32) -> Option<Duration> {
    let doublings = count.checked_sub(FREE_FAILURES)?;
    Some(
        FIRST_LOCK
            .checked_mul(1u32.checked_shl(doublings).unwrap_or(u32::MAX))
            .unwrap_or(MAX_LOCK)
            .min(MAX_LOCK),
    )
}

impl LoginBackoff {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.clients
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// How long `client` must still wait before its next sign-in, if it must.
    pub fn retry_after(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        let clients = self.lock();
        let until = clients.get(&client_key(client))?.locked_until?;
        until
            .checked_duration_since(now)
            .filter(|wait| !wait.is_zero())
    }

    /// Count a failed sign-in from `client`; returns the wait it now has, if any.
    pub fn failed(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        let mut clients = self.lock();
        if clients.len() >= MAX_CLIENTS {
            clients.retain(|_, failures| now.duration_since(failures.last) < FORGET_AFTER);
        }
        if clients.len() >= MAX_CLIENTS
            && let Some(oldest) = clients
                .iter()
                .min_by_key(|(_, failures)| failures.last)
                .map(|(key, _)| *key)
        {
            clients.remove(&oldest);
        }
        let failures = clients.entry(client_key(client)).or_insert(Failures {
            count: 0,
            last: now,
            locked_until: None,
        });
        if now.duration_since(failures.last) >= FORGET_AFTER {
            failures.count = 0;
        }
        failures.count = failures.count.saturating_add(1);
        failures.last = now;
        let wait = lock_for(failures.count);
        failures.locked_until = wait.map(|wait| now + wait);
        wait
    }

    /// A successful sign-in from `client` clears its failures.
    pub fn succeeded(&self, client: IpAddr) {
        self.lock().remove(&client_key(client));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fifth_failure_locks_and_each_later_one_doubles_the_wait() {
        let backoff = LoginBackoff::default();
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        let other: IpAddr = "203.0.113.8".parse().unwrap();
        let start = Instant::now();
        for _ in 1..FREE_FAILURES {
            assert_eq!(backoff.failed(client, start), None);
        }
        assert_eq!(backoff.retry_after(client, start), None);
        assert_eq!(backoff.failed(client, start), Some(Duration::from_secs(1)));
        assert_eq!(
            backoff.retry_after(client, start + Duration::from_millis(400)),
            Some(Duration::from_millis(600))
        );
        assert_eq!(backoff.retry_after(other, start), None);
        let later = start + Duration::from_secs(1);
        assert_eq!(backoff.retry_after(client, later), None);
        assert_eq!(backoff.failed(client, later), Some(Duration::from_secs(2)));
        assert_eq!(backoff.failed(client, later), Some(Duration::from_secs(4)));
        for _ in 0..40 {
            backoff.failed(client, later);
        }
        assert_eq!(backoff.retry_after(client, later), Some(MAX_LOCK));
        backoff.succeeded(client);
        assert_eq!(backoff.retry_after(client, later), None);
    }

    #[test]
    fn failures_are_forgotten_after_a_quiet_while() {
        let backoff = LoginBackoff::default();
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        let start = Instant::now();
        for _ in 1..FREE_FAILURES {
            backoff.failed(client, start);
        }
        assert_eq!(backoff.failed(client, start + FORGET_AFTER), None);
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        assert_eq!(
            client_key("2001:db8:1:2:aaaa::1".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_key("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }
}
