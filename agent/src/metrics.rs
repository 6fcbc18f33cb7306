//! What `/metrics` reports, in Prometheus' text format: polls and their latency, GitHub's rate
//! limit, webhooks, and runs by state (counted from the store, so every agent sharing it
//! reports the same totals).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the poll latency histogram.
const LATENCY_BUCKETS: [f64; 9] = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

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
    fn label(self) -> &'static str {
        match self {
            WebhookResult::Accepted => "accepted",
            WebhookResult::Ignored => "ignored",
            WebhookResult::Rejected => "rejected",
        }
    }
}

/// Counters and gauges of one agent process.
#[derive(Default)]
pub struct Metrics {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    polls: BTreeMap<PollResult, u64>,
    latency_buckets: [u64; LATENCY_BUCKETS.len()],
    latency_count: u64,
    latency_sum: f64,
    rate_limit_remaining: Option<u64>,
    rate_limit_limit: Option<u64>,
    rate_limit_reset: Option<i64>,
    paused_until: Option<i64>,
    poll_interval: f64,
    webhooks: BTreeMap<WebhookResult, u64>,
    started: BTreeMap<&'static str, u64>,
    resumed: u64,
    executing: u64,
    queued: u64,
}

impl Metrics {
    pub fn new() -> Self {
        Metrics::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        f(&mut state)
    }

    pub fn poll(&self, result: PollResult, latency: Duration) {
        let seconds = latency.as_secs_f64();
        self.with(|state| {
            *state.polls.entry(result).or_default() += 1;
            for (bound, count) in LATENCY_BUCKETS.iter().zip(state.latency_buckets.iter_mut()) {
                if seconds <= *bound {
                    *count += 1;
                }
            }
            state.latency_count += 1;
            state.latency_sum += seconds;
        });
    }

    pub fn rate_limit(&self, limit: Option<u64>, remaining: Option<u64>, reset: Option<i64>) {
        self.with(|state| {
            if remaining.is_some() {
                state.rate_limit_remaining = remaining;
                state.rate_limit_limit = limit.or(state.rate_limit_limit);
                state.rate_limit_reset = reset.or(state.rate_limit_reset);
            }
        });
    }

    pub fn paused_until(&self, until: Option<i64>) {
        self.with(|state| state.paused_until = until);
    }

    pub fn poll_interval(&self, interval: Duration) {
        self.with(|state| state.poll_interval = interval.as_secs_f64());
    }

    pub fn webhook(&self, result: WebhookResult) {
        self.with(|state| *state.webhooks.entry(result).or_default() += 1);
    }

    /// A run was started for a release, `via` poll or webhook.
    pub fn started(&self, via: &'static str) {
        self.with(|state| *state.started.entry(via).or_default() += 1);
    }

    pub fn resumed(&self) {
        self.with(|state| state.resumed += 1);
    }

    pub fn jobs(&self, executing: usize, queued: usize) {
        self.with(|state| {
            state.executing = executing as u64;
            state.queued = queued as u64;
        });
    }

