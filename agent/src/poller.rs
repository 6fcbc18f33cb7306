//! Polling GitHub for new releases.
//!
//! Each repository is polled once per interval, the polls spread evenly over it (one every
//! `interval / repositories`), so a hundred repositories make a steady trickle of requests,
//! not a burst. Every request is conditional on the `ETag` of the last list: an unchanged list
//! is a `304` that costs no rate limit. When GitHub says the rate limit is spent (or asks to
//! retry after a while), all polling pauses until then: the limit belongs to the token, not to
//! one repository.
//!
//! A new list is only trusted once every release in it is settled (started, found started, or
//! refused); until then its `ETag` is not kept, so the next poll looks at it again.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::WatchedRepository;
use crate::github::{GithubClient, Listing};
use crate::metrics::{Metrics, PollResult};
use crate::release::{Release, ReleaseFilter, Skip};
use crate::scheduler::{Offer, Scheduler, Via};

/// Polls in flight at once; a slot whose poll cannot start (GitHub is slow) is skipped.
const MAX_IN_FLIGHT: usize = 4;

/// One watched repository: its settings, and what polling learned about it.
pub struct WatchedEntry {
    pub config: WatchedRepository,
    pub filter: ReleaseFilter,
    state: tokio::sync::Mutex<PollState>,
}

#[derive(Default)]
struct PollState {
    etag: Option<String>,
    /// Releases settled in this process: not offered again.
    handled: HashSet<u64>,
    /// When agents began watching the repository (from the store, on first need).
    since: Option<DateTime<Utc>>,
    /// The last error, logged once rather than every poll.
    last_error: Option<String>,
}

/// What the webhook learns from offering a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOffer {
    /// The repository is not in the configuration.
    NotWatched,
    /// The release does not start a run (draft, prerelease, tag).
    Skipped(&'static str),
    Offered(Offer),
}

impl std::fmt::Display for WebhookOffer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WebhookOffer::NotWatched => formatter.write_str("the repository is not watched"),
            WebhookOffer::Skipped(reason) => write!(formatter, "skipped: it is {reason}"),
            WebhookOffer::Offered(offer) => offer.fmt(formatter),
        }
    }
}

/// The poll loop and the repositories it watches.
pub struct Poller {
    github: GithubClient,
    scheduler: Scheduler,
    metrics: Arc<Metrics>,
    entries: Vec<Arc<WatchedEntry>>,
    by_name: BTreeMap<String, Arc<WatchedEntry>>,
    interval: Duration,
    paused_until: Mutex<Option<DateTime<Utc>>>,
    /// When GitHub last answered a poll (200 or 304), for `/healthz`.
    last_answered: Mutex<Option<Instant>>,
}

impl Poller {
    /// `repositories` with the tag patterns that apply to each (the configured ones, or the
    /// pipeline's); each is polled every `interval`.
    pub fn new(
        github: GithubClient,
        scheduler: Scheduler,
        metrics: Arc<Metrics>,
        repositories: Vec<(WatchedRepository, Vec<String>)>,
        interval: Duration,
    ) -> Self {
        let entries: Vec<Arc<WatchedEntry>> = repositories
            .into_iter()
            .map(|(config, patterns)| {
                Arc::new(WatchedEntry {
                    filter: ReleaseFilter::new(&patterns, config.include_prereleases),
                    config,
                    state: tokio::sync::Mutex::default(),
                })
            })
            .collect();
        let by_name = entries
            .iter()
            .map(|entry| (entry.config.repository.to_ascii_lowercase(), entry.clone()))
            .collect();
        metrics.poll_interval(interval);
        Poller {
            github,
            scheduler,
            metrics,
            entries,
            by_name,
            interval,
            paused_until: Mutex::new(None),
            last_answered: Mutex::new(None),
        }
    }

    /// When GitHub last answered a poll with a release list (or that it is unchanged).
    pub fn last_answered(&self) -> Option<Instant> {
        *lock(&self.last_answered)
    }

    /// How much longer polling is paused for GitHub's rate limit.
    pub fn paused_for(&self) -> Option<Duration> {
        self.pause_remaining()
    }

