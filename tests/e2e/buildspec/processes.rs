//! The processes a buildspec's commands start: dropping a run kills the shell and its
//! children, background processes do not outlive the build, and a command may run `docker
//! build` itself.

use std::sync::Mutex;
use std::time::Duration;

use envelope_runner::exec::buildspec::{BuildspecProgress, run};
use tempfile::TempDir;

use super::{compile, context, run_in_temp, run_with};
use crate::support::docker::RemoveImages;

#[tokio::test]
async fn dropping_the_run_kills_the_shell_and_its_children() {
    let source = TempDir::new().unwrap();
    let pid_file = source.path().join("sleeper.pid");
    let spec = compile(
        "version: 0.2\nphases:\n  build:\n    commands:\n\
         \x20     - sleep 300 & echo $! > sleeper.pid; echo started; sleep 300\n",
    );
    let context = context(source.path());
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let started_tx = Mutex::new(Some(started_tx));
    let progress = move |progress: BuildspecProgress| {
        if matches!(&progress, BuildspecProgress::Line { line, .. } if line == "started")
            && let Some(tx) = started_tx.lock().unwrap().take()
        {
            let _ = tx.send(());
        }
    };
    let running = run(&spec, &context, &progress, |_| async {
        Ok::<(), String>(())
    });
    tokio::select! {
        outcome = running => panic!("the run should still be sleeping: {outcome:?}"),
        _ = started_rx => {}
        () = tokio::time::sleep(Duration::from_secs(30)) => panic!("the command never started"),
    }
    // `running` is dropped here: the shell and the background sleep must go.
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut alive = true;
    for _ in 0..100 {
        alive = process_alive(pid);
        if !alive {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !alive,
        "background process {pid} survived the cancelled run"
    );
}

/// Alive and not a zombie waiting to be reaped.
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test]
async fn background_processes_do_not_outlive_the_build() {
    let (source, run) = run_in_temp(
        "version: 0.2\nphases:\n  install:\n    commands: ['sleep 300 >/dev/null 2>&1 & echo $! > daemon.pid']\n",
    )
    .await;
    assert!(run.outcome.succeeded);
    let pid: u32 = std::fs::read_to_string(source.path().join("daemon.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut alive = true;
    for _ in 0..100 {
        alive = process_alive(pid);
        if !alive {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive, "background process {pid} outlived the build");
}

#[tokio::test]
async fn a_buildspec_can_call_docker_build_itself() {
    let docker = "/usr/bin/docker";
    let answers = std::process::Command::new(docker)
        .arg("info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !answers {
        let reason = "`docker info` does not answer";
        if std::env::var_os("ENVELOPE_TEST_REQUIRE_DOCKER").is_some() {
            panic!("ENVELOPE_TEST_REQUIRE_DOCKER is set but {reason}");
        }
        eprintln!("skipped: {reason} (set ENVELOPE_TEST_REQUIRE_DOCKER to fail instead)");
        return;
    }
    let source = TempDir::new().unwrap();
    let base = std::env::var("ENVELOPE_TEST_BASE_IMAGE")
        .unwrap_or_else(|_| "envelope-test/busybox:1".to_string());
    std::fs::write(
        source.path().join("Dockerfile"),
        format!("FROM {base}\nARG MESSAGE\nRUN echo \"$MESSAGE\" > /message\n"),
    )
    .unwrap();
    let tag = format!("envelope-test/buildspec-e2e:{}", std::process::id());
    // The buildspec removes the image itself; this removes it if the test fails before that.
    let _cleanup = RemoveImages {
        docker_cli: docker.to_owned(),
        references: vec![tag.clone()],
    };
    let run = run_with(
        &format!(
            "version: 0.2\nenv:\n  variables:\n    MESSAGE: built by a buildspec\nphases:\n  build:\n    commands:\n\
             \x20     - DOCKER_BUILDKIT=1 {docker} build --build-arg MESSAGE -t {tag} .\n\
             \x20 post_build:\n    commands:\n\
             \x20     - {docker} run --rm {tag} cat /message\n\
             \x20     - {docker} rmi {tag} >/dev/null\n"
        ),
        &context(source.path()),
        None,
    )
    .await;
    assert!(
        run.outcome.succeeded,
        "{:?}\n{}",
        run.outcome,
        run.log.entries().join("\n")
    );
    assert!(
        run.log
            .lines()
            .contains(&"built by a buildspec".to_string()),
        "{}",
        run.log.entries().join("\n")
    );
}
