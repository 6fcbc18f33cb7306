//! The approval gate end to end: a run pauses, a second process decides, the run goes on (or
//! stops), and a gate nobody answers fails closed.

use crate::support::process::KillOnDrop;
use crate::support::webhook::capture_one_post;
use crate::support::{example_app, project_with, run_id, runner, stage, status_json, text};
use envelope_tests::env::{parts, unique};
use std::time::{Duration, Instant};

const GATE_ONLY: &str = "  - approval:\n      timeout: 1h\n";

#[tokio::test]
async fn until_approval_pauses_and_an_approval_from_another_process_lets_resume_finish() {
    let Some((env, _docker)) = parts("until_approval").await else {
        return;
    };
    let app = example_app();
    let url = format!("file://{}", app.bare_root.join("hello.git").display());
    let project = project_with(
        &url,
        env.registry(),
        &format!("e2e/{}", unique("gate")),
        "",
        GATE_ONLY,
    );

    let paused = runner(env, project.path())
        .args(["run", "hello", "--ref", "v1.0.0", "--until", "approval"])
        .output()
        .unwrap();
    assert_eq!(paused.status.code(), Some(4), "{}", text(&paused));
    let run = run_id(&paused);
    let record = status_json(env, project.path(), &run);
    assert_eq!(record["status"], "waiting");
    assert_eq!(stage(&record, "approval")["status"], "waiting");

    let approve = runner(env, project.path())
        .args([
            "approve",
            &run,
            "--as",
            "release-manager",
            "--comment",
            "ship it",
        ])
        .output()
        .unwrap();
    assert_eq!(approve.status.code(), Some(0), "{}", text(&approve));
    let again = runner(env, project.path())
        .args(["approve", &run, "--reject"])
        .output()
        .unwrap();
    assert_eq!(
        again.status.code(),
        Some(2),
        "the first decision wins: {}",
        text(&again)
    );

    let resumed = runner(env, project.path())
        .args(["resume", &run])
        .output()
        .unwrap();
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    let record = status_json(env, project.path(), &run);
    assert_eq!(record["status"], "succeeded");
    let decision = &stage(&record, "approval")["outputs"]["approval"];
    assert_eq!(decision["by"], "release-manager");
    assert_eq!(decision["comment"], "ship it");
    assert_eq!(decision["approved"], true);
    // The build was not repeated on resume.
    let logs = runner(env, project.path())
        .args(["logs", &run, "--output", "json"])
        .output()
        .unwrap();
    let builds = String::from_utf8_lossy(&logs.stdout)
        .lines()
        .filter(|line| line.contains("\"stage_started\"") && line.contains("\"stage\":\"build\""))
        .count();
    assert_eq!(builds, 1, "{}", text(&logs));
}

