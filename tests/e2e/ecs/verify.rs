//! The deploy's `verify:` checks against a real HTTP server on 127.0.0.1 (see
//! [`HealthEndpoint`]): a release whose `/up` answers 500, or 200 without "Application up",
//! is rolled back although ECS reported every rollout COMPLETED; a healthy one passes. Checks
//! run with a short deadline, so each makes a handful of requests.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use envelope_runner::exec::ecs::deploy::{
    Deploy, DeployProgress, DeployRecord, Phase, RolloutFailure,
};
use envelope_runner::exec::ecs::{EcsAws, EcsError};
use envelope_runner::exec::verify::{HttpCheck, LastAnswer};
use envelope_runner::redact::Redactor;

use super::recorder;
use crate::support::ecs::{
    Cluster, api_project, app_repository, images, parts, record_of, release,
};
use crate::support::health_endpoint::HealthEndpoint;
use crate::support::{stage, text};
use envelope_tests::env::TestEnv;

/// Adds a `verify:` check of `url` to the deploy stage (the last one) of the project's `api`
/// pipeline: status 200 with "Application up", tried for 5 s every second.
fn verify_up(project: &Path, url: &str) {
    let file = project.join("pipelines/api.yaml");
    let mut yaml = std::fs::read_to_string(&file).unwrap();
    assert!(yaml.trim_end().ends_with("timeout: 2m"), "{yaml}");
    yaml.push_str(&format!(
        "      verify:\n        - url: {url}\n          body_contains: Application up\n          \
         timeout: 5s\n          interval: 1s\n"
    ));
    std::fs::write(file, yaml).unwrap();
}

/// A release of the app through the binary whose deploy verifies `endpoint`, and what it left.
struct VerifiedRelease {
    cluster: Cluster,
    /// Every service's task definition before the release.
    before: BTreeMap<String, String>,
    project: tempfile::TempDir,
    run: String,
    resumed: Output,
    _repo: tempfile::TempDir,
}

async fn verified_release(env: &'static TestEnv, endpoint: &HealthEndpoint) -> VerifiedRelease {
    let cluster = Cluster::create(env, true).await;
    cluster.wait_until_running().await;
    let before = cluster.task_definitions().await;
    let (repo, url) = app_repository(env, "v2.0.0", "");
    let project = api_project(env, &cluster, &url, 0);
    verify_up(project.path(), &endpoint.url);
    let (run, resumed) = tokio::task::spawn_blocking({
        let project = project.path().to_path_buf();
        move || release(&project)
    })
    .await
    .unwrap();
    VerifiedRelease {
        cluster,
        before,
        project,
        run,
        resumed,
        _repo: repo,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_without_the_text_rolls_every_service_back_although_ecs_completed() {
    let Some(env) = parts("verify without the text").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    let images = images(env);
    let before = cluster.task_definitions().await;
    let endpoint =
        HealthEndpoint::start(200, "<h1>Maintenance</h1> token verify-canary-4711").await;
    let aws = EcsAws::new(&env.sdk_config(env.endpoint()).await);
    let request = cluster.deploy(&images.v2, Duration::from_secs(120));
    let check = HttpCheck {
        url: endpoint.url.replace("http://", "http://probe:pass-9876@") + "?token=abc",
        status: 200,
        body_contains: Some("Application up".into()),
        timeout: Duration::from_secs(4),
        interval: Duration::from_secs(1),
    };
    let (events, progress) = recorder();
    let error = Deploy::new(&aws, &request, DeployRecord::default())
        .verified(
            vec![check.into()],
            Redactor::from_values(["verify-canary-4711"]),
        )
        .run(&progress)
        .await
        .unwrap_err();
    let message = error.to_string();
    let EcsError::Deploy(failure) = &error else {
        panic!("not a deploy failure: {error}");
    };
    assert_eq!(failure.failures.len(), 1, "{message}");
    let (name, RolloutFailure::Verify(report)) = &failure.failures[0] else {
        panic!("not a verify failure: {message}");
    };
    let shown = format!("{}?token=…", endpoint.url);
    assert_eq!(name, &format!("verify {shown}"));
    assert!(!report.passed);
    assert!((2..=6).contains(&report.attempts), "{report}");
    assert_eq!(endpoint.hits(), report.attempts as usize, "{report}");
    let LastAnswer::Status { status, excerpt } = &report.last else {
        panic!("no answer: {report}");
    };
    assert_eq!(*status, 200);
    assert_eq!(excerpt, "<h1>Maintenance</h1> token [REDACTED]");
    for secret in ["verify-canary-4711", "pass-9876", "abc"] {
        assert!(!message.contains(secret), "{secret} leaked: {message}");
    }
    assert!(
        message.contains("All services run their previous revisions"),
        "{message}"
    );

    // ECS said every rollout COMPLETED; the check still sent every service back.
    assert_eq!(cluster.task_definitions().await, before, "{message}");
    let events = events.lock().unwrap();
    for service in &cluster.services {
        assert!(
            events.iter().any(|e| matches!(e, DeployProgress::Finished { service: s, phase: Phase::Deploy, outcome: Ok(()) } if s == service)),
            "{service} completed before the check"
        );
    }
    assert!(
        events
            .iter()
            .any(|e| matches!(e, DeployProgress::Verified(r) if !r.passed))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, DeployProgress::RollbackStarted { .. }))
    );
}

