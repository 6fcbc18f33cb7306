//! `verify:` checks of every new task (`task: {service, port, path}`) against real task
//! containers on ministack serving HTTP (busybox httpd, see [`WebCluster`]): a release whose
//! tasks answer 500 is rolled back although ECS reported the rollout COMPLETED, each task
//! reported on its own; a healthy release passes on every task. Requests go only to the
//! addresses ministack gives its own task containers, with a deadline of a few seconds. (A
//! task without a network interface address is covered by task_checks' unit test: ministack
//! cannot run a bridge-mode rolling deploy of a service publishing a fixed port.)

use std::collections::BTreeSet;
use std::time::Duration;

use envelope_runner::exec::ecs::deploy::{Deploy, DeployProgress, DeployRecord, RolloutFailure};
use envelope_runner::exec::ecs::{EcsAws, EcsError};
use envelope_runner::exec::verify::{CheckReport, LastAnswer, TaskCheck};
use envelope_runner::redact::Redactor;

use super::recorder;
use crate::support::ecs::{UP_PATH, WEB_PORT, WebCluster, parts, web_images};
use envelope_tests::env::TestEnv;

/// Every new task of the web service must answer 200 with "Application up" on /cgi-bin/up,
/// tried for 4 s every second.
fn up_check() -> TaskCheck {
    TaskCheck {
        service: "web".into(),
        port: WEB_PORT,
        path: UP_PATH.into(),
        status: 200,
        body_contains: Some("Application up".into()),
        timeout: Duration::from_secs(4),
        interval: Duration::from_secs(1),
    }
}

/// The addresses Docker gives the cluster's running task containers.
fn container_addresses(env: &TestEnv, cluster: &WebCluster) -> BTreeSet<String> {
    let arn_filter = format!("label=com.amazonaws.ecs.cluster={}", cluster.arn);
    crate::support::docker::container_addresses(env.docker_cli(), Some(&arn_filter))
}

/// The host of a task report's URL (`http://HOST:PORT/path (task … of web)`).
fn host_of(report: &CheckReport) -> String {
    let url = report.url.split_whitespace().next().unwrap();
    let address = url.strip_prefix("http://").unwrap();
    address.split(':').next().unwrap().to_owned()
}

async fn deploy_checked(
    env: &'static TestEnv,
    cluster: &WebCluster,
    image: &str,
) -> (
    Result<(), EcsError>,
    Vec<CheckReport>,
    BTreeSet<String>,
    Vec<DeployProgress>,
) {
    let aws = EcsAws::new(&env.sdk_config(env.endpoint()).await);
    let request = cluster.deploy(image, Duration::from_secs(120));
    let (events, progress) = recorder();
    let mut deploy = Deploy::new(&aws, &request, DeployRecord::default())
        .verified(vec![up_check().into()], Redactor::new());
    deploy.prepare(&progress).await.unwrap();
    deploy.update(&progress).await.unwrap();
    let mut addresses = BTreeSet::new();
    let result = deploy.wait(&progress).await.map(|_| ());
    addresses.extend(container_addresses(env, cluster));
    let reports = deploy.check_reports().to_vec();
    let events = events.lock().unwrap().clone();
    (result, reports, addresses, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_whose_tasks_answer_500_is_rolled_back_and_each_task_is_named() {
    let Some(env) = parts("task checks answer 500").await else {
        return;
    };
    let cluster = WebCluster::create(env, 2).await;
    let before = cluster.task_definition().await;
    let (result, reports, _, events) = deploy_checked(env, &cluster, &web_images(env).broken).await;
    let error = result.unwrap_err();
    let message = error.to_string();
    let EcsError::Deploy(failure) = &error else {
        panic!("not a deploy failure: {message}");
    };
    assert_eq!(reports.len(), 2, "one report per new task: {reports:#?}");
    assert_eq!(failure.failures.len(), 2, "{message}");
    for (name, failed) in &failure.failures {
        let RolloutFailure::Verify(report) = failed else {
            panic!("not a verify failure: {message}");
        };
        assert!(name.ends_with("of web)"), "{name}");
        assert!(!report.passed);
        assert!((2..=6).contains(&report.attempts), "{report}");
        let LastAnswer::Status { status, excerpt } = &report.last else {
            panic!("no answer: {report}");
        };
        assert_eq!(*status, 500, "{report}");
        assert_eq!(excerpt, "Server Error", "{report}");
    }
    let hosts: BTreeSet<String> = reports.iter().map(host_of).collect();
    assert_eq!(hosts.len(), 2, "two tasks, two addresses: {reports:#?}");
    assert!(
        message.contains("All services run their previous revisions"),
        "{message}"
    );
    // ECS said the rollout COMPLETED; the checks still sent the service back.
    assert!(events.iter().any(|e| matches!(
        e,
        DeployProgress::Finished {
            outcome: Ok(()),
            ..
        }
    )));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, DeployProgress::RollbackStarted { .. }))
    );
    assert_eq!(cluster.task_definition().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_whose_every_task_is_up_passes() {
    let Some(env) = parts("task checks pass").await else {
        return;
    };
    let cluster = WebCluster::create(env, 2).await;
    let before = cluster.task_definition().await;
    let (result, reports, addresses, _) = deploy_checked(env, &cluster, &web_images(env).v2).await;
    result.unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(reports.len(), 2, "{reports:#?}");
    let hosts: BTreeSet<String> = reports.iter().map(host_of).collect();
    assert_eq!(hosts.len(), 2, "{reports:#?}");
    for report in &reports {
        assert!(report.passed, "{report}");
        assert_eq!(report.attempts, 1, "{report}");
        let LastAnswer::Status { excerpt, .. } = &report.last else {
            panic!("no answer: {report}");
        };
        // The new revision answered, not the old one.
        assert!(excerpt.contains("Application up (v2)"), "{report}");
    }
    // The addresses asked are the task containers' own (only those are asked).
    assert!(hosts.is_subset(&addresses), "{hosts:?} ⊄ {addresses:?}");
    assert_ne!(cluster.task_definition().await, before, "the service moved");
}
