//! One deploy at a time, even when the store hiccups: the deploy lease's heartbeat outlasts an
//! SQLite write lock held by another process and a DynamoDB that throttles, and a run whose
//! lease is taken over stops before its next AWS change and says so.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use envelope_runner::exec::lease::GateLease;
use envelope_runner::store::{
    DynamoDbStore, LeaseOutcome, ManualClock, Store, dynamodb_client_config, open_sqlite,
};
use tokio::time::Instant;

use crate::ecs::{
    Cluster, api_project, app_repository, approve_waiting_release, parts, pipeline_runner,
    record_of, stage_of,
};
use crate::fault_proxy::FaultProxy;
use crate::reattach::revisions_of;

/// Long enough that a heartbeat (a third of it) plus SQLite's busy timeout (10 s) fit inside a
/// store outage shorter than two thirds of it.
const TTL: Duration = Duration::from_secs(36);
/// The outage: longer than one heartbeat plus the busy timeout, so a renewal fails during it.
const OUTAGE: Duration = Duration::from_secs(23);
const KEY: &str = "pipeline:api:gate";

/// `sqlite3` (the command-line shell) holding the store's write lock until released.
struct Locker {
    child: Child,
    stdin: ChildStdin,
}

impl Locker {
    fn hold(path: &Path) -> Locker {
        let mut child = Command::new("sqlite3")
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the sqlite3 command (Debian package sqlite3; scripts/test-env installs it)");
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b".timeout 10000\nBEGIN EXCLUSIVE;\nSELECT 'locked';\n")
            .unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked", "sqlite3 took the write lock");
        Locker { child, stdin }
    }

    fn release(mut self) {
        self.stdin.write_all(b"COMMIT;\n.quit\n").unwrap();
        drop(self.stdin);
        assert!(self.child.wait().unwrap().success());
    }
}

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
        let child = pipeline_runner(&dir)
            .args(["resume", &run])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            let record = record_of(&dir, &run);
            if stage_of(&record, "migrate")["outputs"]["task_arn"].is_string() {
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
    assert_eq!(stage_of(&record, "migrate")["status"], "succeeded");
    let deploy = stage_of(&record, "deploy");
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
