//! A run killed between an AWS answer and its checkpoint re-attaches on `resume` instead of
//! repeating the change: killed (SIGKILL, by a proxy that lets the change through and then
//! kills the runner before it hears the answer) after the migration's RegisterTaskDefinition,
//! after RunTask, after the deploy's RegisterTaskDefinition and after UpdateService, and a
//! `rollback` killed after its first registration. Judged by ECS itself: the revisions tagged
//! with the run (`envelope:run`, `envelope:stage`) and the tasks started by it.

use std::collections::BTreeMap;
use std::path::Path;

use crate::support::ecs::{
    Cluster, ROLES, api_project, app_repository, approve_waiting_release, parts, pipeline_runner,
    record_of, release,
};
use crate::support::fault_proxy::FaultProxy;
use crate::support::stage;
use aws_sdk_ecs::types::{DesiredStatus, TaskDefinitionField};

/// Resumes (or runs `args`) through `proxy`, armed to kill after the `nth` `operation`; the
/// process must die by the kill.
fn killed_after(project: &Path, proxy: &FaultProxy, args: &[&str], operation: &str, nth: usize) {
    proxy.arm(operation, nth);
    let mut child = pipeline_runner(project)
        .args(args)
        .env("AWS_ENDPOINT_URL_ECS", &proxy.url)
        .env("ENVELOPE_LEASE_TTL", "5")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    proxy.set_pid(child.id());
    let status = child.wait().unwrap();
    assert!(
        proxy.fired(),
        "`{}` ended ({status}) before its {nth}. {operation}",
        args.join(" ")
    );
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "killed by the proxy"
    );
}

/// Revisions of each service's family tagged with `run`, counted by stage.
pub(crate) async fn revisions_of(
    cluster: &Cluster,
    run: &str,
) -> BTreeMap<String, BTreeMap<String, usize>> {
    let mut counts = BTreeMap::new();
    for role in ROLES {
        let family = format!("{}-{role}", cluster.name);
        let arns = cluster
            .ecs
            .list_task_definitions()
            .family_prefix(&family)
            .send()
            .await
            .unwrap()
            .task_definition_arns
            .unwrap_or_default();
        let mut by_stage = BTreeMap::new();
        for arn in arns {
            if !arn.ends_with(&format!("/{family}:{}", arn.rsplit(':').next().unwrap())) {
                continue;
            }
            let tags = cluster
                .ecs
                .describe_task_definition()
                .task_definition(&arn)
                .include(TaskDefinitionField::Tags)
                .send()
                .await
                .unwrap()
                .tags
                .unwrap_or_default();
            let tag = |key: &str| {
                tags.iter()
                    .find(|t| t.key() == Some(key))
                    .and_then(|t| t.value())
                    .map(str::to_owned)
            };
            if tag("envelope:run").as_deref() == Some(run) {
                *by_stage
                    .entry(tag("envelope:stage").unwrap_or_default())
                    .or_insert(0) += 1;
            }
        }
        counts.insert(role.to_owned(), by_stage);
    }
    counts
}

/// A release run of `api_project` registered one revision per stage for each service (the
/// api's migration one more), none repeated.
pub(crate) async fn assert_one_revision_per_stage(cluster: &Cluster, run: &str) {
    let revisions = revisions_of(cluster, run).await;
    for role in ROLES {
        let expected: BTreeMap<String, usize> = if role == "api" {
            [("deploy".to_owned(), 1), ("migrate".to_owned(), 1)].into()
        } else {
            [("deploy".to_owned(), 1)].into()
        };
        assert_eq!(
            revisions[role], expected,
            "{role}: one new revision per stage, none repeated: {revisions:?}"
        );
    }
}

