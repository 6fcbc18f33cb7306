//! What `/metrics` reports, through `prometheus-client`: polls and their latency, GitHub's rate
//! limit, webhooks, and runs by state (counted from the store at each scrape, so every agent
//! sharing it reports the same totals). Served in Prometheus' text format (0.0.4) by default,
//! and in OpenMetrics text to a scraper that asks for it (`Accept: application/openmetrics-text`).

use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Upper bounds (seconds) of the poll latency histogram.
const LATENCY_BUCKETS: [f64; 9] = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A metric's labels: names are fixed, values are the label values. An empty list is a metric
/// without labels (a `Family` with no member is not exposed at all, which is how the rate
/// limit gauges stay absent until GitHub reports them).
type Labels = Vec<(&'static str, String)>;

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(name, value)| (*name, (*value).to_owned()))
        .collect()
}

/// How a poll of one repository ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PollResult {
    /// 200: the list changed (or was fetched for the first time).
    Changed,
    /// 304: unchanged, no rate limit spent.
    NotModified,
    /// Answered with a rate limit; polling pauses.
    RateLimited,
    Error,
}

impl PollResult {
    const ALL: [PollResult; 4] = [
        PollResult::Changed,
        PollResult::NotModified,
        PollResult::RateLimited,
        PollResult::Error,
    ];

    fn label(self) -> &'static str {
        match self {
            PollResult::Changed => "changed",
            PollResult::NotModified => "not_modified",
            PollResult::RateLimited => "rate_limited",
            PollResult::Error => "error",
        }
    }
}

/// How a webhook delivery was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WebhookResult {
    Accepted,
    Ignored,
    Rejected,
}

impl WebhookResult {
    const ALL: [WebhookResult; 3] = [
        WebhookResult::Accepted,
        WebhookResult::Ignored,
        WebhookResult::Rejected,
    ];

    fn label(self) -> &'static str {
        match self {
            WebhookResult::Accepted => "accepted",
            WebhookResult::Ignored => "ignored",
            WebhookResult::Rejected => "rejected",
        }
    }
}

