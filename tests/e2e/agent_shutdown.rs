//! An agent stopped (SIGTERM) while a release's run is past its gate (its rollout done, its
//! `verify:` check failing until then) and a newer release's run of the same pipeline waits at
//! the gate: the stopped run goes back to `queued` and keeps the pipeline's deploy lock, so the
//! newer run cannot deploy over it; the next agent resumes it first, it finishes on the
//! deployment it made, and only then does the newer run deploy.

use std::time::{Duration, Instant};

use envelope_runner::run::{RunRecord, RunStatus, StageStatus, TriggerKind};
use envelope_runner::store::{Store, open_sqlite};

use crate::support::agents::{
    AgentConfig, AgentProcess, FakeGithubProcess, app_repository, drill_pipeline,
};
use crate::support::ecs::{Cluster, parts};
use crate::support::health_endpoint::HealthEndpoint;

const TAGS: [&str; 2] = ["v1.0.1", "v1.0.2"];
const LEASE_TTL_SECONDS: u64 = 10;

/// The runs in the store, oldest release first.
async fn runs(store: &dyn Store) -> Vec<RunRecord> {
    let mut records = Vec::new();
    for summary in store.list_runs(None, 10, None).await.unwrap() {
        records.push(store.get_run(&summary.id).await.unwrap().unwrap());
    }
    records.sort_by_key(|record| match &record.trigger.kind {
        TriggerKind::Release { release_id, .. } => *release_id,
        _ => 0,
    });
    records
}

/// Polls `store` until `ready` holds for its runs (every 250 ms, at most `limit`).
async fn until(
    store: &dyn Store,
    limit: Duration,
    what: &str,
    ready: impl Fn(&[RunRecord]) -> bool,
) -> Vec<RunRecord> {
    let deadline = Instant::now() + limit;
    loop {
        let records = runs(store).await;
        if ready(&records) {
            return records;
        }
        assert!(Instant::now() < deadline, "{what}: {records:#?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stopped_past_its_gate_keeps_the_deploy_lock_until_the_next_agent_finishes_it() {
    let Some(env) = parts("agent shutdown past the gate").await else {
        return;
    };
    let cluster = Cluster::create_roles(env, env.endpoint(), "drill", &["d0"]).await;
    let (_app, url) = app_repository(env, &TAGS);
    let health = HealthEndpoint::start(503, "Application up").await;
    let project = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(project.path().join("pipelines")).unwrap();
    std::fs::write(
        project.path().join("pipelines/drill-0.yaml"),
        drill_pipeline(env, &url, &cluster.name, 0, Some(&health.url)),
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state.db");
    let store_url = format!("sqlite:{}", state.display());
    let github = FakeGithubProcess::start(1).await;
    let config = AgentConfig {
        dir: work.path(),
        project: project.path(),
        store: &store_url,
        github: &github.url,
        lease_ttl_seconds: LEASE_TTL_SECONDS,
    };
    let watched = [("acme/app-000".to_owned(), "drill-0".to_owned())];
    let start = |id: &str| {
        AgentProcess::start(
            env,
            id,
            &config.write(id, &watched),
            work.path().join(format!("{id}.log")),
            &[("GITHUB_TOKEN", "ghp_drill_token_for_the_fake")],
        )
    };
    let mut first = start("agent-1");
    while github.requests().await.unwrap_or(0) < 2 {
        assert!(
            first.alive(),
            "{}",
            std::fs::read_to_string(&first.log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Release times on GitHub are whole seconds: be a second past the agent's start.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let store = open_sqlite(&state).unwrap();

    // v1.0.1 deploys and its check fails; v1.0.2 builds and waits at the gate.
    github.publish("acme/app-000", TAGS[0]).await;
    until(
        &store,
        Duration::from_secs(90),
        "v1.0.1 never reached its check",
        |runs| {
            runs.first()
                .and_then(|run| run.stage("deploy"))
                .is_some_and(|deploy| {
                    deploy.status == StageStatus::Running && !deploy.outputs.deployments.is_empty()
                })
                && health.hits() > 0
        },
    )
    .await;
    github.publish("acme/app-000", TAGS[1]).await;
    let key = "pipeline:drill-0:gate";
    let waiting = until(
        &store,
        Duration::from_secs(60),
        "v1.0.2 never waited at the gate",
        |runs| {
            runs.len() == 2
                && first.lines().iter().any(|line| {
                    line.run.as_deref() == Some(runs[1].id.0.as_str())
                        && line
                            .message
                            .contains("is past the approval gate; waiting for it to finish")
                })
        },
    )
    .await;
    let (older, newer) = (waiting[0].id.clone(), waiting[1].id.clone());
    let deployment = waiting[0]
        .stage("deploy")
        .unwrap()
        .outputs
        .deployments
        .clone();

    let status = first.terminate();
    assert!(status.success(), "agent-1 exited {status}");
    let stopped = runs(&store).await;
    assert_eq!(
        (stopped[0].status, stopped[1].status),
        (RunStatus::Queued, RunStatus::Queued),
        "both runs are queued for the next agent"
    );
    let lock = store
        .lease(key)
        .await
        .unwrap()
        .expect("the deploy lock is kept");
    assert_eq!(
        lock.holder, older.0,
        "the stopped run keeps the pipeline's lock"
    );

    // The next agent: the older run first, on the deployment it made; then the newer one.
    health.answer(200);
    let second = start("agent-2");
    let done = until(
        &store,
        Duration::from_secs(120),
        "the runs did not finish",
        |runs| {
            runs.iter().all(|run| {
                !matches!(
                    run.status,
                    RunStatus::Queued | RunStatus::Running | RunStatus::Waiting
                )
            })
        },
    )
    .await;
    assert_eq!(
        (done[0].status, done[1].status),
        (RunStatus::Succeeded, RunStatus::Succeeded),
        "{done:#?}"
    );
    assert_eq!(
        done[0].stage("deploy").unwrap().outputs.deployments,
        deployment,
        "the older run finished on the deployment it made before the stop"
    );
    let older_end = done[0].finished_at.clone().unwrap();
    let newer_deploy = done[1].stage("deploy").unwrap().started_at.clone().unwrap();
    assert!(
        newer_deploy >= older_end,
        "run {newer} deployed at {newer_deploy}, before run {older} finished at {older_end}"
    );
    assert!(
        second
            .lines()
            .iter()
            .any(|line| line.message.starts_with(&format!("resuming run {older}"))),
        "agent-2 resumed the older run"
    );
}