#[tokio::test]
async fn a_waiting_run_proceeds_when_another_process_approves() {
    let Some((env, _docker)) = parts("a_waiting_run_proceeds").await else {
        return;
    };
    let app = example_app();
    let url = format!("file://{}", app.bare_root.join("hello.git").display());
    let project = project_with(
        &url,
        env.registry(),
        &format!("e2e/{}", unique("wait")),
        "",
        GATE_ONLY,
    );
    let child = KillOnDrop::new(
        runner(env, project.path())
            .args(["run", "hello", "--ref", "v1.0.0", "--approval-poll", "0.1"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Find the waiting run through the store, as an approver would.
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        let history = runner(env, project.path())
            .args(["history", "--output", "json"])
            .output()
            .unwrap();
        let runs: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap_or_default();
        if let Some(waiting) = runs
            .as_array()
            .and_then(|runs| runs.iter().find(|r| r["current_stage"] == "approval"))
        {
            let id = waiting["id"].as_str().unwrap().to_string();
            if status_json(env, project.path(), &id)["stages"][3]["status"] == "waiting" {
                break id;
            }
        }
        assert!(Instant::now() < deadline, "the run never reached the gate");
        std::thread::sleep(Duration::from_millis(200));
    };
    let approve = runner(env, project.path())
        .args(["approve", &run])
        .output()
        .unwrap();
    assert_eq!(approve.status.code(), Some(0), "{}", text(&approve));
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(
        status_json(env, project.path(), &run)["status"],
        "succeeded"
    );
}

#[tokio::test]
async fn a_rejected_run_stops_at_the_gate_with_exit_code_3() {
    let Some((env, _docker)) = parts("a_rejected_run").await else {
        return;
    };
    let app = example_app();
    let url = format!("file://{}", app.bare_root.join("hello.git").display());
    let stages = "  - approval:\n      timeout: 1h\n  - build:\n      name: after-gate\n      image: e2e/never-built\n";
    let project = project_with(
        &url,
        env.registry(),
        &format!("e2e/{}", unique("reject")),
        "",
        stages,
    );
    let paused = runner(env, project.path())
        .args(["run", "hello", "--ref", "v1.0.0", "--until", "approval"])
        .output()
        .unwrap();
    assert_eq!(paused.status.code(), Some(4), "{}", text(&paused));
    let run = run_id(&paused);
    let reject = runner(env, project.path())
        .args(["approve", &run, "--reject", "--comment", "not today"])
        .output()
        .unwrap();
    assert_eq!(reject.status.code(), Some(0), "{}", text(&reject));
    let resumed = runner(env, project.path())
        .args(["resume", &run])
        .output()
        .unwrap();
    assert_eq!(resumed.status.code(), Some(3), "{}", text(&resumed));
    let record = status_json(env, project.path(), &run);
    assert_eq!(record["status"], "rejected");
    assert_eq!(
        stage(&record, "after-gate")["status"],
        "skipped",
        "nothing after the gate ran"
    );
}

#[tokio::test]
async fn an_unanswered_gate_times_out_and_fails_closed() {
    let Some((env, _docker)) = parts("an_unanswered_gate").await else {
        return;
    };
    let app = example_app();
    let url = format!("file://{}", app.bare_root.join("hello.git").display());
    let stages = "  - approval:\n      timeout: 2s\n  - build:\n      name: after-gate\n      image: e2e/never-built\n";
    let project = project_with(
        &url,
        env.registry(),
        &format!("e2e/{}", unique("timeout")),
        "",
        stages,
    );
    let output = runner(env, project.path())
        .args(["run", "hello", "--ref", "v1.0.0", "--approval-poll", "0.2"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert!(
        text(&output).contains("approval timed out"),
        "{}",
        text(&output)
    );
    let record = status_json(env, project.path(), &run_id(&output));
    assert_eq!(stage(&record, "after-gate")["status"], "skipped");
}

#[tokio::test]
async fn an_opening_gate_notifies_the_webhook_and_sns_with_what_is_being_approved() {
    let Some((env, _docker)) = parts("an_opening_gate_notifies").await else {
        return;
    };
    let sns = aws_sdk_sns::Client::new(
        &aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await,
    );
    let topic = sns
        .create_topic()
        .name(unique("approvals"))
        .send()
        .await
        .unwrap()
        .topic_arn()
        .unwrap()
        .to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let captured = tokio::spawn(capture_one_post(listener));
    let app = example_app();
    let url = format!("file://{}", app.bare_root.join("hello.git").display());
    let stages = format!(
        "  - approval:\n      timeout: 1h\n      notify:\n        sns: {topic}\n        webhook: {hook}\n  - migrate:\n      cluster: envelope-example\n      service: hello-web\n      container: web\n      command: [/srv/migrate.sh, --force]\n"
    );
    let project = project_with(
        &url,
        env.registry(),
        &format!("e2e/{}", unique("notify")),
        "",
        &stages,
    );
    let paused = tokio::task::spawn_blocking({
        let mut command = runner(env, project.path());
        command.args(["run", "hello", "--ref", "v1.0.0", "--until", "approval"]);
        move || command.output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(paused.status.code(), Some(4), "{}", text(&paused));
    let run = run_id(&paused);
    let body = tokio::time::timeout(Duration::from_secs(10), captured)
        .await
        .unwrap()
        .unwrap();
    let notice: serde_json::Value = serde_json::from_str(&body).unwrap();
    let record = status_json(env, project.path(), &run);
    let image = stage(&record, "push")["outputs"]["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(notice["pipeline"], "hello");
    assert_eq!(notice["run"], run.as_str());
    assert_eq!(notice["release"], "v1.0.0");
    assert_eq!(notice["commit"], app.repo.head().unwrap().as_str());
    assert_eq!(notice["images"][0], image.as_str());
    assert_eq!(
        notice["migration"],
        serde_json::json!(["/srv/migrate.sh", "--force"])
    );
    assert_eq!(
        notice["approve_with"],
        format!("envelope-runner approve {run}").as_str()
    );
    let notified = stage(&record, "approval")["outputs"]["notified"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        notified.contains(&format!("sns:{topic}")) && notified.contains("webhook:"),
        "{notified}"
    );
}

#[tokio::test]
async fn approve_decides_only_a_gate_the_run_is_waiting_at() {
    let Some((env, _docker)) = parts("approve only waiting").await else {
        return;
    };
    let app = example_app();
    let url = format!("file://{}", app.bare_root.join("hello.git").display());
    let project = project_with(
        &url,
        env.registry(),
        &format!("e2e/{}", unique("gates")),
        "",
        "  - approval:\n      timeout: 1h\n  - approval:\n      name: final\n      timeout: 1h\n",
    );
    let paused = runner(env, project.path())
        .args(["run", "hello", "--ref", "v1.0.0", "--until", "approval"])
        .output()
        .unwrap();
    assert_eq!(paused.status.code(), Some(4), "{}", text(&paused));
    let run = run_id(&paused);

    // The second gate has not been reached: an approval in advance is refused.
    let early = runner(env, project.path())
        .args(["approve", &run, "--stage", "final"])
        .output()
        .unwrap();
    assert_eq!(early.status.code(), Some(2), "{}", text(&early));
    assert!(
        text(&early).contains(
            "the approval `final` of run {run} is not waiting for a decision (the run has not reached it yet)"
                .replace("{run}", &run)
                .as_str()
        ),
        "{}",
        text(&early)
    );
    let record = status_json(env, project.path(), &run);
    assert_eq!(stage(&record, "final")["status"], "pending");
    assert!(stage(&record, "final")["outputs"]["approval"].is_null());

    // The gate it waits at can be decided.
    let now = runner(env, project.path())
        .args(["approve", &run, "--stage", "approval"])
        .output()
        .unwrap();
    assert_eq!(now.status.code(), Some(0), "{}", text(&now));
}