    /// Poll until `stop` is cancelled.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        if self.entries.is_empty() {
            return;
        }
        let slot = (self.interval / self.entries.len() as u32).max(Duration::from_millis(1));
        let mut ticker = tokio::time::interval(slot);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut next = 0;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = stop.cancelled() => return,
            }
            if let Some(wait) = self.pause_remaining() {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => return,
                }
                self.metrics.paused_until(None);
                tracing::info!("the GitHub rate limit has reset; polling goes on");
                continue;
            }
            let entry = self.entries[next].clone();
            next = (next + 1) % self.entries.len();
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                continue;
            };
            let poller = self.clone();
            tokio::spawn(async move {
                poller.poll(&entry).await;
                drop(permit);
            });
        }
    }

    fn pause_remaining(&self) -> Option<Duration> {
        let until = (*lock(&self.paused_until))?;
        (until - Utc::now())
            .to_std()
            .ok()
            .filter(|wait| !wait.is_zero())
    }

    fn pause(&self, until: DateTime<Utc>) {
        let mut paused = lock(&self.paused_until);
        if paused.is_none_or(|current| current < until) {
            *paused = Some(until);
            self.metrics.paused_until(Some(until.timestamp()));
        }
    }

    /// Poll one repository now (unless a poll of it is already under way).
    pub async fn poll(&self, entry: &WatchedEntry) {
        let Ok(mut state) = entry.state.try_lock() else {
            return;
        };
        let repository = &entry.config.repository;
        // The baseline is taken before the first look: every release published after it is
        // news, whatever the first list holds.
        if state.since.is_none() {
            match self.scheduler.watching_since(repository).await {
                Ok(since) => state.since = Some(since),
                Err(error) => {
                    tracing::warn!(repository = %repository, "cannot read when {repository} was first watched: {error}");
                    return;
                }
            }
        }
        let started = Instant::now();
        let polled = self
            .github
            .list_releases(repository, state.etag.as_deref())
            .await;
        let latency = started.elapsed();
        let rate = polled.rate;
        self.metrics.rate_limit(
            rate.limit,
            rate.remaining,
            rate.reset.map(|reset| reset.timestamp()),
        );
        let paused = rate.pause_until(polled.status, Utc::now());
        if let Some(until) = paused {
            tracing::warn!(
                repository = %repository,
                "GitHub's rate limit is reached (HTTP {}, {} requests left); polling pauses until {}",
                polled.status,
                rate.remaining.map(|left| left.to_string()).unwrap_or_else(|| "no".into()),
                until.to_rfc3339()
            );
            self.pause(until);
        }
        match polled.outcome {
            Ok(Listing::NotModified) => {
                self.metrics.poll(PollResult::NotModified, latency);
                self.recovered(&mut state, repository);
            }
            Ok(Listing::Changed { etag, releases }) => {
                self.metrics.poll(PollResult::Changed, latency);
                self.recovered(&mut state, repository);
                if self.settle(entry, &mut state, &releases).await {
                    state.etag = etag;
                }
            }
            Err(error) => {
                let result = if paused.is_some() {
                    PollResult::RateLimited
                } else {
                    PollResult::Error
                };
                self.metrics.poll(result, latency);
                let message = error.to_string();
                if paused.is_none() && state.last_error.as_deref() != Some(message.as_str()) {
                    tracing::warn!(repository = %repository, "{message}");
                }
                state.last_error = Some(message);
            }
        }
    }

    fn recovered(&self, state: &mut PollState, repository: &str) {
        *lock(&self.last_answered) = Some(Instant::now());
        if state.last_error.take().is_some() {
            tracing::info!(repository = %repository, "polling releases of {repository} works again");
        }
    }

    /// Offer every new release of the list, oldest first; true when all are settled.
    async fn settle(
        &self,
        entry: &WatchedEntry,
        state: &mut PollState,
        releases: &[Release],
    ) -> bool {
        let repository = &entry.config.repository;
        let Some(since) = state.since else {
            return false;
        };
        let mut fresh: Vec<&Release> = releases
            .iter()
            .filter(|release| !state.handled.contains(&release.id))
            .filter(|release| entry.filter.check(release, Some(since)).is_ok())
            .collect();
        fresh.sort_by_key(|release| (release.published_at, release.id));
        let mut settled = true;
        for release in fresh {
            match self
                .scheduler
                .offer(&entry.config, release, Via::Poll)
                .await
            {
                Ok(offer) if offer.is_settled() => {
                    state.handled.insert(release.id);
                }
                Ok(_) => settled = false,
                Err(error) => {
                    tracing::warn!(
                        repository = %repository,
                        "cannot start a run for release {} of {repository}: {error}; the next poll tries again",
                        release.tag_name
                    );
                    settled = false;
                }
            }
        }
        settled
    }

    /// A release announced by a webhook: start its run now, through the same claim as polling.
    pub async fn offer_webhook(&self, repository: &str, release: &Release) -> WebhookOffer {
        let Some(entry) = self.by_name.get(&repository.to_ascii_lowercase()) else {
            return WebhookOffer::NotWatched;
        };
        // Deliveries can be old or replayed (GitHub's "Redeliver", a captured payload): a
        // release published before watching began is history here as in polling.
        let since = match self
            .scheduler
            .watching_since(&entry.config.repository)
            .await
        {
            Ok(since) => since,
            Err(error) => {
                tracing::warn!(
                    repository = %repository,
                    "cannot read when {repository} was first watched: {error}; polling will pick the release up"
                );
                return WebhookOffer::Offered(Offer::Busy);
            }
        };
        if let Err(skip) = entry.filter.check(release, Some(since)) {
            return WebhookOffer::Skipped(match skip {
                Skip::Draft => "a draft",
                Skip::Prerelease => "a prerelease",
                Skip::Tag => "its tag matches no pattern",
                Skip::Old => "published before the agent watched it",
            });
        }
        match self
            .scheduler
            .offer(&entry.config, release, Via::Webhook)
            .await
        {
            Ok(offer) => WebhookOffer::Offered(offer),
            Err(error) => {
                tracing::warn!(
                    repository = %repository,
                    "cannot start a run for release {} of {repository}: {error}; polling will pick it up",
                    release.tag_name
                );
                WebhookOffer::Offered(Offer::Busy)
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}
