//! One deploy at a time, even when the store hiccups: the deploy lease's heartbeat outlasts an
//! SQLite write lock held by another process and a DynamoDB that throttles, and a run whose
//! lease is taken over stops before its next AWS change and says so.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use envelope_runner::exec::lease::GateLease;
use envelope_runner::store::{
    DynamoDbStore, LeaseOutcome, ManualClock, Store, dynamodb_client_config, open_sqlite,
};
use tokio::time::Instant;

use crate::reattach::revisions_of;
use crate::support::ecs::{
    Cluster, api_project, app_repository, approve_waiting_release, parts, pipeline_runner,
    record_of,
};
use crate::support::fault_proxy::FaultProxy;
use crate::support::process::KillOnDrop;
use crate::support::sqlite_locker::Locker;
use crate::support::stage;

/// Long enough that a heartbeat (a third of it) plus SQLite's busy timeout (10 s) fit inside a
/// store outage shorter than two thirds of it.
const TTL: Duration = Duration::from_secs(36);
/// The outage: longer than one heartbeat plus the busy timeout, so a renewal fails during it.
const OUTAGE: Duration = Duration::from_secs(23);
const KEY: &str = "pipeline:api:gate";

fn granted(outcome: LeaseOutcome) -> u64 {
    match outcome {
        LeaseOutcome::Granted { generation, .. } => generation,
        held => panic!("expected the lease, got {held:?}"),
    }
}

