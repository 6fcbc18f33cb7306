//! The exposition `/metrics` serves, and the metrics tables in the docs kept in step with it.

use super::*;
use std::collections::BTreeSet;

/// Metrics with every optional gauge reported and one run counted.
fn exposition(format: Format) -> String {
    let metrics = Metrics::new();
    metrics.poll(PollResult::NotModified, Duration::from_millis(40));
    metrics.poll(PollResult::Changed, Duration::from_millis(300));
    metrics.rate_limit(Some(5000), Some(4999), Some(1_800_000_000));
    metrics.webhook(WebhookResult::Rejected);
    metrics.poll_interval(Duration::from_secs(60));
    let mut runs = BTreeMap::new();
    runs.insert(("api".to_owned(), "waiting".to_owned()), 2);
    metrics.render_as(format, &runs)
}

#[test]
fn renders_the_prometheus_text_format_with_the_names_users_scrape() {
    let text = exposition(Format::Prometheus);
    for line in [
        "# TYPE envelope_agent_runs_started_total counter",
        "envelope_agent_runs{pipeline=\"api\",state=\"waiting\"} 2",
        "envelope_agent_jobs{state=\"executing\"} 0",
        "envelope_agent_runs_started_total{via=\"poll\"} 0",
        "envelope_agent_runs_resumed_total 0",
        "envelope_agent_polls_total{result=\"not_modified\"} 1",
        "envelope_agent_polls_total{result=\"error\"} 0",
        "envelope_agent_poll_duration_seconds_bucket{le=\"0.05\"} 1",
        "envelope_agent_poll_duration_seconds_bucket{le=\"0.5\"} 2",
        "envelope_agent_poll_duration_seconds_bucket{le=\"1\"} 2",
        "envelope_agent_poll_duration_seconds_bucket{le=\"+Inf\"} 2",
        "envelope_agent_poll_duration_seconds_count 2",
        "envelope_agent_poll_interval_seconds 60.0",
        "envelope_agent_github_rate_limit_remaining 4999",
        "envelope_agent_github_rate_limit_limit 5000",
        "envelope_agent_github_rate_limit_reset_timestamp_seconds 1800000000",
        "envelope_agent_polling_paused_until_timestamp_seconds 0",
        "envelope_agent_webhooks_total{result=\"rejected\"} 1",
        "envelope_agent_webhooks_total{result=\"accepted\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    assert!(!text.contains("# EOF"), "{text}");
}

#[test]
fn renders_openmetrics_to_a_scraper_that_asks_for_it() {
    assert_eq!(
        Format::from_accept(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        )),
        Format::OpenMetrics
    );
    assert_eq!(Format::from_accept(Some("*/*")), Format::Prometheus);
    assert_eq!(Format::from_accept(None), Format::Prometheus);
    let text = exposition(Format::OpenMetrics);
    for line in [
        "# TYPE envelope_agent_runs_started counter",
        "# UNIT envelope_agent_poll_duration_seconds seconds",
        "envelope_agent_runs_started_total{via=\"poll\"} 0",
        "envelope_agent_polls_total{result=\"not_modified\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn rate_limit_gauges_appear_once_github_reports_them() {
    let metrics = Metrics::new();
    let before = metrics.render(&BTreeMap::new());
    assert!(!before.contains("github_rate_limit"), "{before}");
    metrics.rate_limit(Some(5000), None, Some(1));
    assert!(
        !metrics
            .render(&BTreeMap::new())
            .contains("github_rate_limit")
    );
    metrics.rate_limit(None, Some(0), None);
    let after = metrics.render(&BTreeMap::new());
    assert!(
        after
            .lines()
            .any(|l| l == "envelope_agent_github_rate_limit_remaining 0"),
        "{after}"
    );
    assert!(!after.contains("rate_limit_limit"), "{after}");
}

#[test]
fn run_counts_are_replaced_at_each_scrape() {
    let metrics = Metrics::new();
    let mut runs = BTreeMap::new();
    runs.insert(("api".to_owned(), "running".to_owned()), 1);
    assert!(metrics.render(&runs).contains("state=\"running\"} 1"));
    runs.clear();
    runs.insert(("api\"x".to_owned(), "succeeded".to_owned()), 3);
    let text = metrics.render(&runs);
    assert!(!text.contains("state=\"running\""), "{text}");
    assert!(
        text.contains("envelope_agent_runs{pipeline=\"api\\\"x\",state=\"succeeded\"} 3"),
        "label values are escaped:\n{text}"
    );
}

/// Every metric the agent exposes, as (name, type) from the `# TYPE` lines.
fn exposed() -> BTreeSet<(String, String)> {
    exposition(Format::Prometheus)
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect()
}

/// The rows of the metrics table in a Markdown document: (name, type) of each row whose
/// first cell is a code span starting with `envelope_agent_`.
fn documented(markdown: &str) -> BTreeSet<(String, String)> {
    markdown
        .lines()
        .filter_map(|line| {
            let mut cells = line.strip_prefix('|')?.split('|').map(str::trim);
            let name = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
            let kind = cells.next()?;
            name.starts_with("envelope_agent_")
                .then(|| (name.to_owned(), kind.to_owned()))
        })
        .collect()
}

#[test]
fn the_metrics_tables_in_the_docs_list_every_metric() {
    let exposed = exposed();
    assert_eq!(exposed.len(), 12, "{exposed:?}");
    for (file, text) in [
        ("docs/agent.md", include_str!("../../../docs/agent.md")),
        ("agent/README.md", include_str!("../../README.md")),
    ] {
        assert_eq!(
            documented(text),
            exposed,
            "{file}'s metrics table (name, type) differs from what /metrics exposes"
        );
    }
}