/// The exposition format a scraper asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus' text format 0.0.4: what Prometheus and most scrapers read by default.
    Prometheus,
    /// OpenMetrics 1.0 text: counters are described without `_total`, `# EOF` closes it.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the `Accept` header names it, Prometheus' text format otherwise.
    pub fn from_accept(accept: Option<&str>) -> Format {
        if accept.is_some_and(|accept| accept.contains("application/openmetrics-text")) {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Counters and gauges of one agent process, registered once in a `prometheus-client` registry.
pub struct Metrics {
    registry: Registry,
    runs: Family<Labels, Gauge>,
    jobs: Family<Labels, Gauge>,
    started: Family<Labels, Counter>,
    resumed: Counter,
    polls: Family<Labels, Counter>,
    poll_duration: Histogram,
    poll_interval: Gauge<f64, AtomicU64>,
    rate_limit_remaining: Family<Labels, Gauge>,
    rate_limit_limit: Family<Labels, Gauge>,
    rate_limit_reset: Family<Labels, Gauge>,
    paused_until: Gauge,
    webhooks: Family<Labels, Counter>,
    /// `render` replaces the run counts and then encodes them: one scrape at a time, so two
    /// concurrent scrapes never show a half-replaced set.
    rendering: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let runs = Family::<Labels, Gauge>::default();
        registry.register(
            "envelope_agent_runs",
            "Runs in the store by pipeline and state (the newest 1000)",
            runs.clone(),
        );
        let jobs = Family::<Labels, Gauge>::default();
        for state in ["executing", "queued"] {
            // Every series from the start, at 0.
            let _ = jobs.get_or_create(&labels(&[("state", state)]));
        }
        registry.register(
            "envelope_agent_jobs",
            "Runs this agent is executing or holding queued for a free slot",
            jobs.clone(),
        );
        let started = Family::<Labels, Counter>::default();
        for via in ["poll", "webhook"] {
            // Every series from the start, at 0.
            let _ = started.get_or_create(&labels(&[("via", via)]));
        }
        registry.register(
            "envelope_agent_runs_started",
            "Runs this agent started for a release, by what noticed the release",
            started.clone(),
        );
        let resumed = Counter::default();
        registry.register(
            "envelope_agent_runs_resumed",
            "Runs this agent resumed (after an approval, a restart or another agent's exit)",
            resumed.clone(),
        );
        let polls = Family::<Labels, Counter>::default();
        for result in PollResult::ALL {
            // Every series from the start, at 0.
            let _ = polls.get_or_create(&labels(&[("result", result.label())]));
        }
        registry.register(
            "envelope_agent_polls",
            "Release list requests to GitHub by result",
            polls.clone(),
        );
        let poll_duration = Histogram::new(LATENCY_BUCKETS);
        registry.register_with_unit(
            "envelope_agent_poll_duration",
            "Time GitHub took to answer a release list request",
            Unit::Seconds,
            poll_duration.clone(),
        );
        let poll_interval = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "envelope_agent_poll_interval",
            "How often each repository is polled (stretched to stay within the request budget)",
            Unit::Seconds,
            poll_interval.clone(),
        );
        let rate_limit_remaining = Family::<Labels, Gauge>::default();
        registry.register(
            "envelope_agent_github_rate_limit_remaining",
            "Requests GitHub still allows before the rate limit resets",
            rate_limit_remaining.clone(),
        );
        let rate_limit_limit = Family::<Labels, Gauge>::default();
        registry.register(
            "envelope_agent_github_rate_limit_limit",
            "Requests GitHub allows per rate limit window",
            rate_limit_limit.clone(),
        );
        let rate_limit_reset = Family::<Labels, Gauge>::default();
        registry.register_with_unit(
            "envelope_agent_github_rate_limit_reset_timestamp",
            "When GitHub's rate limit window resets (Unix time)",
            Unit::Seconds,
            rate_limit_reset.clone(),
        );
        let paused_until = Gauge::default();
        registry.register_with_unit(
            "envelope_agent_polling_paused_until_timestamp",
            "Until when polling waits because of a rate limit (0: not paused)",
            Unit::Seconds,
            paused_until.clone(),
        );
        let webhooks = Family::<Labels, Counter>::default();
        for result in WebhookResult::ALL {
            // Every series from the start, at 0.
            let _ = webhooks.get_or_create(&labels(&[("result", result.label())]));
        }
        registry.register(
            "envelope_agent_webhooks",
            "Webhook deliveries by how they were answered",
            webhooks.clone(),
        );
        Metrics {
            registry,
            runs,
            jobs,
            started,
            resumed,
            polls,
            poll_duration,
            poll_interval,
            rate_limit_remaining,
            rate_limit_limit,
            rate_limit_reset,
            paused_until,
            webhooks,
            rendering: Mutex::new(()),
        }
    }

    pub fn poll(&self, result: PollResult, latency: Duration) {
        self.polls
            .get_or_create(&labels(&[("result", result.label())]))
            .inc();
        self.poll_duration.observe(latency.as_secs_f64());
    }

    /// GitHub's rate limit headers; an answer without `remaining` leaves the gauges as they were.
    pub fn rate_limit(&self, limit: Option<u64>, remaining: Option<u64>, reset: Option<i64>) {
        let Some(remaining) = remaining else {
            return;
        };
        let set = |family: &Family<Labels, Gauge>, value: i64| {
            family.get_or_create(&Labels::new()).set(value);
        };
        set(&self.rate_limit_remaining, saturating_i64(remaining));
        if let Some(limit) = limit {
            set(&self.rate_limit_limit, saturating_i64(limit));
        }
        if let Some(reset) = reset {
            set(&self.rate_limit_reset, reset);
        }
    }

    pub fn paused_until(&self, until: Option<i64>) {
        self.paused_until.set(until.unwrap_or(0));
    }

    pub fn poll_interval(&self, interval: Duration) {
        self.poll_interval.set(interval.as_secs_f64());
    }

    pub fn webhook(&self, result: WebhookResult) {
        self.webhooks
            .get_or_create(&labels(&[("result", result.label())]))
            .inc();
    }

    /// A run was started for a release, `via` poll or webhook.
    pub fn started(&self, via: &'static str) {
        self.started.get_or_create(&labels(&[("via", via)])).inc();
    }

    pub fn resumed(&self) {
        self.resumed.inc();
    }

    pub fn jobs(&self, executing: usize, queued: usize) {
        for (state, count) in [("executing", executing), ("queued", queued)] {
            self.jobs
                .get_or_create(&labels(&[("state", state)]))
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// The Prometheus text exposition, with `runs` counted by (pipeline, state).
    pub fn render(&self, runs: &BTreeMap<(String, String), u64>) -> String {
        self.render_as(Format::Prometheus, runs)
    }

    /// The exposition in `format`, with `runs` counted by (pipeline, state): they replace the
    /// previous scrape's counts, so a pipeline or state that has no run left disappears.
    pub fn render_as(&self, format: Format, runs: &BTreeMap<(String, String), u64>) -> String {
        let _one_at_a_time = self
            .rendering
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        self.runs.clear();
        for ((pipeline, state), count) in runs {
            self.runs
                .get_or_create(&labels(&[("pipeline", pipeline), ("state", state)]))
                .set(saturating_i64(*count));
        }
        let mut out = String::new();
        let encoded = match format {
            Format::Prometheus => prometheus_text::encode(&mut out, &self.registry),
            Format::OpenMetrics => text::encode(&mut out, &self.registry),
        };
        // Writing to a String cannot fail; a metric whose encoder failed would be cut short.
        if let Err(error) = encoded {
            tracing::warn!("metrics: cannot encode the exposition: {error}");
        }
        out
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
