//! Fault drill with a real process: the AWS endpoint goes away in the middle of a deploy and
//! comes back with the same state.
//!
//! The shared emulator is never touched: the drill starts a ministack of its own on a free
//! port, with `PERSIST_STATE=1` and a state directory in a temporary directory, and builds the
//! four-service cluster there. The release runs to its gate, is approved, and is resumed with
//! its ECS calls going through a [`FaultProxy`] that, once ministack has answered the second
//! `UpdateService`, sends ministack SIGTERM (ministack writes its state to the state directory
//! and stops; it keeps nothing across a SIGKILL) and answers 502 in its place. At that moment
//! two services run the new revision and two the old one: a mixed release.
//!
//! The run must stop as an environment error (exit 6) once its retries are spent, without
//! touching the services further. After ministack is started again on the same state
//! directory, `envelope-runner retry` must finish the deploy on the revisions the run already
//! registered (one per service, none repeated) so that every service ends on the new image.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use crate::reattach::assert_one_revision_per_stage;
use crate::support::ecs::{
    Cluster, ROLES, api_project, app_repository, parts, pipeline_runner, record_of,
};
use crate::support::fault_proxy::FaultProxy;
use crate::support::private_ministack::PrivateMinistack;
use crate::support::{run_id, stage, text};

/// Each service's PRIMARY deployment id.
async fn primary_deployments(cluster: &Cluster) -> BTreeMap<String, String> {
    let out = cluster
        .ecs
        .describe_services()
        .cluster(&cluster.name)
        .set_services(Some(cluster.services.clone()))
        .send()
        .await
        .unwrap();
    out.services()
        .iter()
        .map(|service| {
            let primary = service
                .deployments()
                .iter()
                .find(|d| d.status() == Some("PRIMARY"))
                .and_then(|d| d.id())
                .unwrap_or_default();
            (
                service.service_name().unwrap_or_default().to_owned(),
                primary.to_owned(),
            )
        })
        .collect()
}

/// The runner on `project`, with every AWS call going to `endpoint`.
fn runner_at(project: &Path, endpoint: &str) -> Command {
    let mut command = pipeline_runner(project);
    command.env("AWS_ENDPOINT_URL", endpoint);
    command
}

fn expect(output: &Output, code: i32) -> String {
    let all = text(output);
    assert_eq!(output.status.code(), Some(code), "{all}");
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_endpoint_gone_mid_deploy_leaves_no_service_on_a_mixed_release() {
    let Some(env) = parts("AWS endpoint gone mid-deploy").await else {
        return;
    };
    let started = Instant::now();
    let mut ministack = PrivateMinistack::start(env).await;
    eprintln!("private ministack up in {:?}", started.elapsed());
    let endpoint = ministack.url();
    let cluster = Cluster::create_at(env, &endpoint, true).await;
    let before = cluster.task_definitions().await;
    let (_repo, url) = app_repository(env, "v2.0.0", "");
    let project = api_project(env, &cluster, &url, 0);
    let proxy = FaultProxy::start(&endpoint).await;
    proxy.arm_signal("UpdateService", 2, "TERM");
    proxy.set_pid(ministack.pid());

    let (run, failed, outage_started) = tokio::task::spawn_blocking({
        let project = project.path().to_path_buf();
        let endpoint = endpoint.clone();
        let proxy_url = proxy.url.clone();
        move || {
            let paused = runner_at(&project, &endpoint)
                .args(["run", "api", "--ref", "v2.0.0", "--until", "approval"])
                .output()
                .unwrap();
            expect(&paused, 4);
            let run = run_id(&paused);
            expect(
                &runner_at(&project, &endpoint)
                    .args(["approve", &run])
                    .output()
                    .unwrap(),
                0,
            );
            let outage_started = Instant::now();
            let failed = runner_at(&project, &endpoint)
                .env("AWS_ENDPOINT_URL_ECS", &proxy_url)
                .args(["resume", &run])
                .output()
                .unwrap();
            (run, failed, outage_started)
        }
    })
    .await
    .unwrap();
    assert!(
        proxy.fired(),
        "ministack was never stopped: {}",
        text(&failed)
    );
    eprintln!(
        "the run ended {:?} after the resume began",
        outage_started.elapsed()
    );
    let all = expect(&failed, 6);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("error: stage `deploy` failed"),
        "the deploy stage is named: {all}"
    );
    assert!(
        stderr.contains("nothing was rolled back: the release is out on envelope-prod-api and not yet on envelope-prod-worker, envelope-prod-scheduler and envelope-prod-reverb"),
        "the error says where the release stands: {all}"
    );
    assert!(
        !stderr.contains("rolling back"),
        "no rollback is tried while AWS gives no answer: {all}"
    );
    let stopped = ministack.wait_stopped();
    assert!(stopped.success(), "ministack stopped cleanly: {stopped}");
    assert!(
        ministack
            .saved_state()
            .iter()
            .any(|name| name.starts_with("ecs")),
        "ministack saved its ECS state: {:?}",
        ministack.saved_state()
    );
    let record = record_of(project.path(), &run);
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(stage(&record, "deploy")["status"], "failed", "{record}");
    assert_eq!(stage(&record, "migrate")["status"], "succeeded", "{record}");

    // ministack comes back with what it saved: the release is half out.
    ministack.launch().await;
    let mixed = cluster.task_definitions().await;
    let moved: Vec<&String> = cluster
        .services
        .iter()
        .filter(|service| mixed[*service] != before[*service])
        .collect();
    assert_eq!(
        moved.len(),
        2,
        "two services were updated before the outage: before {before:?}, now {mixed:?}"
    );
    let started_before = primary_deployments(&cluster).await;

    let finished = tokio::task::spawn_blocking({
        let project = project.path().to_path_buf();
        let run = run.clone();
        move || {
            // A failed run is not resumed but retried.
            let resumed = runner_at(&project, &endpoint)
                .args(["resume", &run])
                .output()
                .unwrap();
            let hint = format!("`envelope-runner retry {run}` runs the failed stage again");
            let all = expect(&resumed, 1);
            assert!(all.contains(&hint), "{all}");
            runner_at(&project, &endpoint)
                .args(["retry", &run])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    expect(&finished, 0);

    let record = record_of(project.path(), &run);
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_one_revision_per_stage(&cluster, &run).await;
    // The deployments ECS started before the outage are the ones the run waited on, the
    // second one although the runner never heard UpdateService's answer.
    for service in moved {
        assert_eq!(
            stage(&record, "deploy")["outputs"]["deployments"][service],
            started_before[service].as_str(),
            "{service} re-attached to its deployment: {record}"
        );
    }
    let deployed = &stage(&record, "deploy")["outputs"]["task_definitions"];
    let now = cluster.task_definitions().await;
    for service in &cluster.services {
        assert_eq!(deployed[service], now[service].as_str(), "{service}");
        assert_ne!(
            now[service], before[service],
            "{service} is on the new release"
        );
    }
    let image = stage(&record, "push")["outputs"]["image"]
        .as_str()
        .unwrap()
        .to_owned();
    for role in ROLES {
        cluster
            .settled_images(&format!("envelope-prod-{role}"), role, &image)
            .await;
    }
    eprintln!("drill done in {:?}", started.elapsed());
}
