//! Deploys through the library: four services moved to the new digest with one describe call
//! per poll, and a failed rollout (a crashing worker, with or without the circuit breaker)
//! rolling every service back.

use std::time::Duration;

use envelope_runner::exec::ecs::EcsAws;
use envelope_runner::exec::ecs::EcsError;
use envelope_runner::exec::ecs::deploy::{
    self, Deploy, DeployProgress, DeployRecord, Phase, RolloutFailure,
};

use super::recorder;
use crate::support::counting_proxy::CountingProxy;
use crate::support::ecs::{Cluster, ROLES, images, parts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_of_four_services_runs_the_new_digest_with_one_describe_call_per_poll() {
    let Some(env) = parts("deploy of 4 services").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    let images = images(env);
    let before = cluster.task_definitions().await;
    let proxy = CountingProxy::start(env.endpoint()).await;
    let aws = EcsAws::new(&env.sdk_config(&proxy.url).await);
    let request = cluster.deploy(&images.v2, Duration::from_secs(120));
    let (events, progress) = recorder();

    // What the approval page shows: per service, the image before and after.
    let diffs = deploy::preview(
        &aws,
        &cluster.name,
        &cluster.services,
        std::slice::from_ref(&images.v2),
    )
    .await
    .unwrap();
    for ((service, diff), role) in diffs.iter().zip(ROLES) {
        assert_eq!(service, &format!("envelope-prod-{role}"));
        assert_eq!(diff.images.len(), 1, "{diff}");
        assert_eq!(
            (
                diff.images[0].container.as_str(),
                diff.images[0].before.as_str(),
                diff.images[0].after.as_str()
            ),
            (role, images.v1.as_str(), images.v2.as_str())
        );
        assert!(diff.other.is_empty(), "{diff}");
    }
    assert_eq!(
        proxy.count("RegisterTaskDefinition"),
        0,
        "a preview registers nothing"
    );

    let mut deploy = Deploy::new(&aws, &request, DeployRecord::default());
    let preflight = deploy.prepare(&progress).await.unwrap();
    assert_eq!(preflight.len(), 4);
    assert!(
        preflight
            .iter()
            .all(|p| p.circuit_breaker.is_some_and(|b| b.rollback))
    );
    deploy.update(&progress).await.unwrap();
    let describes_before_wait = proxy.count("DescribeServices");
    assert_eq!(
        describes_before_wait, 2,
        "one call for the preview, one for the preflight"
    );
    let report = deploy.wait(&progress).await.unwrap();

    // One DescribeServices call per poll for the 4 services, the first a wait after the last
    // UpdateService, each at least the quick settling interval (0.35s) after the one before.
    let describe_times = proxy.times("DescribeServices");
    let wait_calls = &describe_times[describes_before_wait..];
    assert_eq!(
        wait_calls.len() as u32,
        report.polls,
        "{:?}",
        proxy.counts()
    );
    assert!(report.polls >= 2, "a rollout takes more than one look");
    let last_update = *proxy.times("UpdateService").last().unwrap();
    assert!(
        wait_calls[0] - last_update >= Duration::from_millis(950),
        "{:?}",
        wait_calls[0] - last_update
    );
    for pair in wait_calls.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(300),
            "{:?}",
            pair[1] - pair[0]
        );
    }
    // Registrations were held to one per second.
    let registrations = proxy.times("RegisterTaskDefinition");
    assert_eq!(registrations.len(), 4);
    for pair in registrations.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(900),
            "{:?}",
            pair[1] - pair[0]
        );
    }

    let record = deploy.record().clone();
    let after = cluster.task_definitions().await;
    for service in &cluster.services {
        assert_eq!(record.previous_task_definitions[service], before[service]);
        assert_eq!(after[service], record.task_definitions[service]);
        assert_ne!(after[service], before[service]);
        let role = service.trim_start_matches("envelope-prod-");
        let in_td = cluster.container_images(&after[service]).await;
        assert_eq!(in_td[role], images.v2, "{service}");
        let running = cluster.settled_images(service, role, &images.v2).await;
        assert_eq!(
            running.len(),
            1,
            "{service} runs one task, of the new digest: {running:?}"
        );
        if role == "api" {
            assert_eq!(
                in_td["log-router"], images.sidecar,
                "the sidecar keeps its image"
            );
            assert_eq!(running[0]["log-router"], images.sidecar);
        }
    }
    let deployed: Vec<_> = report.services.iter().map(|s| s.service.clone()).collect();
    assert_eq!(deployed, cluster.services);

    // The live view saw rollout progress and the services' new events.
    let events = events.lock().unwrap().clone();
    for service in &cluster.services {
        assert!(events.iter().any(|e| matches!(e, DeployProgress::Rollout(r)
            if &r.service == service && r.new.running == 1 && r.rollout_state == "COMPLETED")));
        assert!(
            events.iter().any(
                |e| matches!(e, DeployProgress::ServiceEvent { service: s, .. } if s == service)
            )
        );
        assert!(events.iter().any(|e| matches!(e, DeployProgress::Finished { service: s, phase: Phase::Deploy, outcome: Ok(()) } if s == service)));
    }

    // Resumed with the record: no registration and no UpdateService, only the wait.
    let stored: DeployRecord =
        serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
    let (registers, updates) = (
        proxy.count("RegisterTaskDefinition"),
        proxy.count("UpdateService"),
    );
    let resumed = Deploy::new(&aws, &request, stored)
        .run(&|_| {})
        .await
        .unwrap();
    assert_eq!(resumed.services, report.services);
    assert_eq!(proxy.count("RegisterTaskDefinition"), registers);
    assert_eq!(proxy.count("UpdateService"), updates);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_whose_worker_crashes_rolls_every_service_back() {
    let Some(env) = parts("deploy rollback").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    let images = images(env);
    let before = cluster.task_definitions().await;
    let aws = EcsAws::new(&env.sdk_config(env.endpoint()).await);
    let request = cluster.deploy(&images.bad, Duration::from_secs(120));
    let (events, progress) = recorder();

    let error = Deploy::new(&aws, &request, DeployRecord::default())
        .run(&progress)
        .await
        .unwrap_err();
    let EcsError::Deploy(ref failure) = error else {
        panic!("expected a failed deploy, got {error:?}");
    };
    // The worker's deployment was rolled back by ECS's circuit breaker (or marked FAILED).
    let (failed_service, why) = &failure.failures[0];
    assert_eq!(failed_service, "envelope-prod-worker", "{failure}");
    assert!(
        matches!(
            why,
            RolloutFailure::RolledBack { .. } | RolloutFailure::Failed { .. }
        ),
        "{why:?}"
    );
    let rollback = failure.rollback.as_ref().expect("on_failure: rollback");
    assert!(rollback.complete(), "{failure}");
    let message = error.to_string();
    assert!(
        message.contains("Rolled back every service of the release"),
        "{message}"
    );
    assert!(
        message.contains("All services run their previous revisions"),
        "{message}"
    );
    assert!(!error.is_environment());

    // Every service, the healthy ones included, runs its previous revision and image again.
    let after = cluster.task_definitions().await;
    assert_eq!(after, before, "{message}");
    for service in &cluster.services {
        let role = service.trim_start_matches("envelope-prod-");
        let running = cluster.settled_images(service, role, &images.v1).await;
        assert_eq!(running.len(), 1, "{service}: {running:?}");
    }
    let events = events.lock().unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, DeployProgress::RollbackStarted { .. }))
    );
    assert!(
        events.iter().any(|e| matches!(e, DeployProgress::ServiceEvent { message, .. } if message.contains("circuit breaker"))),
        "ECS's own events are shown"
    );
    for service in &cluster.services {
        assert!(
            events.iter().any(|e| matches!(e, DeployProgress::Finished { service: s, phase: Phase::Rollback, outcome: Ok(()) } if s == service)),
            "{service} rollback finished"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_that_times_out_without_a_circuit_breaker_is_rolled_back() {
    let Some(env) = parts("deploy timeout").await else {
        return;
    };
    // No circuit breaker: ECS (and ministack) replace the crashing worker tasks forever.
    let cluster = Cluster::create(env, false).await;
    let images = images(env);
    let before = cluster.task_definitions().await;
    let aws = EcsAws::new(&env.sdk_config(env.endpoint()).await);
    let request = cluster.deploy(&images.bad, Duration::from_secs(20));

    let error = Deploy::new(&aws, &request, DeployRecord::default())
        .run(&|_| {})
        .await
        .unwrap_err();
    let EcsError::Deploy(ref failure) = error else {
        panic!("expected a failed deploy, got {error:?}");
    };
    let failed: Vec<_> = failure.failures.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(failed, ["envelope-prod-worker"], "{failure}");
    assert!(
        matches!(
            failure.failures[0].1,
            RolloutFailure::TimedOut { .. } | RolloutFailure::TasksKeepStopping { .. }
        ),
        "{failure}"
    );
    assert!(failure.rollback.as_ref().unwrap().complete(), "{failure}");
    assert_eq!(cluster.task_definitions().await, before);
    for service in &cluster.services {
        let role = service.trim_start_matches("envelope-prod-");
        let running = cluster.settled_images(service, role, &images.v1).await;
        assert_eq!(running.len(), 1, "{service}: {running:?}");
    }
}
