//! Whole releases through the binary: run to the gate, approve from a second process, resume;
//! the migration and the deploy of four services, a failing migration, a crashing worker
//! rolled back (and told to SNS and Slack), and `rollback` to an earlier run.

use crate::support::ecs::{
    Cluster, ROLES, api_project, api_project_notifying, api_project_telling, app_repository,
    images, parts, pipeline_runner, record_of, release,
};
use crate::support::sns::Subscriber;
use crate::support::webhook::{Answer, Receiver, capture_one_post};
use crate::support::{run_id, stage, text};

#[tokio::test]
async fn a_release_goes_through_approval_migration_and_a_deploy_of_four_services() {
    let Some(env) = parts("a_release_goes_through").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    cluster.wait_until_running().await;
    let before = cluster.task_definitions().await;
    let (_repo, url) = app_repository(env, "v2.0.0", "");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/approvals", listener.local_addr().unwrap());
    let notice = tokio::spawn(capture_one_post(listener));
    let project = api_project_notifying(env, &cluster, &url, 0, Some(&hook));
    let (run, resumed) = tokio::task::spawn_blocking({
        let project = project.path().to_path_buf();
        move || release(&project)
    })
    .await
    .unwrap();
    let all = text(&resumed);
    assert_eq!(resumed.status.code(), Some(0), "{all}");
    assert!(
        all.contains("Migrating: 2026_01_01_000025_step_25"),
        "the migration's log lines are shown:\n{all}"
    );
    // The approver saw each service's task definition change, image before → after.
    let notice: serde_json::Value = serde_json::from_str(&notice.await.unwrap()).unwrap();
    let changes = notice["services"].as_array().unwrap();
    assert_eq!(changes.len(), 4, "{notice}");
    for change in changes {
        let text = change["changes"].to_string();
        assert!(
            text.contains(&images(env).v1) && text.contains('→'),
            "{notice}"
        );
    }
    // …and the whole diff, the migration's task definition included.
    let diff = notice["diff"].to_string();
    assert!(
        diff.contains("migrate `migrate`, service envelope-prod-api ("),
        "{notice}"
    );
    let record = record_of(project.path(), &run);
    assert_eq!(record["status"], "succeeded");
    let image = stage(&record, "push")["outputs"]["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(stage(&record, "migrate")["outputs"]["exit_code"], 0);
    let deploy = &stage(&record, "deploy")["outputs"];
    let after = cluster.task_definitions().await;
    for role in ROLES {
        let service = format!("envelope-prod-{role}");
        assert_ne!(
            after[&service], before[&service],
            "{service} moved to a new revision"
        );
        assert_eq!(
            deploy["previous_task_definitions"][&service],
            before[&service].as_str()
        );
        assert!(deploy["deployments"][&service].is_string(), "{deploy}");
        cluster.settled_images(&service, role, &image).await;
    }
}

#[tokio::test]
async fn a_migration_that_exits_1_fails_the_run_and_nothing_is_deployed() {
    let Some(env) = parts("a_migration_that_exits_1_fails_the_run").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    cluster.wait_until_running().await;
    let before = cluster.task_definitions().await;
    let (_repo, url) = app_repository(env, "v2.0.0", "");
    let project = api_project(env, &cluster, &url, 1);
    let (run, resumed) = tokio::task::spawn_blocking({
        let project = project.path().to_path_buf();
        move || release(&project)
    })
    .await
    .unwrap();
    let all = text(&resumed);
    assert_eq!(resumed.status.code(), Some(1), "{all}");
    assert!(
        all.contains("migration finished with exit code 1"),
        "the last log lines are in the error:\n{all}"
    );
    let record = record_of(project.path(), &run);
    assert_eq!(stage(&record, "migrate")["status"], "failed");
    assert_eq!(stage(&record, "deploy")["status"], "skipped");
    assert_eq!(
        cluster.task_definitions().await,
        before,
        "no service was touched"
    );
}

#[tokio::test]
async fn a_release_whose_worker_crashes_fails_and_every_service_is_back_on_its_previous_revision() {
    let Some(env) = parts("a_release_whose_worker_crashes_fails").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    cluster.wait_until_running().await;
    let before = cluster.task_definitions().await;
    let (_repo, url) = app_repository(env, "v2.0.0", "worker\n");
    let project = api_project(env, &cluster, &url, 0);
    let (run, resumed) = tokio::task::spawn_blocking({
        let project = project.path().to_path_buf();
        move || release(&project)
    })
    .await
    .unwrap();
    let all = text(&resumed);
    assert_eq!(resumed.status.code(), Some(1), "{all}");
    assert!(
        all.contains("envelope-prod-worker"),
        "the failing service is named:\n{all}"
    );
    assert!(
        all.contains("rolled back") || all.contains("rolling back"),
        "the output says the release was rolled back:\n{all}"
    );
    let record = record_of(project.path(), &run);
    assert_eq!(record["status"], "failed");
    assert_eq!(stage(&record, "deploy")["status"], "failed");
    let after = cluster.task_definitions().await;
    assert_eq!(
        after, before,
        "every service of the release is back on its previous revision"
    );
}

#[tokio::test]
async fn a_rolled_back_release_is_told_to_an_sns_topic_and_a_slack_webhook() {
    let Some(env) = parts("a_rolled_back_release_is_told").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    cluster.wait_until_running().await;
    let config = env.sdk_config(env.endpoint()).await;
    let subscriber = Subscriber::subscribe(&config, &envelope_tests::env::unique("deploys")).await;
    let slack = Receiver::start(Answer::Status(200)).await;
    let secret_path = "/services/T0001/B0001/slack-token-canary";
    let (_repo, url) = app_repository(env, "v2.0.0", "worker\n");
    let project = api_project_telling(
        env,
        &cluster,
        &url,
        &format!(
            "notify:\n  sns: {}\n  slack: {}{secret_path}\n",
            subscriber.topic, slack.origin
        ),
    );
    let (run, resumed) = tokio::task::spawn_blocking({
        let project = project.path().to_path_buf();
        move || release(&project)
    })
    .await
    .unwrap();
    let all = text(&resumed);
    assert_eq!(
        resumed.status.code(),
        Some(1),
        "the outcome is the run's:\n{all}"
    );
    assert!(!all.contains("slack-token-canary"), "{all}");
    assert!(
        all.contains("notified how the run ended (rollback)"),
        "{all}"
    );
    let record = record_of(project.path(), &run);
    let rolled_back = stage(&record, "deploy")["outputs"]["rolled_back"].clone();
    assert!(
        rolled_back
            .as_object()
            .is_some_and(|services| !services.is_empty()),
        "the record names what was put back: {record}"
    );

    let messages = subscriber.messages_containing(&run).await;
    assert_eq!(messages.len(), 1, "told once: {messages:?}");
    let message = &messages[0];
    for expected in [
        "Subject: envelope-runner: api v2.0.0 failed at `deploy` and was rolled back",
        "(rollback, ",
        "Release: v2.0.0",
        "Rolled back: envelope-prod-",
        "Image: ",
        "envelope-prod-worker",
    ] {
        assert!(
            message.contains(expected),
            "missing {expected:?} in\n{message}"
        );
    }

    let posts = slack.bodies(secret_path);
    assert_eq!(posts.len(), 1, "{:?}", slack.received());
    let post: serde_json::Value = serde_json::from_str(&posts[0]).unwrap();
    assert_eq!(
        post["text"],
        "api v2.0.0 failed at `deploy` and was rolled back"
    );
    let blocks = post["blocks"].to_string();
    for expected in [
        "header",
        "*Rolled back to the revision",
        "`envelope-prod-",
        &run,
    ] {
        assert!(blocks.contains(expected), "missing {expected:?} in {post}");
    }
}

#[tokio::test]
async fn rollback_to_an_earlier_run_puts_its_digest_back_on_all_four_services() {
    let Some(env) = parts("rollback_to_an_earlier_run").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    cluster.wait_until_running().await;
    let (_first_repo, first_url) = app_repository(env, "v2.0.0", "");
    let project = api_project(env, &cluster, &first_url, 0);
    let pipeline_file = project.path().join("pipelines/api.yaml");
    let (first, output) = tokio::task::spawn_blocking({
        let project = project.path().to_path_buf();
        move || release(&project)
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let first_image = stage(&record_of(project.path(), &first), "push")["outputs"]["image"]
        .as_str()
        .unwrap()
        .to_string();

    // A second release from other source code: a different digest.
    let (_second_repo, second_url) = app_repository(env, "v2.0.0", "");
    std::fs::write(
        &pipeline_file,
        std::fs::read_to_string(&pipeline_file)
            .unwrap()
            .replace(&first_url, &second_url)
            .replace("\"25\"", "\"3\""),
    )
    .unwrap();
    let (second, output) = tokio::task::spawn_blocking({
        let project = project.path().to_path_buf();
        move || release(&project)
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let second_image = stage(&record_of(project.path(), &second), "push")["outputs"]["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(first_image, second_image);

    let rollback = tokio::task::spawn_blocking({
        let project = project.path().to_path_buf();
        let first = first.clone();
        move || {
            pipeline_runner(&project)
                .args(["rollback", "api", "--to", &first])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let all = text(&rollback);
    assert_eq!(rollback.status.code(), Some(0), "{all}");
    let rollback_run = run_id(&rollback);
    let record = record_of(project.path(), &rollback_run);
    assert_eq!(record["trigger"]["kind"]["kind"], "rollback", "{record}");
    assert_eq!(
        stage(&record, "build")["status"],
        "skipped",
        "nothing was rebuilt"
    );
    assert_eq!(
        stage(&record, "migrate")["status"],
        "skipped",
        "no migration ran"
    );
    for role in ROLES {
        cluster
            .settled_images(&format!("envelope-prod-{role}"), role, &first_image)
            .await;
    }
}
