//! Runs that survive: killed processes resumed without repeating finished work, and two runs
//! of one pipeline kept apart past the approval gate (queued) or the older one cancelled
//! (superseded).

use crate::support::process::KillOnDrop;
use crate::support::{example_app, project_with, run_id, runner, stage, status_json, text};
use envelope_tests::env::{TestEnv, parts, unique};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Wait until `check` holds for the newest run's record, or fail after `seconds`.
fn wait_for_record(
    env: &TestEnv,
    project: &Path,
    seconds: u64,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let output = runner(env, project)
            .args(["status", "--output", "json"])
            .output()
            .unwrap();
        if let Ok(record) = serde_json::from_slice::<serde_json::Value>(&output.stdout)
            && check(&record)
        {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting; last status: {}",
            text(&output)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The runner with `args`, in the background; killed if the test ends before it does.
fn spawn(env: &TestEnv, project: &Path, args: &[&str]) -> KillOnDrop {
    KillOnDrop::new(
        runner(env, project)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// A buildspec that makes the build phase take a while, so a test can catch it running.
fn slow_buildspec(project: &Path, seconds: u32) {
    std::fs::create_dir_all(project.join("buildspecs")).unwrap();
    std::fs::write(
        project.join("buildspecs/slow.yml"),
        format!("version: 0.2\nphases:\n  build:\n    commands:\n      - sleep {seconds}\n"),
    )
    .unwrap();
}

#[tokio::test]
async fn a_run_killed_during_its_build_resumes_and_finishes_once() {
    killed_during_build(false).await;
}

#[tokio::test]
async fn a_run_killed_during_its_build_resumes_with_the_dynamodb_store() {
    killed_during_build(true).await;
}

async fn killed_during_build(dynamodb: bool) {
    let Some((env, _docker)) = parts("a_run_killed_during_its_build").await else {
        return;
    };
    let app = example_app();
    let url = format!("file://{}", app.bare_root.join("hello.git").display());
    let image = format!("e2e/{}", unique("kill-build"));
    // The first build is slowed by a buildspec; the kill lands while it sleeps.
    let project = tempfile::tempdir().unwrap();
    slow_buildspec(project.path(), 3);
    let project_dir = project_with(
        &url,
        env.registry(),
        &image,
        "",
        "  - approval:\n      timeout: 1h\n",
    );
    let pipeline = std::fs::read_to_string(project_dir.path().join("pipelines/hello.yaml"))
        .unwrap()
        .replace(
            "      tags: [",
            "      buildspec: buildspecs/slow.yml\n      tags: [",
        );
    std::fs::create_dir_all(project.path().join("pipelines")).unwrap();
    std::fs::write(project.path().join("pipelines/hello.yaml"), pipeline).unwrap();
    if dynamodb {
        let store = envelope_tests::env::dynamodb_store(env, "e2e-kill").await;
        std::fs::write(project.path().join("store-url"), store).unwrap();
    }

    let mut child = spawn(
        env,
        project.path(),
        &["run", "hello", "--ref", "v1.0.0", "--until", "push"],
    );
    let record = wait_for_record(env, project.path(), 60, |r| {
        stage(r, "build")["status"] == "running"
    });
    child.kill().unwrap(); // SIGKILL: no chance to checkpoint
    let _ = child.wait();
    let run = record["id"].as_str().unwrap().to_string();
    assert_eq!(
        status_json(env, project.path(), &run)["stages"][1]["status"],
        "running"
    );

    let resumed = runner(env, project.path())
        .args(["resume", &run, "--until", "approval"])
        .output()
        .unwrap();
    // Resume continues to the end of the pipeline: the gate pauses it (exit 4).
    assert_eq!(resumed.status.code(), Some(4), "{}", text(&resumed));
    let record = status_json(env, project.path(), &run);
    assert_eq!(stage(&record, "build")["status"], "succeeded");
    assert_eq!(stage(&record, "push")["status"], "succeeded");
    assert_eq!(stage(&record, "approval")["status"], "waiting");
    let logs = runner(env, project.path())
        .args(["logs", &run, "--output", "json"])
        .output()
        .unwrap();
    let pushes = String::from_utf8_lossy(&logs.stdout)
        .lines()
        .filter(|line| line.contains("\"stage_finished\"") && line.contains("\"stage\":\"push\""))
        .count();
    assert_eq!(pushes, 1, "one push in total: {}", text(&logs));
}

/// A pipeline whose stage after the gate is a slow build, so two runs past the gate would
/// overlap if nothing kept them apart. Its image has a name of its own: tests that run at the
/// same time never push the same tag.
fn gated_project(env: &TestEnv, url: &str, concurrency: &str) -> tempfile::TempDir {
    let stages = format!(
        "  - approval:\n      timeout: 1h\n  - build:\n      name: after-gate\n      image: e2e/{}\n      buildspec: buildspecs/slow.yml\n",
        unique("after-gate")
    );
    let project = project_with(
        url,
        env.registry(),
        &format!("e2e/{}", unique("gate")),
        &format!("concurrency: {concurrency}\n"),
        &stages,
    );
    slow_buildspec(project.path(), 2);
    project
}

#[tokio::test]
async fn queued_runs_pass_the_gate_one_at_a_time() {
    queued_runs(false).await;
}

#[tokio::test]
async fn queued_runs_pass_the_gate_one_at_a_time_with_the_dynamodb_store() {
    queued_runs(true).await;
}

async fn queued_runs(dynamodb: bool) {
    let Some((env, _docker)) = parts("queued_runs").await else {
        return;
    };
    let app = example_app();
    let url = format!("file://{}", app.bare_root.join("hello.git").display());
    let project = gated_project(env, &url, "queued");
    if dynamodb {
        let store = envelope_tests::env::dynamodb_store(env, "e2e-queued").await;
        std::fs::write(project.path().join("store-url"), store).unwrap();
    }
    let mut runs = Vec::new();
    for _ in 0..2 {
        let paused = runner(env, project.path())
            .args(["run", "hello", "--ref", "v1.0.0", "--until", "approval"])
            .output()
            .unwrap();
        assert_eq!(paused.status.code(), Some(4), "{}", text(&paused));
        let run = run_id(&paused);
        let approved = runner(env, project.path())
            .args(["approve", &run])
            .output()
            .unwrap();
        assert_eq!(approved.status.code(), Some(0), "{}", text(&approved));
        runs.push(run);
    }
    // Both resume at once; the lease lets one through the gate at a time.
    let children: Vec<KillOnDrop> = runs
        .iter()
        .map(|run| {
            spawn(
                env,
                project.path(),
                &["resume", run, "--approval-poll", "0.1"],
            )
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    }
    let windows: Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> = runs
        .iter()
        .map(|run| {
            let record = status_json(env, project.path(), run);
            let after = stage(&record, "after-gate");
            let parse = |field: &str| {
                chrono::DateTime::parse_from_rfc3339(after[field].as_str().unwrap())
                    .unwrap()
                    .to_utc()
            };
            (parse("started_at"), parse("finished_at"))
        })
        .collect();
    let (first, second) = if windows[0].0 <= windows[1].0 {
        (windows[0], windows[1])
    } else {
        (windows[1], windows[0])
    };
    assert!(
        second.0 >= first.1,
        "the stages past the gate overlapped: {windows:?}"
    );
    let waited = runs.iter().any(|run| {
        let logs = runner(env, project.path())
            .args(["logs", run])
            .output()
            .unwrap();
        String::from_utf8_lossy(&logs.stdout).contains("is past the approval gate; waiting")
    });
    assert!(waited, "one run waited for the other's lease");
}

#[tokio::test]
async fn a_newer_run_supersedes_an_older_one_still_before_the_gate() {
    superseding(false).await;
}

#[tokio::test]
async fn a_newer_run_supersedes_an_older_one_with_the_dynamodb_store() {
    superseding(true).await;
}

async fn superseding(dynamodb: bool) {
    let Some((env, _docker)) = parts("a_newer_run_supersedes").await else {
        return;
    };
    let app = example_app();
    let url = format!("file://{}", app.bare_root.join("hello.git").display());
    let project = gated_project(env, &url, "superseded");
    if dynamodb {
        let store = envelope_tests::env::dynamodb_store(env, "e2e-supersede").await;
        std::fs::write(project.path().join("store-url"), store).unwrap();
    }
    // The older run waits at the gate in its own process.
    let older = spawn(
        env,
        project.path(),
        &["run", "hello", "--ref", "v1.0.0", "--approval-poll", "0.1"],
    );
    let record = wait_for_record(env, project.path(), 60, |r| {
        stage(r, "approval")["status"] == "waiting"
    });
    let older_id = record["id"].as_str().unwrap().to_string();

    let newer = runner(env, project.path())
        .args(["run", "hello", "--ref", "v1.0.0", "--until", "approval"])
        .output()
        .unwrap();
    assert_eq!(newer.status.code(), Some(4), "{}", text(&newer));
    eprintln!("newer run paused: {}", text(&newer));
    let output = older.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(5),
        "the older run stops as superseded: {}",
        text(&output)
    );
    let record = status_json(env, project.path(), &older_id);
    assert_eq!(record["status"], "superseded");
    assert_eq!(
        stage(&record, "after-gate")["status"],
        "pending",
        "nothing past the gate ran"
    );
    let resume = runner(env, project.path())
        .args(["resume", &older_id])
        .output()
        .unwrap();
    assert_eq!(resume.status.code(), Some(5), "{}", text(&resume));
}

#[tokio::test]
async fn sigterm_checkpoints_the_stage_and_exits_130_and_resume_finishes() {
    let Some((env, _docker)) = parts("sigterm_checkpoints").await else {
        return;
    };
    let app = example_app();
    let url = format!("file://{}", app.bare_root.join("hello.git").display());
    let project = gated_project(env, &url, "queued");
    let child = spawn(
        env,
        project.path(),
        &["run", "hello", "--ref", "v1.0.0", "--approval-poll", "0.1"],
    );
    let record = wait_for_record(env, project.path(), 60, |r| {
        stage(r, "approval")["status"] == "waiting"
    });
    let run = record["id"].as_str().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", text(&output));
    let record = status_json(env, project.path(), &run);
    assert_eq!(record["status"], "cancelled");
    assert_eq!(stage(&record, "approval")["status"], "cancelled");
    let approved = runner(env, project.path())
        .args(["approve", &run])
        .output()
        .unwrap();
    assert_eq!(approved.status.code(), Some(0), "{}", text(&approved));
    let resumed = runner(env, project.path())
        .args(["resume", &run])
        .output()
        .unwrap();
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    assert_eq!(
        status_json(env, project.path(), &run)["status"],
        "succeeded"
    );
}