    /// The Prometheus text exposition, with `runs` counted by (pipeline, state).
    pub fn render(&self, runs: &BTreeMap<(String, String), u64>) -> String {
        self.with(|state| {
            let mut out = String::new();
            let help = |out: &mut String, name: &str, kind: &str, text: &str| {
                let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} {kind}");
            };
            help(
                &mut out,
                "envelope_agent_runs",
                "gauge",
                "Runs in the store by pipeline and state (the newest 1000).",
            );
            for ((pipeline, run_state), count) in runs {
                let _ = writeln!(
                    out,
                    "envelope_agent_runs{{pipeline=\"{}\",state=\"{run_state}\"}} {count}",
                    label(pipeline)
                );
            }
            help(
                &mut out,
                "envelope_agent_jobs",
                "gauge",
                "Runs this agent is executing or holding queued for a free slot.",
            );
            let _ = writeln!(
                out,
                "envelope_agent_jobs{{state=\"executing\"}} {}\nenvelope_agent_jobs{{state=\"queued\"}} {}",
                state.executing, state.queued
            );
            help(
                &mut out,
                "envelope_agent_runs_started_total",
                "counter",
                "Runs this agent started for a release, by what noticed the release.",
            );
            for via in ["poll", "webhook"] {
                let _ = writeln!(
                    out,
                    "envelope_agent_runs_started_total{{via=\"{via}\"}} {}",
                    state.started.get(via).copied().unwrap_or(0)
                );
            }
            help(
                &mut out,
                "envelope_agent_runs_resumed_total",
                "counter",
                "Runs this agent resumed (after an approval, a restart or another agent's exit).",
            );
            let _ = writeln!(out, "envelope_agent_runs_resumed_total {}", state.resumed);
            help(
                &mut out,
                "envelope_agent_polls_total",
                "counter",
                "Release list requests to GitHub by result.",
            );
            for result in [
                PollResult::Changed,
                PollResult::NotModified,
                PollResult::RateLimited,
                PollResult::Error,
            ] {
                let _ = writeln!(
                    out,
                    "envelope_agent_polls_total{{result=\"{}\"}} {}",
                    result.label(),
                    state.polls.get(&result).copied().unwrap_or(0)
                );
            }
            help(
                &mut out,
                "envelope_agent_poll_duration_seconds",
                "histogram",
                "Time GitHub took to answer a release list request.",
            );
            for (bound, count) in LATENCY_BUCKETS.iter().zip(state.latency_buckets.iter()) {
                let _ = writeln!(
                    out,
                    "envelope_agent_poll_duration_seconds_bucket{{le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "envelope_agent_poll_duration_seconds_bucket{{le=\"+Inf\"}} {count}\nenvelope_agent_poll_duration_seconds_sum {sum}\nenvelope_agent_poll_duration_seconds_count {count}",
                count = state.latency_count,
                sum = state.latency_sum,
            );
            help(
                &mut out,
                "envelope_agent_poll_interval_seconds",
                "gauge",
                "How often each repository is polled (stretched to stay within the request budget).",
            );
            let _ = writeln!(
                out,
                "envelope_agent_poll_interval_seconds {}",
                state.poll_interval
            );
            if let Some(remaining) = state.rate_limit_remaining {
                help(
                    &mut out,
                    "envelope_agent_github_rate_limit_remaining",
                    "gauge",
                    "Requests GitHub still allows before the rate limit resets.",
                );
                let _ = writeln!(
                    out,
                    "envelope_agent_github_rate_limit_remaining {remaining}"
                );
            }
            if let Some(limit) = state.rate_limit_limit {
                help(
                    &mut out,
                    "envelope_agent_github_rate_limit_limit",
                    "gauge",
                    "Requests GitHub allows per rate limit window.",
                );
                let _ = writeln!(out, "envelope_agent_github_rate_limit_limit {limit}");
            }
            if let Some(reset) = state.rate_limit_reset {
                help(
                    &mut out,
                    "envelope_agent_github_rate_limit_reset_timestamp_seconds",
                    "gauge",
                    "When GitHub's rate limit window resets (Unix time).",
                );
                let _ = writeln!(
                    out,
                    "envelope_agent_github_rate_limit_reset_timestamp_seconds {reset}"
                );
            }
            help(
                &mut out,
                "envelope_agent_polling_paused_until_timestamp_seconds",
                "gauge",
                "Until when polling waits because of a rate limit (0: not paused).",
            );
            let _ = writeln!(
                out,
                "envelope_agent_polling_paused_until_timestamp_seconds {}",
                state.paused_until.unwrap_or(0)
            );
            help(
                &mut out,
                "envelope_agent_webhooks_total",
                "counter",
                "Webhook deliveries by how they were answered.",
            );
            for result in [
                WebhookResult::Accepted,
                WebhookResult::Ignored,
                WebhookResult::Rejected,
            ] {
                let _ = writeln!(
                    out,
                    "envelope_agent_webhooks_total{{result=\"{}\"}} {}",
                    result.label(),
                    state.webhooks.get(&result).copied().unwrap_or(0)
                );
            }
            out
        })
    }
}

/// A Prometheus label value with `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let metrics = Metrics::new();
        metrics.poll(PollResult::NotModified, Duration::from_millis(40));
        metrics.poll(PollResult::Changed, Duration::from_millis(300));
        metrics.rate_limit(Some(5000), Some(4999), Some(1_800_000_000));
        metrics.webhook(WebhookResult::Rejected);
        let mut runs = BTreeMap::new();
        runs.insert(("api".to_owned(), "waiting".to_owned()), 2);
        let text = metrics.render(&runs);
        for line in [
            "envelope_agent_runs{pipeline=\"api\",state=\"waiting\"} 2",
            "envelope_agent_polls_total{result=\"not_modified\"} 1",
            "envelope_agent_poll_duration_seconds_bucket{le=\"0.05\"} 1",
            "envelope_agent_poll_duration_seconds_bucket{le=\"0.5\"} 2",
            "envelope_agent_poll_duration_seconds_count 2",
            "envelope_agent_github_rate_limit_remaining 4999",
            "envelope_agent_webhooks_total{result=\"rejected\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }
}
