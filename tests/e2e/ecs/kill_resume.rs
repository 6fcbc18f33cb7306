//! A run SIGKILLed during its migration or its deploy resumes on the same task or the same
//! deployments, with the SQLite and the DynamoDB store.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::ecs::{
    Cluster, ROLES, api_project, app_repository, approve_waiting_release, parts, pipeline_runner,
    record_of,
};
use crate::support::process::KillOnDrop;
use crate::support::{stage, text};

/// Resumes a release in the background and SIGKILLs it (and waits for it) once `ready` holds
/// for its record: the record at that moment.
fn kill_when(
    project: &Path,
    run: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut child = KillOnDrop::new(
        pipeline_runner(project)
            .args(["resume", run])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let record = record_of(project, run);
        let timed_out = Instant::now() >= deadline;
        if ready(&record) || timed_out {
            let _ = child.kill();
            let _ = child.wait();
            assert!(!timed_out, "never reached the point to kill at: {record}");
            return record;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn a_run_killed_during_its_migration_resumes_on_the_same_task() {
    killed_during_migration(false).await;
}

#[tokio::test]
async fn a_run_killed_during_its_migration_resumes_on_the_same_task_with_the_dynamodb_store() {
    killed_during_migration(true).await;
}

async fn killed_during_migration(dynamodb: bool) {
    let Some(env) = parts("a_run_killed_during_its_migration").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    cluster.wait_until_running().await;
    let (_repo, url) = app_repository(env, "v2.0.0", "");
    let project = api_project(env, &cluster, &url, 0);
    if dynamodb {
        let store = envelope_tests::env::dynamodb_store(env, "e2e-ecs-kill").await;
        std::fs::write(project.path().join("store-url"), store).unwrap();
    }
    let pipeline_file = project.path().join("pipelines/api.yaml");
    // A migration slow enough to be caught running.
    std::fs::write(
        &pipeline_file,
        std::fs::read_to_string(&pipeline_file).unwrap().replace(
            r#"command: [/app/migrate, "0", "25"]"#,
            r#"command: [/bin/sh, -c, "sleep 4; /app/migrate 0 5"]"#,
        ),
    )
    .unwrap();
    let (record, resumed, run) = tokio::task::spawn_blocking({
        let project = project.path().to_path_buf();
        move || {
            let run = approve_waiting_release(&project);
            let killed = kill_when(&project, &run, |r| {
                stage(r, "migrate")["status"] == "running"
                    && stage(r, "migrate")["outputs"]["task_arn"].is_string()
            });
            let resumed = pipeline_runner(&project)
                .args(["resume", &run])
                .output()
                .unwrap();
            (killed, resumed, run)
        }
    })
    .await
    .unwrap();
    let task = stage(&record, "migrate")["outputs"]["task_arn"]
        .as_str()
        .unwrap()
        .to_string();
    let all = text(&resumed);
    assert_eq!(resumed.status.code(), Some(0), "{all}");
    let finished = record_of(project.path(), &run);
    assert_eq!(
        stage(&finished, "migrate")["outputs"]["task_arn"],
        task.as_str(),
        "one migration task in total"
    );
    assert_eq!(finished["status"], "succeeded");
}

#[tokio::test]
async fn a_run_killed_during_its_deploy_resumes_on_the_same_deployments() {
    killed_during_deploy(false).await;
}

#[tokio::test]
async fn a_run_killed_during_its_deploy_resumes_on_the_same_deployments_with_the_dynamodb_store() {
    killed_during_deploy(true).await;
}

async fn killed_during_deploy(dynamodb: bool) {
    let Some(env) = parts("a_run_killed_during_its_deploy").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    cluster.wait_until_running().await;
    let (_repo, url) = app_repository(env, "v2.0.0", "");
    let project = api_project(env, &cluster, &url, 0);
    if dynamodb {
        let store = envelope_tests::env::dynamodb_store(env, "e2e-ecs-kill").await;
        std::fs::write(project.path().join("store-url"), store).unwrap();
    }
    let (record, resumed, run) = tokio::task::spawn_blocking({
        let project = project.path().to_path_buf();
        move || {
            let run = approve_waiting_release(&project);
            let killed = kill_when(&project, &run, |r| {
                stage(r, "deploy")["outputs"]["deployments"]
                    .as_object()
                    .is_some_and(|d| d.len() == 4)
            });
            let resumed = pipeline_runner(&project)
                .args(["resume", &run])
                .output()
                .unwrap();
            (killed, resumed, run)
        }
    })
    .await
    .unwrap();
    let all = text(&resumed);
    assert_eq!(resumed.status.code(), Some(0), "{all}");
    let finished = record_of(project.path(), &run);
    assert_eq!(
        stage(&finished, "deploy")["outputs"]["deployments"],
        stage(&record, "deploy")["outputs"]["deployments"],
        "one deployment per service: the resumed run waited on the recorded ones"
    );
    let image = stage(&finished, "push")["outputs"]["image"]
        .as_str()
        .unwrap()
        .to_string();
    for role in ROLES {
        cluster
            .settled_images(&format!("envelope-prod-{role}"), role, &image)
            .await;
    }
}
