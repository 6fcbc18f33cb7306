//! Throttled ECS, ECR and CloudWatch Logs calls: retried until the release goes out, and
//! throttling that never stops failing as an environment problem after bounded attempts.

use std::time::Duration;

use envelope_runner::exec::ecs::deploy::{Deploy, DeployRecord, DeployRequest, OnFailure};
use envelope_runner::exec::ecs::migrate::{Migration, MigrationRecord};
use envelope_runner::exec::ecs::{EcsAws, PollSchedule};

use super::{expected_migration_lines, log_lines, recorder};
use crate::support::counting_proxy::CountingProxy;
use crate::support::ecs::{Cluster, images, parts, ulid_like};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_calls_are_retried_and_the_release_goes_out() {
    let Some(env) = parts("throttling").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    let images = images(env);
    let proxy = CountingProxy::start(env.endpoint()).await;
    for operation in [
        "DescribeServices",
        "DescribeTaskDefinition",
        "RegisterTaskDefinition",
        "UpdateService",
        "RunTask",
        "DescribeTasks",
        "ListTasks",
        "GetLogEvents",
    ] {
        proxy.throttle(operation, 2);
    }
    let aws = EcsAws::new(&env.sdk_config(&proxy.url).await);

    let migration = cluster.migration(&[&images.v2], &["/app/migrate", "0", "5"]);
    let (events, progress) = recorder();
    let outcome = Migration::new(&aws, &migration, MigrationRecord::default())
        .run(&progress)
        .await
        .unwrap();
    assert_eq!(outcome.exit_code, 0);
    assert_eq!(
        log_lines(&events.lock().unwrap()),
        expected_migration_lines(0, 5)
    );
    assert_eq!(proxy.throttled("RunTask"), 2);
    assert_eq!(
        proxy.count("RunTask"),
        3,
        "two throttled attempts, one task"
    );

    let deploy = cluster.deploy(&images.v2, Duration::from_secs(120));
    let report = Deploy::new(&aws, &deploy, DeployRecord::default())
        .run(&|_| {})
        .await
        .unwrap();
    assert_eq!(report.services.len(), 4);
    for operation in [
        "DescribeServices",
        "DescribeTaskDefinition",
        "RegisterTaskDefinition",
        "UpdateService",
        "GetLogEvents",
    ] {
        assert_eq!(
            proxy.throttled(operation),
            2,
            "{operation}: {:?}",
            proxy.counts()
        );
    }
    // 1 migration revision + 4 service revisions, plus the 2 throttled attempts.
    assert_eq!(proxy.count("RegisterTaskDefinition"), 5 + 2);
    assert_eq!(proxy.count("UpdateService"), 4 + 2);
    let counted = aws.call_counts();
    assert_eq!(
        counted["ecs:RegisterTaskDefinition"], 7,
        "the library counts what the proxy saw"
    );
    let after = cluster.task_definitions().await;
    for service in &cluster.services {
        let role = service.trim_start_matches("envelope-prod-");
        assert_eq!(
            cluster.container_images(&after[service]).await[role],
            images.v2
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_that_never_stops_fails_as_an_environment_problem() {
    let Some(env) = parts("throttling forever").await else {
        return;
    };
    let proxy = CountingProxy::start(env.endpoint()).await;
    proxy.throttle("DescribeServices", usize::MAX);
    let aws = EcsAws::new(&env.sdk_config(&proxy.url).await).with_backoff(
        envelope_runner::backoff::Backoff::full(
            4,
            Duration::from_millis(10),
            Duration::from_millis(50),
        ),
    );
    let request = DeployRequest {
        cluster: "envelope-e2e-no-such-cluster".into(),
        services: vec!["envelope-prod-api".into()],
        images: vec![format!(
            "{}@sha256:{}",
            images(env).repository,
            "a".repeat(64)
        )],
        run_id: ulid_like(),
        stage: "deploy".into(),
        timeout: Duration::from_secs(5),
        rollback_timeout: Duration::from_secs(5),
        on_failure: OnFailure::Rollback,
        poll: PollSchedule::DEPLOY,
    };
    let error = Deploy::new(&aws, &request, DeployRecord::default())
        .prepare(&|_| {})
        .await
        .unwrap_err();
    assert_eq!(proxy.count("DescribeServices"), 4, "attempts are bounded");
    assert_eq!(error.aws_code(), Some("ThrottlingException"));
    assert!(error.is_environment());
    assert!(
        error
            .to_string()
            .contains("still throttled after 4 attempts"),
        "{error}"
    );
}