/// Holds the lease through `outage` (started by the caller right after), then checks that a
/// competitor still finds it held once a lease whose heartbeat had stopped would have expired.
async fn outlasts(store: Arc<dyn Store>, competitor: Arc<dyn Store>, outage: impl AsyncFnOnce()) {
    let generation = granted(store.acquire_lease(KEY, "run-a", TTL).await.unwrap());
    let started = Instant::now();
    let lease = GateLease::start(store, KEY.into(), "run-a".into(), generation, TTL);
    outage().await;
    // The first grant's expiry has passed: only renewals during or after the outage keep it.
    tokio::time::sleep_until(started + TTL + Duration::from_secs(4)).await;
    assert_eq!(lease.lost(), None, "the heartbeat rode the outage out");
    assert!(
        matches!(
            competitor.acquire_lease(KEY, "run-b", TTL).await.unwrap(),
            LeaseOutcome::Held { ref by, .. } if by == "run-a"
        ),
        "another run still finds the lease held"
    );
    lease.confirm().await.expect("the fence passes");
    lease.release().await;
    granted(competitor.acquire_lease(KEY, "run-b", TTL).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_outlasts_the_sqlite_write_lock_held_by_another_process() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("state.db");
    let store: Arc<dyn Store> = Arc::new(open_sqlite(&path).unwrap());
    let competitor: Arc<dyn Store> = Arc::new(open_sqlite(&path).unwrap());
    outlasts(store, competitor, async || {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            let locker = Locker::hold(&path);
            std::thread::sleep(OUTAGE);
            locker.release();
        })
        .await
        .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_outlasts_dynamodb_throttling_and_server_errors() {
    let Some(env) = parts("the_lease_outlasts_dynamodb_throttling").await else {
        return;
    };
    let url = envelope_tests::env::dynamodb_store(env, "e2e-lease-throttle").await;
    let table = url.trim_start_matches("dynamodb://").to_owned();
    let proxy = FaultProxy::start(env.endpoint()).await;
    let through_proxy = dynamodb_client_config(&env.sdk_config(&proxy.url).await);
    let store: Arc<dyn Store> = Arc::new(
        DynamoDbStore::open(aws_sdk_dynamodb::Client::from_conf(through_proxy), &table)
            .await
            .unwrap(),
    );
    let direct = dynamodb_client_config(&env.sdk_config(env.endpoint()).await);
    let competitor: Arc<dyn Store> = Arc::new(
        DynamoDbStore::open(aws_sdk_dynamodb::Client::from_conf(direct), &table)
            .await
            .unwrap(),
    );
    outlasts(store, competitor, async || {
        proxy.throttle_for(OUTAGE);
        tokio::time::sleep(OUTAGE).await;
    })
    .await;
    assert!(proxy.refused() > 0, "the heartbeat met the throttling");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_lease_is_taken_over_stops_before_its_next_aws_change() {
    let Some(env) = parts("a_run_whose_lease_is_taken_over").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    let before = cluster.task_definitions().await;
    let (_repo, url) = app_repository(env, "v2.0.0", "");
    let project = api_project(env, &cluster, &url, 0);
    let pipeline_file = project.path().join("pipelines/api.yaml");
    // A migration slow enough to take the lease away while it runs.
    std::fs::write(
        &pipeline_file,
        std::fs::read_to_string(&pipeline_file).unwrap().replace(
            r#"command: [/app/migrate, "0", "25"]"#,
            r#"command: [/bin/sh, -c, "sleep 6; /app/migrate 0 5"]"#,
        ),
    )
    .unwrap();
    let dir = project.path().to_path_buf();
    let (run, output) = tokio::task::spawn_blocking(move || {
        let run = approve_waiting_release(&dir);
        let child = KillOnDrop::new(
            pipeline_runner(&dir)
                .args(["resume", &run])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            let record = record_of(&dir, &run);
            if stage(&record, "migrate")["outputs"]["task_arn"].is_string() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the migration never started: {record}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Another process takes the lease over, as it may once it believes the holder dead:
        // its clock says the lease expired long ago.
        let later = ManualClock::starting_at(chrono::Utc::now() + chrono::Duration::hours(1));
        let intruder = open_sqlite(&dir.join(".envelope/state.db"))
            .unwrap()
            .with_clock(later.clock());
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                granted(
                    intruder
                        .acquire_lease(KEY, "another-run", Duration::from_secs(600))
                        .await
                        .unwrap(),
                );
            });
        (run, child.wait_with_output().unwrap())
    })
    .await
    .unwrap();
    let all = crate::support::text(&output);
    assert_eq!(output.status.code(), Some(5), "{all}");
    assert!(
        all.contains("lost the pipeline's deploy lock `pipeline:api:gate`")
            && all.contains("stopped before it would register a task definition revision"),
        "it says why it stopped, and before what:\n{all}"
    );
    let record = record_of(project.path(), &run);
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(stage(&record, "migrate")["status"], "succeeded");
    let deploy = stage(&record, "deploy");
    assert_eq!(deploy["status"], "failed");
    assert!(
        deploy["error"]
            .as_str()
            .unwrap()
            .contains("lost the pipeline's deploy lock"),
        "{deploy}"
    );
    assert_eq!(
        cluster.task_definitions().await,
        before,
        "no service was touched"
    );
    let revisions = revisions_of(&cluster, &run).await;
    assert!(
        revisions
            .values()
            .all(|stages| !stages.contains_key("deploy")),
        "nothing was registered for the deploy: {revisions:?}"
    );
}

/// Samples every service's deployments until stopped: deployment id → (task definition,
/// createdAt, the latest updatedAt), in ECS's own seconds.
fn sample_deployments(
    cluster: &Cluster,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<std::collections::BTreeMap<String, (String, i64, i64)>> {
    let (ecs, name, services) = (
        cluster.ecs.clone(),
        cluster.name.clone(),
        cluster.services.clone(),
    );
    tokio::spawn(async move {
        let mut seen = std::collections::BTreeMap::new();
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            if let Ok(out) = ecs
                .describe_services()
                .cluster(&name)
                .set_services(Some(services.clone()))
                .send()
                .await
            {
                for service in out.services() {
                    for d in service.deployments() {
                        let created = d.created_at().map(|t| t.secs()).unwrap_or_default();
                        let updated = d.updated_at().map(|t| t.secs()).unwrap_or(created);
                        seen.insert(
                            d.id().unwrap_or_default().to_owned(),
                            (
                                d.task_definition().unwrap_or_default().to_owned(),
                                created,
                                updated,
                            ),
                        );
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        seen
    })
}

/// When each run had a migration or deployment in flight, by ECS's timestamps: from the first
/// task or deployment it created to the last one's stop or completion.
async fn windows_in_ecs(
    cluster: &Cluster,
    runs: &[String],
    deployments: &std::collections::BTreeMap<String, (String, i64, i64)>,
) -> Vec<(i64, i64)> {
    let mut run_of_revision = std::collections::BTreeMap::new();
    for (revision, _, _) in deployments.values() {
        let tags = cluster
            .ecs
            .describe_task_definition()
            .task_definition(revision)
            .include(aws_sdk_ecs::types::TaskDefinitionField::Tags)
            .send()
            .await
            .unwrap()
            .tags
            .unwrap_or_default();
        if let Some(run) = tags.iter().find(|t| t.key() == Some("envelope:run")) {
            run_of_revision.insert(revision.clone(), run.value().unwrap_or_default().to_owned());
        }
    }
    let mut windows = Vec::new();
    for run in runs {
        let mut times: Vec<(i64, i64)> = deployments
            .values()
            .filter(|(revision, _, _)| run_of_revision.get(revision) == Some(run))
            .map(|(_, created, updated)| (*created, *updated))
            .collect();
        assert_eq!(times.len(), 4, "one deployment per service for run {run}");
        let tasks = cluster
            .ecs
            .list_tasks()
            .cluster(&cluster.name)
            .started_by(format!("envelope-{run}"))
            .desired_status(aws_sdk_ecs::types::DesiredStatus::Stopped)
            .send()
            .await
            .unwrap()
            .task_arns
            .unwrap_or_default();
        assert_eq!(tasks.len(), 1, "one migration task for run {run}");
        let described = cluster
            .ecs
            .describe_tasks()
            .cluster(&cluster.name)
            .set_tasks(Some(tasks))
            .send()
            .await
            .unwrap();
        for task in described.tasks() {
            times.push((
                task.created_at().unwrap().secs(),
                task.stopped_at().unwrap().secs(),
            ));
        }
        let start = times.iter().map(|t| t.0).min().unwrap();
        let end = times.iter().map(|t| t.1).max().unwrap();
        windows.push((start, end));
    }
    windows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_releases_never_overlap_in_ecs_while_sqlite_is_locked() {
    queued_releases(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_releases_never_overlap_in_ecs_while_dynamodb_throttles() {
    queued_releases(true).await;
}

/// Two approved releases resumed at once; while the first is past the gate, the store stops
/// answering for longer than a heartbeat (SQLite locked by `sqlite3`, or DynamoDB refusing
/// through a proxy). The migration is longer than the lease's time to live, so a lease whose
/// heartbeat gave up would let the second run in while the first still migrates.
async fn queued_releases(dynamodb: bool) {
    let Some(env) = parts("queued_releases_never_overlap").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    let (_repo, url) = app_repository(env, "v2.0.0", "");
    let project = api_project(env, &cluster, &url, 0);
    let pipeline_file = project.path().join("pipelines/api.yaml");
    std::fs::write(
        &pipeline_file,
        std::fs::read_to_string(&pipeline_file).unwrap().replace(
            r#"command: [/app/migrate, "0", "25"]"#,
            r#"command: [/bin/sh, -c, "sleep 45; /app/migrate 0 3"]"#,
        ),
    )
    .unwrap();
    let proxy = FaultProxy::start(env.endpoint()).await;
    if dynamodb {
        let store = envelope_tests::env::dynamodb_store(env, "e2e-lease-queued").await;
        std::fs::write(project.path().join("store-url"), store).unwrap();
    }
    let dir = project.path().to_path_buf();
    let runs = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || vec![approve_waiting_release(&dir), approve_waiting_release(&dir)]
    })
    .await
    .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_deployments(&cluster, stop.clone());
    let children: Vec<KillOnDrop> = runs
        .iter()
        .map(|run| {
            KillOnDrop::new(
                pipeline_runner(&dir)
                    .args(["resume", run, "--approval-poll", "0.5"])
                    .env("ENVELOPE_LEASE_TTL", TTL.as_secs().to_string())
                    .env("AWS_ENDPOINT_URL_DYNAMODB", &proxy.url)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let outputs = tokio::task::spawn_blocking({
        let dir = dir.clone();
        let runs = runs.clone();
        let path = dir.join(".envelope/state.db");
        let refusing = proxy.clone();
        move || {
            // Once a run's migration task is running, the store stops answering.
            let deadline = std::time::Instant::now() + Duration::from_secs(180);
            loop {
                let started = runs.iter().any(|run| {
                    stage(&record_of(&dir, run), "migrate")["outputs"]["task_arn"].is_string()
                });
                if started {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "no migration started");
                std::thread::sleep(Duration::from_millis(200));
            }
            if dynamodb {
                refusing.throttle_for(OUTAGE);
                std::thread::sleep(OUTAGE);
            } else {
                let locker = Locker::hold(&path);
                std::thread::sleep(OUTAGE);
                locker.release();
            }
            children
                .into_iter()
                .map(|child| child.wait_with_output().unwrap())
                .collect::<Vec<_>>()
        }
    })
    .await
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let deployments = sampler.await.unwrap();
    for output in &outputs {
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            crate::support::text(output)
        );
    }
    if dynamodb {
        assert!(proxy.refused() > 0, "the runs met the throttling");
    }
    let mut windows = windows_in_ecs(&cluster, &runs, &deployments).await;
    windows.sort();
    assert!(
        windows[0].1 <= windows[1].0,
        "migrate/deploy of the two runs overlapped in ECS: {windows:?}"
    );
}