async fn migration_tasks(cluster: &Cluster, run: &str) -> Vec<String> {
    let mut tasks = Vec::new();
    for status in [DesiredStatus::Running, DesiredStatus::Stopped] {
        tasks.extend(
            cluster
                .ecs
                .list_tasks()
                .cluster(&cluster.name)
                .started_by(format!("envelope-{run}"))
                .desired_status(status)
                .send()
                .await
                .unwrap()
                .task_arns
                .unwrap_or_default(),
        );
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_after_each_aws_answer_resumes_without_repeating_the_change() {
    let Some(env) = parts("a_run_killed_after_each_aws_answer").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    let (_repo, url) = app_repository(env, "v2.0.0", "");
    let project = api_project(env, &cluster, &url, 0);
    let proxy = FaultProxy::start(env.endpoint()).await;
    let project_dir = project.path().to_path_buf();
    let run = tokio::task::spawn_blocking({
        let project = project_dir.clone();
        move || approve_waiting_release(&project)
    })
    .await
    .unwrap();
    // The points, in the order one run reaches them: the migration's revision, its task, the
    // deploy's first revision (the api's), the first UpdateService.
    for (operation, killed_when) in [
        (
            "RegisterTaskDefinition",
            "the migration's revision was registered",
        ),
        ("RunTask", "the migration task was started"),
        (
            "RegisterTaskDefinition",
            "the api's deploy revision was registered",
        ),
        ("UpdateService", "the first service was updated"),
    ] {
        eprintln!("killing after {operation}: {killed_when}");
        let project = project_dir.clone();
        let run = run.clone();
        let proxy = &proxy;
        tokio::task::block_in_place(|| {
            killed_after(&project, proxy, &["resume", &run], operation, 1)
        });
    }
    let resumed = tokio::task::spawn_blocking({
        let project = project_dir.clone();
        let run = run.clone();
        move || {
            pipeline_runner(&project)
                .args(["resume", &run])
                .env("ENVELOPE_LEASE_TTL", "5")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let all = crate::support::text(&resumed);
    assert_eq!(resumed.status.code(), Some(0), "{all}");

    assert_one_revision_per_stage(&cluster, &run).await;
    let tasks = migration_tasks(&cluster, &run).await;
    assert_eq!(tasks.len(), 1, "one migration task: {tasks:?}");
    let record = record_of(&project_dir, &run);
    assert_eq!(record["status"], "succeeded", "{record}");
    let deployed = &stage(&record, "deploy")["outputs"]["task_definitions"];
    let now = cluster.task_definitions().await;
    for service in &cluster.services {
        assert_eq!(deployed[service], now[service].as_str(), "{service}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_killed_after_its_first_registration_resumes_with_one_revision_per_service() {
    let Some(env) = parts("a_rollback_killed_after_its_first_registration").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    let (_repo, url) = app_repository(env, "v2.0.0", "");
    let project = api_project(env, &cluster, &url, 0);
    let project_dir = project.path().to_path_buf();
    let (first, output) = tokio::task::spawn_blocking({
        let project = project_dir.clone();
        move || release(&project)
    })
    .await
    .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        crate::support::text(&output)
    );
    let proxy = FaultProxy::start(env.endpoint()).await;
    tokio::task::block_in_place(|| {
        killed_after(
            &project_dir,
            &proxy,
            &["rollback", "api", "--to", &first],
            "RegisterTaskDefinition",
            1,
        )
    });
    let history = pipeline_runner(&project_dir)
        .args(["history", "api", "--output", "json"])
        .output()
        .unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    let rollback = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .find(|id| *id != first)
        .expect("the rollback run is recorded");
    let resumed = tokio::task::spawn_blocking({
        let project = project_dir.clone();
        let rollback = rollback.clone();
        move || {
            pipeline_runner(&project)
                .args(["resume", &rollback])
                .env("ENVELOPE_LEASE_TTL", "5")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let all = crate::support::text(&resumed);
    assert_eq!(resumed.status.code(), Some(0), "{all}");
    let revisions = revisions_of(&cluster, &rollback).await;
    for role in ROLES {
        assert_eq!(
            revisions[role],
            BTreeMap::from([("deploy".to_owned(), 1)]),
            "{role}: one new revision for the rollback: {revisions:?}"
        );
    }
}
