//! Polling the (fake) GitHub: one run per release, conditional requests, restarts, several
//! agents on one store, and rate limits.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use envelope_runner::run::{RunStatus, StageStatus};

use crate::fake_github::{FakeGithub, ReleaseSpec};
use crate::support::*;

/// Wait until the fake has answered `count` more requests than `after`.
async fn wait_for_polls(github: &FakeGithub, after: usize, count: usize) {
    wait_for(
        &format!("{count} more polls"),
        Duration::from_secs(20),
        || async { (github.request_count() >= after + count).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_release_starts_exactly_one_run_and_old_drafts_and_prereleases_start_none() {
    let project = Project::new();
    let github = FakeGithub::start().await;
    // History from before the agent watched the repository, and releases that never start.
    project.tag("v0.9.0");
    let old = github.publish(
        REPOSITORY,
        ReleaseSpec {
            published_at: Utc::now() - chrono::Duration::days(30),
            ..ReleaseSpec::published("v0.9.0")
        },
    );
    let draft = github.publish(
        REPOSITORY,
        ReleaseSpec {
            draft: true,
            ..ReleaseSpec::published("v1.1.0")
        },
    );
    let prerelease = github.publish(
        REPOSITORY,
        ReleaseSpec {
            prerelease: true,
            ..ReleaseSpec::published("v1.1.0-rc1")
        },
    );
    let other_tag = github.publish(REPOSITORY, ReleaseSpec::published("nightly-2026-11-26"));
    let store = TestStore::Sqlite(project.sqlite_url());
    let agent = start_agent(settings(&project, &github, "agent-1"), &store).await;
    wait_for_polls(&github, 0, 2).await;

    project.tag("v1.0.0");
    let release = github.publish(REPOSITORY, ReleaseSpec::published("v1.0.0"));
    let run = wait_for_status(
        agent.store().as_ref(),
        release,
        RunStatus::Waiting,
        Duration::from_secs(20),
    )
    .await;
    // Several more polls (and the first agent's own list) change nothing.
    wait_for_polls(&github, github.request_count(), 5).await;
    let runs = runs_for_release(agent.store().as_ref(), release).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    for skipped in [old, draft, prerelease, other_tag] {
        assert!(
            runs_for_release(agent.store().as_ref(), skipped)
                .await
                .is_empty()
        );
    }
    let record = agent.store().get_run(&run.id).await.unwrap().unwrap();
    assert_eq!(record.trigger.tag.as_deref(), Some("v1.0.0"));
    let source = record.stage("source").unwrap();
    assert_eq!(source.status, StageStatus::Succeeded);
    assert_eq!(source.outputs.sha.as_ref().map(String::len), Some(40));
    assert_eq!(
        record.stage("approval").unwrap().status,
        StageStatus::Waiting
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_list_is_asked_for_with_if_none_match_and_answered_304() {
    let project = Project::new();
    let github = FakeGithub::start().await;
    project.tag("v0.9.0");
    github.publish(
        REPOSITORY,
        ReleaseSpec {
            published_at: Utc::now() - chrono::Duration::days(1),
            ..ReleaseSpec::published("v0.9.0")
        },
    );
    let store = TestStore::Sqlite(project.sqlite_url());
    let agent = start_agent(settings(&project, &github, "agent-1"), &store).await;
    wait_for_polls(&github, 0, 4).await;
    let requests = github.requests();
    let first = &requests[0];
    assert_eq!(first.status, 200);
    assert_eq!(first.if_none_match, None);
    assert_eq!(
        first.authorization.as_deref(),
        Some("Bearer ghp_fake_token_for_tests")
    );
    let etag = requests[1]
        .if_none_match
        .clone()
        .expect("If-None-Match sent");
    assert!(etag.starts_with("W/\""), "{etag}");
    for later in &requests[1..] {
        assert_eq!(later.if_none_match.as_deref(), Some(etag.as_str()));
        assert_eq!(later.status, 304, "{later:?}");
    }
    let metrics = http(
        agent.address(),
        "GET",
        "/metrics",
        &[("Authorization", &format!("Bearer {METRICS_TOKEN}"))],
        b"",
    )
    .await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.lines().any(|line| line
            .starts_with("envelope_agent_polls_total{result=\"not_modified\"}")
            && !line.ends_with(" 0")),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains("envelope_agent_github_rate_limit_remaining 4999"),
        "one full answer spent one request, 304s none:\n{}",
        metrics.body
    );
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let openmetrics = http(
        agent.address(),
        "GET",
        "/metrics",
        &[
            ("Authorization", &format!("Bearer {METRICS_TOKEN}")),
            ("Accept", "application/openmetrics-text;version=1.0.0"),
        ],
        b"",
    )
    .await;
    assert_eq!(openmetrics.status, 200);
    assert!(
        openmetrics
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{openmetrics:?}"
    );
    assert!(
        openmetrics.body.ends_with("# EOF\n")
            && openmetrics
                .body
                .contains("# TYPE envelope_agent_polls counter"),
        "{}",
        openmetrics.body
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_does_not_start_a_release_again() {
    let project = Project::new();
    let github = FakeGithub::start().await;
    github.add_repository(REPOSITORY);
    let store = TestStore::Sqlite(project.sqlite_url());
    let agent = start_agent(settings(&project, &github, "agent-1"), &store).await;
    wait_for_polls(&github, 0, 1).await;
    project.tag("v1.0.0");
    let release = github.publish(REPOSITORY, ReleaseSpec::published("v1.0.0"));
    wait_for_status(
        agent.store().as_ref(),
        release,
        RunStatus::Waiting,
        Duration::from_secs(20),
    )
    .await;
    agent.shutdown().await;

    let seen = github.request_count();
    let restarted = start_agent(settings(&project, &github, "agent-1"), &store).await;
    wait_for_polls(&github, seen, 5).await;
    // The restarted agent had no ETag: it read the whole list again, and found the claim.
    assert_eq!(github.requests()[seen].status, 200);
    let runs = runs_for_release(restarted.store().as_ref(), release).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].status, RunStatus::Waiting);
    restarted.shutdown().await;
}

async fn two_agents_start_a_release_once(store: TestStore) {
    let project = Project::new();
    let github = FakeGithub::start().await;
    github.add_repository(REPOSITORY);
    let mut first = settings(&project, &github, "agent-a");
    let mut second = settings(&project, &github, "agent-b");
    // Both poll as fast as they can, so that they race for the same release.
    first.github.poll_interval = Duration::from_millis(50);
    second.github.poll_interval = Duration::from_millis(50);
    let agent_a = start_agent(first, &store).await;
    let agent_b = start_agent(second, &store).await;
    wait_for_polls(&github, 0, 4).await;
    project.tag("v2.0.0");
    let release = github.publish(REPOSITORY, ReleaseSpec::published("v2.0.0"));
    wait_for_status(
        agent_a.store().as_ref(),
        release,
        RunStatus::Waiting,
        Duration::from_secs(30),
    )
    .await;
    wait_for_polls(&github, github.request_count(), 10).await;
    let runs = runs_for_release(agent_b.store().as_ref(), release).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    let started: u64 = [&agent_a, &agent_b]
        .iter()
        .map(|agent| {
            let text = agent.metrics().render(&Default::default());
            text.lines()
                .filter(|line| line.starts_with("envelope_agent_runs_started_total"))
                .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum();
    assert_eq!(started, 1, "exactly one of the agents started the run");
    agent_a.shutdown().await;
    agent_b.shutdown().await;
    store.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_on_one_sqlite_store_start_a_release_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("shared.db").display());
    two_agents_start_a_release_once(TestStore::Sqlite(url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_on_one_dynamodb_store_start_a_release_once() {
    let Some(table) = DynamoTable::create("two-agents").await else {
        return;
    };
    two_agents_start_a_release_once(TestStore::DynamoDb(table)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_rate_limit_pauses_polling_until_the_reset() {
    let project = Project::new();
    let github = FakeGithub::start().await;
    github.add_repository(REPOSITORY);
    // One full answer left; the window resets 3 s from now.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let reset = now.as_secs() as i64 + 3;
    let reset_at = Instant::now() + (Duration::from_secs(reset as u64) - now);
    github.set_rate_limit(1, reset);
    let store = TestStore::Sqlite(project.sqlite_url());
    let agent = start_agent(settings(&project, &github, "agent-1"), &store).await;
    wait_for_polls(&github, 0, 1).await;
    let first = github.requests()[0].clone();
    assert_eq!(first.status, 200, "the last request of the window");
    tokio::time::sleep_until((reset_at + Duration::from_millis(200)).into()).await;
    let during: Vec<_> = github
        .requests()
        .into_iter()
        .filter(|seen| seen.at > first.at && seen.at < reset_at)
        .collect();
    assert!(
        during.is_empty(),
        "polled {} times while the rate limit was spent: {during:?}",
        during.len()
    );
    let metrics = agent.metrics().render(&Default::default());
    assert!(
        metrics.contains("envelope_agent_github_rate_limit_remaining 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("envelope_agent_polling_paused_until_timestamp_seconds 0\n"),
        "{metrics}"
    );
    // After the reset (plus the agent's one-second margin) polling goes on.
    let before = github.request_count();
    wait_for_polls(&github, before, 2).await;
    let resumed = &github.requests()[before];
    assert!(resumed.at >= reset_at, "{resumed:?}");
    agent.shutdown().await;
}