#[tokio::test]
async fn a_release_whose_up_page_answers_500_fails_and_every_service_is_back() {
    let Some(env) = parts("verify answers 500").await else {
        return;
    };
    let endpoint = HealthEndpoint::start(500, "Server Error").await;
    let released = verified_release(env, &endpoint).await;
    let all = text(&released.resumed);
    assert_eq!(released.resumed.status.code(), Some(1), "{all}");
    let failed = format!("check {} failed after", endpoint.url);
    assert!(all.contains(&failed), "the output names the check:\n{all}");
    assert!(all.contains("status 500, body \"Server Error\""), "{all}");
    assert!(all.contains("rolling back every service"), "{all}");
    assert!(
        (2..=7).contains(&endpoint.hits()),
        "{} requests",
        endpoint.hits()
    );
    let record = record_of(released.project.path(), &released.run);
    assert_eq!(record["status"], "failed");
    let deploy = stage(&record, "deploy");
    assert_eq!(deploy["status"], "failed");
    assert!(
        deploy["error"].as_str().unwrap().contains(&failed),
        "{deploy}"
    );
    let checks = deploy["outputs"]["checks"].to_string();
    assert!(
        checks.contains(&failed) && checks.contains("status 500"),
        "{deploy}"
    );
    assert_eq!(
        released.cluster.task_definitions().await,
        released.before,
        "every service of the release is back on its previous revision"
    );
}

#[tokio::test]
async fn a_release_whose_up_page_says_application_up_succeeds() {
    let Some(env) = parts("verify passes").await else {
        return;
    };
    let endpoint = HealthEndpoint::start(200, "<html><body>Application up</body></html>").await;
    let released = verified_release(env, &endpoint).await;
    let all = text(&released.resumed);
    assert_eq!(released.resumed.status.code(), Some(0), "{all}");
    assert_eq!(endpoint.hits(), 1);
    let record = record_of(released.project.path(), &released.run);
    assert_eq!(record["status"], "succeeded");
    let checks = stage(&record, "deploy")["outputs"]["checks"].to_string();
    let passed = format!("check {} passed", endpoint.url);
    assert!(checks.contains(&passed), "{checks}");
    assert!(all.contains(&passed), "the output shows the check:\n{all}");
    let after = released.cluster.task_definitions().await;
    for service in &released.cluster.services {
        assert_ne!(after[service], released.before[service], "{service} moved");
    }
}
