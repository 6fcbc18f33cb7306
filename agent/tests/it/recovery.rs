//! Runs an agent left behind: resumed by the same agent after a restart, left alone while
//! another live agent holds them, timed out at their gate by the store's clock, and
//! checkpointed on shutdown.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use envelope_agent::Agent;
use envelope_runner::run::{
    RunId, RunRecord, RunStatus, RunTrigger, StageOutputs, StageRecord, StageStatus, TriggerKind,
};
use envelope_runner::store::{LeaseOutcome, ManualClock, Store, open_sqlite};

use crate::fake_github::FakeGithub;
use crate::support::*;

/// A run of release `release_id` as an agent leaves it when killed during its source stage.
async fn interrupted_run(store: &dyn Store, release_id: u64, tag: &str) -> RunId {
    let stages = [
        ("source", StageStatus::Running),
        ("approval", StageStatus::Pending),
    ];
    left_run(
        store,
        release_id,
        tag,
        RunStatus::Running,
        &stages,
        Utc::now(),
    )
    .await
}

/// A run of release `release_id` as an agent left it: `status`, with `stages` of these
/// statuses, created and each (but a pending one) started at `now`.
async fn left_run(
    store: &dyn Store,
    release_id: u64,
    tag: &str,
    status: RunStatus,
    stages: &[(&str, StageStatus)],
    now: DateTime<Utc>,
) -> RunId {
    let id = RunId::new();
    let now = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let stage = |name: &str, status| StageRecord {
        name: name.into(),
        kind: name.parse().unwrap(),
        status,
        started_at: (status != StageStatus::Pending).then(|| now.clone()),
        finished_at: None,
        outputs: StageOutputs::default(),
        error: None,
    };
    let mut context = BTreeMap::new();
    context.insert("git_ref".to_owned(), tag.to_owned());
    context.insert("run_id".to_owned(), id.0.clone());
    context.insert("created".to_owned(), now.clone());
    store
        .create_run(&RunRecord {
            id: id.clone(),
            pipeline: PIPELINE.into(),
            status,
            trigger: RunTrigger {
                kind: TriggerKind::Release {
                    repository: REPOSITORY.into(),
                    release_id,
                    author: Some("release-bot".into()),
                },
                git_ref: tag.into(),
                sha: None,
                tag: Some(tag.into()),
            },
            created_at: now.clone(),
            finished_at: None,
            context,
            stages: stages
                .iter()
                .map(|(name, status)| stage(name, *status))
                .collect(),
        })
        .await
        .unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_resumes_its_runs_and_leaves_those_of_a_live_agent_alone() {
    let project = Project::new();
    project.tag("v1.0.0");
    let github = FakeGithub::start().await;
    github.add_repository(REPOSITORY);
    let store = TestStore::Sqlite(project.sqlite_url());
    let shared = store.open().await;
    // agent-1 died during the source stage of one run (its lease has not expired yet);
    // agent-2 is alive and working on another.
    let mine = interrupted_run(shared.as_ref(), 1, "v1.0.0").await;
    let theirs = interrupted_run(shared.as_ref(), 2, "v1.0.0").await;
    for (run, holder) in [(&mine, "agent-1"), (&theirs, "agent-2")] {
        let lease = shared
            .acquire_lease(&format!("run:{run}"), holder, Duration::from_secs(600))
            .await
            .unwrap();
        assert!(matches!(lease, LeaseOutcome::Granted { .. }));
    }

    let agent = start_agent(settings(&project, &github, "agent-1"), &store).await;
    wait_for(
        "agent-1 to resume its run to the approval gate",
        Duration::from_secs(20),
        || async {
            let record = shared.get_run(&mine).await.unwrap().unwrap();
            (record.status == RunStatus::Waiting).then_some(())
        },
    )
    .await;
    let record = shared.get_run(&mine).await.unwrap().unwrap();
    assert_eq!(
        record.stage("source").unwrap().status,
        StageStatus::Succeeded
    );
    // Several recovery rounds later, agent-2's run is untouched.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let other = shared.get_run(&theirs).await.unwrap().unwrap();
    assert_eq!(other.status, RunStatus::Running);
    assert_eq!(other.stage("source").unwrap().status, StageStatus::Running);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_gate_times_out_by_the_store_s_clock() {
    let project = Project::new();
    project.tag("v1.0.0");
    let github = FakeGithub::start().await;
    github.add_repository(REPOSITORY);
    // A month ahead of the machine: by the machine's clock this gate never times out.
    let time = ManualClock::starting_at(Utc::now() + chrono::Duration::days(30));
    let store: Arc<dyn Store> = Arc::new(
        open_sqlite(&project.root.join("state.db"))
            .unwrap()
            .with_clock(time.clock()),
    );
    let opened = store.clock().now();
    let stages = [
        ("source", StageStatus::Succeeded),
        ("approval", StageStatus::Waiting),
    ];
    let run = left_run(
        store.as_ref(),
        1,
        "v1.0.0",
        RunStatus::Waiting,
        &stages,
        opened,
    )
    .await;
    init_logs();
    let agent = Agent::start_with_store(
        settings(&project, &github, "agent-1"),
        credentials(),
        store.clone(),
    )
    .await
    .unwrap();
    // Recovery looks every 200 ms: before its deadline the undecided gate stays parked.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let record = store.get_run(&run).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Waiting, "{record:?}");

    time.advance(Duration::from_secs(3601));
    let record = wait_for("the gate to time out", Duration::from_secs(20), || async {
        let record = store.get_run(&run).await.unwrap().unwrap();
        (record.status == RunStatus::Rejected).then_some(record)
    })
    .await;
    let gate = record.stage("approval").unwrap();
    assert_eq!(
        gate.error.as_deref(),
        Some("approval timed out after 1h: nothing after the gate ran")
    );
    // Recorded on the store's clock too, an hour after the gate opened.
    let ended: DateTime<Utc> = gate.finished_at.as_deref().unwrap().parse().unwrap();
    assert!(
        ended >= opened + chrono::Duration::hours(1)
            && ended < opened + chrono::Duration::minutes(61),
        "{ended} for a gate opened at {opened}"
    );
    agent.shutdown().await;
}

/// A git server that accepts connections and never answers: a source stage that hangs.
async fn silent_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (format!("http://{address}/app.git"), task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_checkpoints_a_running_stage_and_queues_the_run_for_the_next_agent() {
    let project = Project::new();
    project.tag("v1.0.0");
    let (hanging_url, server) = silent_server().await;
    std::fs::write(
        project
            .root
            .join("pipelines")
            .join(format!("{PIPELINE}.yaml")),
        format!(
            "source:\n  repository: {hanging_url}\n  tags: [\"v*\"]\nstages:\n  - approval: {{}}\n"
        ),
    )
    .unwrap();
    let github = FakeGithub::start().await;
    github.add_repository(REPOSITORY);
    let store = TestStore::Sqlite(project.sqlite_url());
    let mut settings = settings(&project, &github, "agent-1");
    settings.shutdown_grace = Duration::from_millis(500);
    let agent = start_agent(settings, &store).await;
    let shared = store.open().await;
    let release = github.publish(
        REPOSITORY,
        crate::fake_github::ReleaseSpec::published("v1.0.0"),
    );
    let run = wait_for_status(
        shared.as_ref(),
        release,
        RunStatus::Running,
        Duration::from_secs(20),
    )
    .await;
    let started = std::time::Instant::now();
    agent.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "shutdown took {:?}",
        started.elapsed()
    );
    let record = shared.get_run(&run.id).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Queued, "{record:?}");
    let source = record.stage("source").unwrap();
    assert_eq!(source.status, StageStatus::Cancelled, "{source:?}");
    // The lease was given back: another agent may take the run at once.
    let lease = shared
        .acquire_lease(
            &format!("run:{}", run.id),
            "agent-2",
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    assert!(matches!(lease, LeaseOutcome::Granted { .. }), "{lease:?}");
    // Let the hanging fetch see its connection close.
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_beyond_the_concurrency_cap_wait_queued() {
    let project = Project::new();
    project.tag("v1.0.0");
    project.tag("v1.0.1");
    let (hanging_url, server) = silent_server().await;
    std::fs::write(
        project
            .root
            .join("pipelines")
            .join(format!("{PIPELINE}.yaml")),
        format!(
            "source:\n  repository: {hanging_url}\n  tags: [\"v*\"]\nstages:\n  - approval: {{}}\n"
        ),
    )
    .unwrap();
    let github = FakeGithub::start().await;
    github.add_repository(REPOSITORY);
    let store = TestStore::Sqlite(project.sqlite_url());
    let mut settings = settings(&project, &github, "agent-1");
    settings.concurrency = 1;
    settings.shutdown_grace = Duration::from_millis(200);
    let agent = start_agent(settings, &store).await;
    let first = github.publish(
        REPOSITORY,
        crate::fake_github::ReleaseSpec::published("v1.0.0"),
    );
    let second = github.publish(
        REPOSITORY,
        crate::fake_github::ReleaseSpec::published("v1.0.1"),
    );
    let store_handle = agent.store().clone();
    wait_for_status(
        store_handle.as_ref(),
        first,
        RunStatus::Running,
        Duration::from_secs(20),
    )
    .await;
    wait_for_status(
        store_handle.as_ref(),
        second,
        RunStatus::Queued,
        Duration::from_secs(20),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(agent.scheduler().job_counts(), (1, 1));
    let queued = runs_for_release(store_handle.as_ref(), second).await;
    assert_eq!(queued[0].status, RunStatus::Queued);
    agent.shutdown().await;
    server.abort();
}
