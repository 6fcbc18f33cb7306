//! Fault drills with real processes: the Docker daemon is SIGKILLed in the middle of a build,
//! then started again.
//!
//! The shared test daemon is never touched: the drill starts a private `dockerd` (with its own
//! containerd, data root, exec root and a bridge of its own, so that `RUN` steps have a
//! network) under a short temporary directory, loads the base image into it and points the
//! runner at it with DOCKER_HOST. Once the Dockerfile's `sleep` step runs inside that daemon,
//! the daemon and every process it started (containerd, runc, the step) get SIGKILL at once,
//! as when the machine's Docker service is killed. The run must fail as an environment error
//! (exit 6) that names the daemon; after the daemon is started again on the same data root,
//! `envelope-runner resume` points to `retry` (the run failed; it was not interrupted) and
//! `envelope-runner retry` must finish the run and push the image exactly once.

use crate::support::private_daemon::{PrivateDaemon, mounts_under};
use crate::support::process::KillOnDrop;
use crate::support::process_tree::{descendants, processes_naming};
use crate::support::{project_with, runner, stage, status_json, text};
use envelope_tests::env::{TestEnv, head_manifest, parts, unique};
use envelope_tests::git_fixture::WorkRepo;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the Dockerfile's slow step sleeps: long enough to be killed in the middle of it.
const STEP_SECONDS: u32 = 8;

/// A process under `root` whose root file system holds `/marker` with `marker` in it: the
/// drill's build step, once it has written the file.
fn step_under(root: u32, marker: &str) -> Option<u32> {
    descendants(root).into_iter().find(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/root/marker"))
            .is_ok_and(|text| text.trim() == marker)
    })
}

/// A repository whose Dockerfile sleeps for [`STEP_SECONDS`] in a `RUN` step, tagged
/// `v1.0.0`: the temporary directory, the served URL and the commit.
fn slow_app(env: &TestEnv, marker: &str) -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let repo = WorkRepo::init(dir.path().join("work")).unwrap();
    let sha = repo
        .commit_file(
            "Dockerfile",
            &format!(
                "FROM {}\nRUN echo {marker} > /marker && sleep {STEP_SECONDS}\n",
                env.base_image()
            ),
            "slow app",
        )
        .unwrap();
    repo.tag("v1.0.0").unwrap();
    let bare = dir.path().join("app.git");
    repo.publish(&bare).unwrap();
    (dir, format!("file://{}", bare.display()), sha)
}

