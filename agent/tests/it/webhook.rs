//! `POST /webhooks/github`: signed release events start runs at once; unsigned, wrongly signed
//! and malformed signatures are refused.

use std::time::Duration;

use envelope_runner::run::RunStatus;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::fake_github::FakeGithub;
use crate::support::*;

pub(crate) fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub(crate) fn release_event(repository: &str, id: u64, tag: &str, action: &str) -> Vec<u8> {
    release_event_published(repository, id, tag, action, chrono::Utc::now())
}

pub(crate) fn release_event_published(
    repository: &str,
    id: u64,
    tag: &str,
    action: &str,
    published_at: chrono::DateTime<chrono::Utc>,
) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "action": action,
        "release": {
            "id": id, "tag_name": tag, "target_commitish": "main", "name": tag,
            "draft": false, "prerelease": false,
            "created_at": "2026-11-26T09:00:00Z", "published_at": published_at.to_rfc3339(),
            "author": {"login": "octocat", "id": 1}, "assets": [], "body": "notes",
            "html_url": format!("https://github.com/{repository}/releases/tag/{tag}")
        },
        "repository": {"id": 7, "name": "app", "full_name": repository, "private": true},
        "sender": {"login": "octocat", "id": 1}
    }))
    .unwrap()
}

pub(crate) async fn deliver(
    agent: &envelope_agent::Agent,
    event: &str,
    signature: Option<&str>,
    body: &[u8],
) -> HttpResponse {
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("X-GitHub-Event", event),
        ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("User-Agent", "GitHub-Hookshot/044aadd"),
    ];
    if let Some(signature) = signature {
        headers.push(("X-Hub-Signature-256", signature));
    }
    http(agent.address(), "POST", "/webhooks/github", &headers, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_release_event_starts_its_run_once_and_bad_signatures_are_refused() {
    let project = Project::new();
    let github = FakeGithub::start().await;
    github.add_repository(REPOSITORY);
    let mut settings = settings(&project, &github, "agent-1");
    // Polling is far off: whatever starts the run here is the webhook.
    settings.github.poll_interval = Duration::from_secs(3600);
    let store = TestStore::Sqlite(project.sqlite_url());
    let agent = start_agent(settings, &store).await;
    project.tag("v3.0.0");
    let body = release_event(REPOSITORY, 9001, "v3.0.0", "published");

    let missing = deliver(&agent, "release", None, &body).await;
    assert_eq!(missing.status, 401, "{}", missing.body);
    let wrong = deliver(
        &agent,
        "release",
        Some(&sign("not the secret", &body)),
        &body,
    )
    .await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    let malformed = deliver(&agent, "release", Some("sha1=0123abcd"), &body).await;
    assert_eq!(malformed.status, 401, "{}", malformed.body);
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let replayed = deliver(
        &agent,
        "release",
        Some(&sign(WEBHOOK_SECRET, &body)),
        &tampered,
    )
    .await;
    assert_eq!(replayed.status, 401, "{}", replayed.body);
    assert!(
        runs_for_release(agent.store().as_ref(), 9001)
            .await
            .is_empty()
    );

    let ping = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let pong = deliver(&agent, "ping", Some(&sign(WEBHOOK_SECRET, ping)), ping).await;
    assert_eq!(pong.status, 200, "{}", pong.body);

    let started = deliver(&agent, "release", Some(&sign(WEBHOOK_SECRET, &body)), &body).await;
    assert_eq!(started.status, 201, "{}", started.body);
    let run = wait_for_status(
        agent.store().as_ref(),
        9001,
        RunStatus::Waiting,
        Duration::from_secs(20),
    )
    .await;
    assert!(started.body.contains(&run.id.0), "{}", started.body);

    // GitHub redelivers; a `released` event follows a published prerelease: still one run.
    let again = deliver(&agent, "release", Some(&sign(WEBHOOK_SECRET, &body)), &body).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert!(again.body.contains("already_started"), "{}", again.body);
    let released = release_event(REPOSITORY, 9001, "v3.0.0", "released");
    let again = deliver(
        &agent,
        "release",
        Some(&sign(WEBHOOK_SECRET, &released)),
        &released,
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(
        runs_for_release(agent.store().as_ref(), 9001).await.len(),
        1
    );

    // Signed but not for this agent.
    let edited = release_event(REPOSITORY, 9002, "v3.0.1", "edited");
    let ignored = deliver(
        &agent,
        "release",
        Some(&sign(WEBHOOK_SECRET, &edited)),
        &edited,
    )
    .await;
    assert_eq!(ignored.status, 202, "{}", ignored.body);
    let elsewhere = release_event("acme/other", 9003, "v1.0.0", "published");
    let ignored = deliver(
        &agent,
        "release",
        Some(&sign(WEBHOOK_SECRET, &elsewhere)),
        &elsewhere,
    )
    .await;
    assert_eq!(ignored.status, 202, "{}", ignored.body);
    assert!(ignored.body.contains("not watched"), "{}", ignored.body);

    let metrics = agent.metrics().render(&Default::default());
    for line in [
        "envelope_agent_webhooks_total{result=\"rejected\"} 4",
        "envelope_agent_runs_started_total{via=\"webhook\"} 1",
        "envelope_agent_runs_started_total{via=\"poll\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line} in\n{metrics}"
        );
    }
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_configured_secret_there_is_no_webhook() {
    let project = Project::new();
    let github = FakeGithub::start().await;
    github.add_repository(REPOSITORY);
    let store = TestStore::Sqlite(project.sqlite_url());
    let mut credentials = credentials();
    credentials.webhook_secret = None;
    let agent = envelope_agent::Agent::start_with_store(
        settings(&project, &github, "agent-1"),
        credentials,
        store.open().await,
    )
    .await
    .unwrap();
    let body = release_event(REPOSITORY, 1, "v1.0.0", "published");
    let response = deliver(&agent, "release", Some(&sign(WEBHOOK_SECRET, &body)), &body).await;
    assert_ne!(response.status / 100, 2, "{response:?}");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_for_a_release_older_than_the_watch_start_is_ignored() {
    let project = Project::new();
    let github = FakeGithub::start().await;
    github.add_repository(REPOSITORY);
    let mut settings = settings(&project, &github, "agent-1");
    settings.github.poll_interval = Duration::from_secs(3600);
    let store = TestStore::Sqlite(project.sqlite_url());
    let agent = start_agent(settings, &store).await;
    project.tag("v2.9.0");
    project.tag("v3.1.0");

    // A genuine, signed delivery of a release from before this agent watched the repository
    // (a redelivery, or a captured payload replayed): history, as polling treats it.
    let old = release_event_published(
        REPOSITORY,
        9101,
        "v2.9.0",
        "published",
        chrono::Utc::now() - chrono::Duration::days(30),
    );
    let ignored = deliver(&agent, "release", Some(&sign(WEBHOOK_SECRET, &old)), &old).await;
    assert_eq!(ignored.status, 202, "{}", ignored.body);
    assert!(
        ignored
            .body
            .contains("published before the agent watched it"),
        "{}",
        ignored.body
    );
    // A release published now still starts its run.
    let new = release_event(REPOSITORY, 9102, "v3.1.0", "published");
    let started = deliver(&agent, "release", Some(&sign(WEBHOOK_SECRET, &new)), &new).await;
    assert_eq!(started.status, 201, "{}", started.body);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        runs_for_release(agent.store().as_ref(), 9101)
            .await
            .is_empty()
    );
    assert_eq!(
        runs_for_release(agent.store().as_ref(), 9102).await.len(),
        1
    );
    agent.shutdown().await;
}
