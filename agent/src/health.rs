//! `GET /healthz`: whether this agent can do its job. Three checks, each with a reason:
//!
//! - **store**: a one-run listing answers within [`CHECK_TIMEOUT`];
//! - **docker**: the daemon the runner would use (`DOCKER_HOST` with its TLS files, else the
//!   Docker context, else the local socket; `envelope_runner::exec::docker_host`) answers a
//!   ping, when a watched pipeline builds images (the only stages that need it); otherwise
//!   not checked;
//! - **poll**: GitHub answered a poll (200 or 304) within the last three poll intervals, or,
//!   while GitHub's rate limit pauses polling, three intervals after the pause ends.
//!
//! Any failing check makes the answer 503, so a load balancer or systemd watchdog can act.
//! Reports are kept for [`REPORT_TTL`], so the endpoint, open to anyone, cannot be used to
//! load the store or the daemon.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envelope_runner::store::Store;
use serde::Serialize;

use crate::poller::Poller;

/// Longest wait for the store or Docker.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one report answers every request.
const REPORT_TTL: Duration = Duration::from_secs(1);
/// Successful polls may be this many intervals apart before the agent is unhealthy.
const STALE_INTERVALS: u32 = 3;

/// One check's outcome.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    pub ok: bool,
    pub detail: String,
}

impl Check {
    fn ok(detail: impl Into<String>) -> Self {
        Check {
            ok: true,
            detail: detail.into(),
        }
    }

    fn failed(detail: impl Into<String>) -> Self {
        Check {
            ok: false,
            detail: detail.into(),
        }
    }
}

/// The body of `/healthz`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// `ok` or `unhealthy`.
    pub status: &'static str,
    pub store: Check,
    pub docker: Check,
    pub poll: Check,
    /// Seconds since GitHub last answered a poll; `None` before the first answer.
    pub last_poll_seconds_ago: Option<f64>,
}

impl Report {
    pub fn healthy(&self) -> bool {
        self.store.ok && self.docker.ok && self.poll.ok
    }
}

/// What the checks look at.
pub struct Health {
    store: Arc<dyn Store>,
    poller: Arc<Poller>,
    /// A watched pipeline builds images.
    docker_needed: bool,
    interval: Duration,
    started: Instant,
    cached: Mutex<Option<(Instant, Report)>>,
}

impl Health {
    pub fn new(
        store: Arc<dyn Store>,
        poller: Arc<Poller>,
        docker_needed: bool,
        interval: Duration,
    ) -> Self {
        Health {
            store,
            poller,
            docker_needed,
            interval,
            started: Instant::now(),
            cached: Mutex::new(None),
        }
    }

    /// The current report (at most [`REPORT_TTL`] old).
    pub async fn report(&self) -> Report {
        if let Some((at, report)) = &*lock(&self.cached)
            && at.elapsed() < REPORT_TTL
        {
            return report.clone();
        }
        let (store, docker) = tokio::join!(self.store_check(), self.docker_check());
        let now = Instant::now();
        let last_poll = self.poller.last_answered();
        let poll = poll_check(
            now,
            self.started,
            last_poll,
            self.poller.paused_for(),
            self.interval,
        );
        let mut report = Report {
            status: "ok",
            store,
            docker,
            poll,
            last_poll_seconds_ago: last_poll.map(|at| now.duration_since(at).as_secs_f64()),
        };
        if !report.healthy() {
            report.status = "unhealthy";
        }
        *lock(&self.cached) = Some((now, report.clone()));
        report
    }

    async fn store_check(&self) -> Check {
        match tokio::time::timeout(CHECK_TIMEOUT, self.store.list_runs(None, 1, None)).await {
            Ok(Ok(_)) => Check::ok("the store answers"),
            Ok(Err(error)) => Check::failed(format!("the store does not answer: {error}")),
            Err(_) => Check::failed(format!(
                "the store did not answer within {}s",
                CHECK_TIMEOUT.as_secs()
            )),
        }
    }

    async fn docker_check(&self) -> Check {
        if !self.docker_needed {
            return Check::ok("not checked: no watched pipeline builds images");
        }
        // The daemon exactly as the runner chooses it.
        let (docker, target) = match envelope_runner::exec::docker_host::from_environment() {
            Ok(connected) => connected,
            Err(error) => {
                return Check::failed(format!(
                    "{error}; builds would fail. Start the daemon or fix DOCKER_HOST / DOCKER_CONTEXT"
                ));
            }
        };
        match tokio::time::timeout(CHECK_TIMEOUT, docker.ping()).await {
            Ok(Ok(_)) => Check::ok(format!("the Docker daemon at {target} answers")),
            Ok(Err(error)) => Check::failed(format!(
                "the Docker daemon at {target} does not answer: {error}; builds would fail. Start the daemon or fix DOCKER_HOST / DOCKER_CONTEXT"
            )),
            Err(_) => Check::failed(format!(
                "the Docker daemon at {target} did not answer within {}s; builds would fail",
                CHECK_TIMEOUT.as_secs()
            )),
        }
    }
}

/// Whether polling is current at `now`. Pure.
fn poll_check(
    now: Instant,
    started: Instant,
    last_answered: Option<Instant>,
    paused_for: Option<Duration>,
    interval: Duration,
) -> Check {
    let limit = interval * STALE_INTERVALS + paused_for.unwrap_or_default();
    let since = last_answered.unwrap_or(started);
    let age = now.saturating_duration_since(since);
    let seconds = |duration: Duration| format!("{:.1}s", duration.as_secs_f64());
    match (last_answered, age <= limit) {
        (Some(_), true) => Check::ok(format!("GitHub answered a poll {} ago", seconds(age))),
        (None, true) => Check::ok("starting: no poll answered yet"),
        (Some(_), false) => Check::failed(format!(
            "GitHub last answered a poll {} ago, longer than {} ({STALE_INTERVALS} poll intervals); see the agent's log for the poll errors",
            seconds(age),
            seconds(limit)
        )),
        (None, false) => Check::failed(format!(
            "GitHub has not answered a poll in the {} since the agent started; check github.api_url, the token and the network (the agent's log says more)",
            seconds(age)
        )),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_is_current_within_three_intervals_plus_any_rate_limit_pause() {
        let start = Instant::now();
        let minute = Duration::from_secs(60);
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let cases = [
            (at(100), None, None, true),
            (at(181), None, None, false),
            (at(300), Some(at(200)), None, true),
            (at(390), Some(at(200)), None, false),
            (at(390), Some(at(200)), Some(Duration::from_secs(600)), true),
        ];
        for (now, last, paused, expected) in cases {
            let check = poll_check(now, start, last, paused, minute);
            assert_eq!(check.ok, expected, "{check:?}");
        }
        let stale = poll_check(at(390), start, Some(at(200)), None, minute);
        assert_eq!(
            stale.detail,
            "GitHub last answered a poll 190.0s ago, longer than 180.0s (3 poll intervals); see the agent's log for the poll errors"
        );
    }
}
