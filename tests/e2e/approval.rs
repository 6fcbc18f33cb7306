//! The approval gate end to end: a run pauses, a second process decides, the run goes on (or
//! stops), and a gate nobody answers fails closed.

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
    let child = runner(env, project.path())
        .args(["run", "hello", "--ref", "v1.0.0", "--approval-poll", "0.1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
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
