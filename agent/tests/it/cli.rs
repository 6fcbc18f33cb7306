//! The `envelope-agent` program: configuration errors, `--check`, and a clean stop on SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::fake_github::FakeGithub;
use crate::support::*;

fn agent() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_envelope-agent"));
    command.env_remove("ENVELOPE_AGENT_CONFIG");
    command
}

#[test]
fn a_configuration_with_an_unknown_key_exits_2_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.yaml");
    std::fs::write(
        &path,
        "repositories:\n  - repository: acme/app\n    pipeline: app\n    include_prerelease: true\n",
    )
    .unwrap();
    let output = agent().arg("--config").arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("agent.yaml:4:5"), "{stderr}");
    assert!(stderr.contains("include_prereleases"), "{stderr}");
}

#[test]
fn a_missing_secret_exits_6_naming_the_variable() {
    let project = Project::new();
    let path = project.root.join("agent.yaml");
    std::fs::write(
        &path,
        "approvers: [{ name: alice, token_env: ENVELOPE_TEST_UNSET_TOKEN }]\nrepositories: [{ repository: acme/app, pipeline: app }]\n",
    )
    .unwrap();
    let output = agent()
        .arg("--config")
        .arg(&path)
        .env_remove("ENVELOPE_TEST_UNSET_TOKEN")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(6));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ENVELOPE_TEST_UNSET_TOKEN"), "{stderr}");
    let checked = agent()
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .env("ENVELOPE_TEST_UNSET_TOKEN", "x")
        .output()
        .unwrap();
    assert_eq!(checked.status.code(), Some(0), "{checked:?}");
    assert!(String::from_utf8_lossy(&checked.stdout).contains("acme/app → pipeline `app`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_program_serves_health_and_stops_cleanly_on_sigterm() {
    let project = Project::new();
    let github = FakeGithub::start().await;
    github.add_repository(REPOSITORY);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = project.root.join("agent.yaml");
    std::fs::write(
        &path,
        format!(
            "store: {}\nlisten: 127.0.0.1:{port}\ncache_dir: cache\ngithub: {{ api_url: \"{}\", poll_interval: 1s }}\nshutdown_grace: 1s\nrepositories: [{{ repository: {REPOSITORY}, pipeline: {PIPELINE} }}]\n",
            project.sqlite_url(),
            github.url
        ),
    )
    .unwrap();
    let mut child = agent()
        .arg("--config")
        .arg(&path)
        .env("GITHUB_TOKEN", "ghp_x")
        // Colour is decided by the terminal alone here.
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let address = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for("the agent's /healthz", Duration::from_secs(20), || async {
        let stream = tokio::net::TcpStream::connect(address).await.ok()?;
        drop(stream);
        let health = http(address, "GET", "/healthz", &[], b"").await;
        (health.status == 200).then_some(())
    })
    .await;
    wait_for("a poll", Duration::from_secs(20), || async {
        (github.request_count() > 0).then_some(())
    })
    .await;
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        (status, stderr)
    });
    let (status, stderr) = tokio::time::timeout(Duration::from_secs(15), status)
        .await
        .expect("the agent stops within 15 s of SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("stopping"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "a log that is not a terminal gets no colour codes: {stderr:?}"
    );
}