/// How many `stage_started` events for `name` the run's log holds.
fn stage_starts(env: &TestEnv, project: &Path, run: &str, name: &str) -> usize {
    let logs = runner(env, project)
        .args(["logs", run, "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(logs.status.code(), Some(0), "{}", text(&logs));
    String::from_utf8_lossy(&logs.stdout)
        .lines()
        .filter(|line| {
            line.contains("\"stage_started\"") && line.contains(&format!("\"stage\":\"{name}\""))
        })
        .count()
}

#[tokio::test]
async fn a_docker_daemon_killed_mid_build_is_an_environment_error_and_retry_finishes_the_run() {
    let Some((env, _docker)) = parts("daemon killed mid-build").await else {
        return;
    };
    let started = Instant::now();
    let mut daemon = PrivateDaemon::start();
    let load = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{cli} save {image} | /usr/bin/docker --host {host} load",
            cli = env.docker_cli(),
            image = env.base_image(),
            host = daemon.host()
        ))
        .output()
        .unwrap();
    assert!(load.status.success(), "loading the base image: {load:?}");
    eprintln!("private daemon up in {:?}", started.elapsed());

    let marker = unique("drill");
    let (_app, url, sha) = slow_app(env, &marker);
    let image = format!("e2e/{}", unique("daemon-killed"));
    let project = project_with(&url, env.registry(), &image, "", "");
    let stderr_path = project.path().join("run.stderr");
    let mut run = KillOnDrop::new(
        runner(env, project.path())
            .env("DOCKER_HOST", daemon.host())
            .args(["run", "hello", "--ref", "v1.0.0", "--until", "push"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap(),
    );

    // The slow step runs inside the private daemon: kill it there.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if step_under(daemon.pid(), &marker).is_some() {
            break;
        }
        if let Some(status) = run.try_wait().unwrap() {
            panic!(
                "the run ended ({status}) before the slow step started:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the slow step never started:\n{}\n--- dockerd\n{}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let killed_at = Instant::now();
    let killed = daemon.kill();
    eprintln!("killed {killed} processes of the private daemon");

    let exit_deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > exit_deadline {
            // `run` is killed as the panic drops it.
            panic!(
                "the run did not end within 60 s of the daemon's death:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let kill_to_exit = killed_at.elapsed();
    eprintln!("the run ended {kill_to_exit:?} after the kill");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut run.stdout.take().unwrap(), &mut stdout).unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    let all = format!(
        "exit {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        status.code()
    );
    assert_eq!(status.code(), Some(6), "{all}");
    assert!(
        !stderr.contains("DONE [2/2] RUN"),
        "the step was killed before it finished: {all}"
    );
    let error = stderr
        .find("error: stage `build` failed: ")
        .map(|start| stderr[start..].trim_end())
        .unwrap_or_else(|| panic!("no final error: {all}"));
    assert!(
        error.contains("Docker daemon") && error.contains(&daemon.host()),
        "the error names the daemon: {all}"
    );
    assert!(
        error.contains("broke during the build while `[2/2] RUN"),
        "the error says the connection broke in the slow step: {all}"
    );
    let run_id = stdout
        .split_whitespace()
        .skip_while(|word| *word != "run")
        .nth(1)
        .unwrap_or_else(|| panic!("no run id: {all}"))
        .to_owned();
    let record = status_json(env, project.path(), &run_id);
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(stage(&record, "build")["status"], "failed", "{record}");
    assert_eq!(stage(&record, "push")["status"], "skipped", "{record}");

    // The daemon comes back on the same data root. A failed run is not resumed but retried.
    daemon.launch();
    let resumed = runner(env, project.path())
        .env("DOCKER_HOST", daemon.host())
        .args(["resume", &run_id])
        .output()
        .unwrap();
    assert_eq!(resumed.status.code(), Some(1), "{}", text(&resumed));
    assert!(
        String::from_utf8_lossy(&resumed.stderr).contains(&format!(
            "`envelope-runner retry {run_id}` runs the failed stage again"
        )),
        "{}",
        text(&resumed)
    );
    let retried = runner(env, project.path())
        .env("DOCKER_HOST", daemon.host())
        .args(["retry", &run_id])
        .output()
        .unwrap();
    assert_eq!(retried.status.code(), Some(0), "{}", text(&retried));

    let record = status_json(env, project.path(), &run_id);
    assert_eq!(record["status"], "succeeded", "{record}");
    let digest = stage(&record, "push")["outputs"]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no digest: {record}"))
        .to_owned();
    for tag in ["v1.0.0", &sha[..7], "latest"] {
        let (code, registry_digest) = head_manifest(env.registry(), &image, tag).await;
        assert_eq!(code, 200, "tag {tag}");
        assert_eq!(
            registry_digest.as_deref(),
            Some(digest.as_str()),
            "tag {tag}"
        );
    }
    assert_eq!(
        stage_starts(env, project.path(), &run_id, "build"),
        2,
        "the killed build, then the build on retry"
    );
    assert_eq!(
        stage_starts(env, project.path(), &run_id, "push"),
        1,
        "pushed once"
    );
    eprintln!("drill done in {:?}", started.elapsed());

    let dir = daemon.dir().to_path_buf();
    drop(daemon);
    assert!(mounts_under(&dir).is_empty(), "mounts left under {dir:?}");
    assert!(
        processes_naming(&dir).is_empty(),
        "processes left naming {dir:?}"
    );
    assert!(!dir.exists(), "{dir:?} was not removed");
}
