//! `diff` through the binary against ministack: after a run built and pushed the app, it
//! shows each service's image digest change (and the migration's task definition), an
//! unchanged service says so, a newer unused revision of a family (more CPU, one more
//! variable) is a note, nothing is registered or updated; the approval gate that run
//! opened kept the same diff in its record; a service ECS cannot describe for the image is
//! "diff unavailable" with exit code 6.

use serde_json::Value;

use crate::support::ecs::{
    Cluster, ROLES, api_project, app_repository, images, parts, pipeline_runner, record_of,
};
use crate::support::{run_id, stage, text};

#[tokio::test]
async fn diff_shows_the_digest_each_service_would_change_to_and_registers_nothing() {
    let Some(env) = parts("diff_shows_the_digest").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    let before = cluster.task_definitions().await;
    // Someone registered a revision of the worker's family with more CPU and a new variable
    // and never deployed it: the deploy builds on what the service runs, and diff says so.
    let newer = register_unused_revision(&cluster, &before["envelope-prod-worker"]).await;
    let (_repo, url) = app_repository(env, "v2.0.0", "");
    let project = api_project(env, &cluster, &url, 0);
    let path = project.path().to_path_buf();
    let v1 = images(env).v1.clone();
    let (run, outputs) = tokio::task::spawn_blocking(move || {
        let paused = pipeline_runner(&path)
            .args(["run", "api", "--ref", "v2.0.0", "--until", "approval"])
            .output()
            .unwrap();
        assert_eq!(paused.status.code(), Some(4), "{}", text(&paused));
        let run = run_id(&paused);
        let diff = |args: &[&str]| pipeline_runner(&path).arg("diff").args(args).output().unwrap();
        let outputs = (
            diff(&["api"]),
            diff(&["api", &run, "--exit-code", "--output", "json"]),
            diff(&["api", "--image", &v1, "--exit-code"]),
            diff(&["api", "--image", "127.0.0.1:5000/elsewhere/other@sha256:0000000000000000000000000000000000000000000000000000000000000000"]),
        );
        (run, outputs)
    })
    .await
    .unwrap();
    let (newest, json, same, other) = outputs;
    let record = record_of(project.path(), &run);
    let pushed = stage(&record, "push")["outputs"]["image"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(pushed, images(env).v1);

    // Default: the newest run that pushed; every service's image v1 → the pushed digest.
    assert_eq!(newest.status.code(), Some(0), "{}", text(&newest));
    let shown = String::from_utf8_lossy(&newest.stdout);
    assert!(
        shown.contains(&format!("a deploy of run {run}'s images")),
        "{shown}"
    );
    for role in ROLES {
        assert!(
            shown.contains(&format!("deploy `deploy`, service envelope-prod-{role} (")),
            "{shown}"
        );
        assert!(
            shown.contains(&format!(
                "  container {role}: image {v1} → {pushed}",
                v1 = images(env).v1
            )),
            "{shown}"
        );
    }
    assert!(
        shown.contains("migrate `migrate`, service envelope-prod-api ("),
        "the migration's task definition is compared too:\n{shown}"
    );
    assert!(
        !shown.contains("container log-router"),
        "the sidecar keeps its image:\n{shown}"
    );
    assert!(shown.contains("checks after the deploy: none"), "{shown}");
    let note = format!(
        "  not deployed: {}, the family's newest revision, differs from the revision the \
         service runs, which the deploy builds on:\n    cpu: 256 → 512\n    container worker: \
         environment: APP_ENV=e2e → APP_ENV=e2e QUEUE=redis\n",
        newer.rsplit('/').next().unwrap()
    );
    assert!(shown.contains(&note), "{shown}");
    assert_eq!(shown.matches("not deployed:").count(), 1, "{shown}");

    // JSON, with --exit-code: 1 because services would change.
    assert_eq!(json.status.code(), Some(1), "{}", text(&json));
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["run"], run.as_str());
    let services = report["services"].as_array().unwrap();
    assert_eq!(services.len(), 5, "1 migration + 4 services: {report}");
    for service in services {
        assert_eq!(
            service["diff"]["images"][0]["after"],
            pushed.as_str(),
            "{report}"
        );
        assert_eq!(
            service["current"],
            before[service["service"].as_str().unwrap()].as_str(),
            "{report}"
        );
    }

    // The image the services already run: no change (the worker's unused revision is a note,
    // not a change), exit 0 even with --exit-code.
    assert_eq!(same.status.code(), Some(0), "{}", text(&same));
    let shown_same = String::from_utf8_lossy(&same.stdout);
    assert_eq!(shown_same.matches("no change").count(), 5, "{shown_same}");
    assert!(
        shown_same.contains("No service would change."),
        "{shown_same}"
    );

    // An image no container uses: each service says why its diff is unavailable; exit 6.
    assert_eq!(other.status.code(), Some(6), "{}", text(&other));
    let shown_other = String::from_utf8_lossy(&other.stdout);
    assert!(
        shown_other.contains("service envelope-prod-worker (",)
            && shown_other.contains(
                "diff unavailable: task definition of service `envelope-prod-worker`: no container"
            ),
        "{shown_other}"
    );

    // Describe calls only: no service moved.
    assert_eq!(
        cluster.task_definitions().await,
        before,
        "diff changed nothing"
    );

    // The gate the run opened kept the same diff in its record.
    let gate = &stage(&record, "approval")["outputs"];
    let changes = gate["changes"].to_string();
    assert!(
        changes.contains(&format!("image {} → {pushed}", images(env).v1)),
        "{gate}"
    );
    assert!(changes.contains("migrate `migrate`"), "{gate}");
}

/// Registers (and never deploys) a revision of `task_definition`'s family with cpu 512 and one
/// more variable, `QUEUE=redis`: its ARN.
async fn register_unused_revision(cluster: &Cluster, task_definition: &str) -> String {
    let mut td = cluster.task_definition(task_definition).await;
    td.cpu = Some("512".to_owned());
    td.container_definitions.as_mut().unwrap()[0]
        .environment
        .get_or_insert_with(Vec::new)
        .push(
            aws_sdk_ecs::types::KeyValuePair::builder()
                .name("QUEUE")
                .value("redis")
                .build(),
        );
    cluster.register(td).await
}
