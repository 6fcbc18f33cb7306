//! Migrations through the library: a task on the api service's task definition with the new
//! image, its logs streamed in order, its exit code the verdict; never started twice.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ecs::types::{LaunchType, TaskField};
use envelope_runner::exec::ecs::migrate::{Migration, MigrationProgress, MigrationRecord};
use envelope_runner::exec::ecs::{EcsAws, EcsError};

use super::{expected_migration_lines, log_lines, recorder};
use crate::support::counting_proxy::CountingProxy;
use crate::support::ecs::{Cluster, images, parts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_that_exits_0_succeeds_with_every_log_line_and_is_never_started_twice() {
    let Some(env) = parts("migration exit 0").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    let images = images(env);
    let proxy = CountingProxy::start(env.endpoint()).await;
    let aws = EcsAws::new(&env.sdk_config(&proxy.url).await);
    let request = cluster.migration(&[&images.v2], &["/app/migrate", "0", "30"]);
    let (events, progress) = recorder();

    let mut migration = Migration::new(&aws, &request, MigrationRecord::default());
    migration.register(&progress).await.unwrap();
    let registered = migration.record().task_definition.clone().unwrap();
    // What the caller records between the steps survives a round trip through JSON.
    let stored = serde_json::to_string(migration.record()).unwrap();
    let record: MigrationRecord = serde_json::from_str(&stored).unwrap();
    assert_eq!(&record, migration.record());
    migration.start(&progress).await.unwrap();
    let task_arn = migration.record().task_arn.clone().unwrap();
    let outcome = migration.wait(&progress).await.unwrap();

    assert_eq!(outcome.exit_code, 0);
    assert_eq!(outcome.task_arn, task_arn);
    assert_eq!(
        log_lines(&events.lock().unwrap()),
        expected_migration_lines(0, 30),
        "every line, in order, none lost at the end"
    );
    assert_eq!(outcome.log_lines, 31);
    let stream = outcome.log_stream.clone().unwrap();
    assert_eq!(
        stream,
        format!(
            "{} ecs/api/{}",
            cluster.log_group,
            task_arn.rsplit('/').next().unwrap()
        )
    );

    // The new revision has the new digest for the app and the sidecar untouched.
    let images_in_td = cluster.container_images(&registered).await;
    assert_eq!(images_in_td["api"], images.v2);
    assert_eq!(images_in_td["log-router"], images.sidecar);

    // The task ran on the service's network, named the run, and carried its tags.
    let task = cluster
        .ecs
        .describe_tasks()
        .cluster(&cluster.name)
        .tasks(&task_arn)
        .include(TaskField::Tags)
        .send()
        .await
        .unwrap()
        .tasks
        .unwrap()
        .remove(0);
    assert_eq!(task.started_by(), Some(request.started_by().as_str()));
    assert!(request.started_by().len() <= 36);
    assert_eq!(task.launch_type(), Some(&LaunchType::Fargate));
    let subnet = task
        .attachments()
        .iter()
        .flat_map(|a| a.details())
        .find(|d| d.name() == Some("subnetId"));
    assert_eq!(
        subnet.and_then(|d| d.value()),
        Some(cluster.subnet.as_str())
    );
    let tags: BTreeMap<_, _> = task
        .tags()
        .iter()
        .map(|t| (t.key().unwrap(), t.value().unwrap()))
        .collect();
    assert_eq!(tags["envelope:run"], request.run_id);
    assert_eq!(tags["envelope:pipeline"], "api");
    assert_eq!(proxy.count("RunTask"), 1);

    // Resumed with the recorded task: it re-attaches and judges the same task again.
    let mut resumed = Migration::new(&aws, &request, migration.record().clone());
    let again = resumed.run(&|_| {}).await.unwrap();
    assert_eq!(again.task_arn, task_arn);
    // Killed after RunTask but before recording its answer: the run's task is found by
    // startedBy instead of starting a second one.
    let lost = MigrationRecord {
        task_definition: Some(registered.clone()),
        task_arn: None,
    };
    let (reattach_events, reattach_progress) = recorder();
    let mut after_crash = Migration::new(&aws, &request, lost);
    after_crash.start(&reattach_progress).await.unwrap();
    assert_eq!(
        after_crash.record().task_arn.as_deref(),
        Some(task_arn.as_str())
    );
    assert!(
        reattach_events
            .lock()
            .unwrap()
            .contains(&MigrationProgress::Started {
                task_arn: task_arn.clone(),
                reattached: true
            })
    );
    assert_eq!(proxy.count("RunTask"), 1, "never a second migration task");
    assert_eq!(proxy.count("RegisterTaskDefinition"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_that_exits_1_fails_with_its_last_log_lines() {
    let Some(env) = parts("migration exit 1").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    let images = images(env);
    let aws = EcsAws::new(&env.sdk_config(env.endpoint()).await);
    let request = cluster.migration(&[&images.v2], &["/app/migrate", "1", "30"]);
    let (events, progress) = recorder();

    let error = Migration::new(&aws, &request, MigrationRecord::default())
        .run(&progress)
        .await
        .unwrap_err();
    let EcsError::MigrationFailed {
        exit_code,
        ref last_lines,
        ref container,
        ..
    } = error
    else {
        panic!("expected a failed migration, got {error:?}");
    };
    assert_eq!(exit_code, 1);
    assert_eq!(container, "api");
    let expected = expected_migration_lines(1, 30);
    assert_eq!(
        last_lines,
        &expected[expected.len() - 20..],
        "the last 20 lines"
    );
    assert_eq!(
        log_lines(&events.lock().unwrap()),
        expected,
        "all lines were streamed"
    );
    let message = error.to_string();
    assert!(message.contains("exited with code 1"), "{message}");
    assert!(
        message.contains("migration finished with exit code 1"),
        "{message}"
    );
    assert!(
        message.contains("Migrating: 2026_01_01_000030_step_30"),
        "{message}"
    );
    assert!(
        !message.contains("step_10\n"),
        "only the last lines: {message}"
    );
    assert!(message.contains("The deploy did not start"), "{message}");
    assert!(!error.is_environment());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_that_cannot_start_fails_and_is_not_exit_0() {
    let Some(env) = parts("migration fails to start").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    let images = images(env);
    let aws = EcsAws::new(&env.sdk_config(env.endpoint()).await);
    let missing = format!("{}@sha256:{}", images.repository, "0".repeat(64));
    let request = cluster.migration(&[&missing], &["/app/migrate", "0", "3"]);
    let (events, progress) = recorder();

    let result = Migration::new(&aws, &request, MigrationRecord::default())
        .run(&progress)
        .await;
    let error = result.expect_err("a task that never ran must not succeed");
    let EcsError::MigrationFailedToStart { ref reason, .. } = error else {
        panic!("expected a task that failed to start, got {error:?}");
    };
    assert!(
        reason.contains("manifest unknown") || reason.contains("not found"),
        "{reason}"
    );
    assert!(
        error.to_string().contains("there is no exit code"),
        "{error}"
    );
    assert!(error.is_environment());
    assert!(log_lines(&events.lock().unwrap()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_that_runs_too_long_is_stopped_and_fails() {
    let Some(env) = parts("migration timeout").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    let images = images(env);
    let aws = EcsAws::new(&env.sdk_config(env.endpoint()).await);
    let mut request = cluster.migration(
        &[&images.v2],
        &["sh", "-c", "echo waiting for a lock; sleep 600"],
    );
    request.timeout = Duration::from_secs(4);
    let (events, progress) = recorder();

    let error = Migration::new(&aws, &request, MigrationRecord::default())
        .run(&progress)
        .await
        .unwrap_err();
    let EcsError::MigrationTimedOut {
        ref task, stopped, ..
    } = error
    else {
        panic!("expected a timeout, got {error:?}");
    };
    assert!(stopped, "{error}");
    assert_eq!(log_lines(&events.lock().unwrap()), ["waiting for a lock"]);
    let status = cluster
        .ecs
        .describe_tasks()
        .cluster(&cluster.name)
        .tasks(task)
        .send()
        .await
        .unwrap()
        .tasks
        .unwrap()
        .remove(0);
    assert_eq!(
        status.last_status(),
        Some("STOPPED"),
        "the task does not run on"
    );
    assert!(
        error
            .to_string()
            .contains("was still running after 4s and was stopped"),
        "{error}"
    );
}
