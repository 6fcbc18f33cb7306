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
        .env(
            "ENVELOPE_TEST_UNSET_TOKEN",
            "a-long-enough-approver-token-0123456789",
        )
        .output()
        .unwrap();
    assert_eq!(checked.status.code(), Some(0), "{checked:?}");
    assert!(String::from_utf8_lossy(&checked.stdout).contains("acme/app → pipeline `app`"));
}

#[test]
fn check_names_every_variable_a_pipeline_reads_at_run_time_that_is_unset() {
    let project = Project::new();
    let pipeline = project.root.join("pipelines/app.yaml");
    let text = std::fs::read_to_string(&pipeline).unwrap();
    std::fs::write(
        &pipeline,
        format!(
            "{text}notify:\n  slack_env: ENVELOPE_TEST_UNSET_SLACK\n  webhook_env: ENVELOPE_TEST_SET_HOOK\n"
        ),
    )
    .unwrap();
    let path = project.root.join("agent.yaml");
    std::fs::write(
        &path,
        "repositories: [{ repository: acme/app, pipeline: app }]\n",
    )
    .unwrap();
    let check = |slack: Option<&str>| {
        let mut command = agent();
        command.arg("--config").arg(&path).arg("--check").env(
            "ENVELOPE_TEST_SET_HOOK",
            "https://hooks.example.com/secret-path",
        );
        match slack {
            Some(value) => command.env("ENVELOPE_TEST_UNSET_SLACK", value),
            None => command.env_remove("ENVELOPE_TEST_UNSET_SLACK"),
        };
        command.output().unwrap()
    };
    let output = check(None);
    assert_eq!(output.status.code(), Some(6), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("`notify.slack_env` names ENVELOPE_TEST_UNSET_SLACK"),
        "{stderr}"
    );
    assert!(!stderr.contains("ENVELOPE_TEST_SET_HOOK"), "{stderr}");
    assert!(!stderr.contains("secret-path"), "{stderr}");
    let output = check(Some(""));
    assert_eq!(
        output.status.code(),
        Some(6),
        "an empty value is unset: {output:?}"
    );
    let output = check(Some("https://hooks.slack.com/services/T/B/x"));
    assert_eq!(output.status.code(), Some(0), "{output:?}");
}

#[test]
fn a_short_approver_token_is_refused_at_load() {
    let project = Project::new();
    let path = project.root.join("agent.yaml");
    std::fs::write(
        &path,
        "approvers:\n  - name: alice\n    token_env: ENVELOPE_TEST_SHORT_TOKEN\nrepositories: [{ repository: acme/app, pipeline: app }]\n",
    )
    .unwrap();
    let output = agent()
        .arg("--config")
        .arg(&path)
        // 31 characters: one short.
        .env(
            "ENVELOPE_TEST_SHORT_TOKEN",
            "0123456789abcdef0123456789abcde",
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(6), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "agent.yaml:3:16",
        "approver alice's token",
        "ENVELOPE_TEST_SHORT_TOKEN",
        "31 characters",
        "at least 32",
        "openssl rand -hex 32",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in {stderr}"
        );
    }
    assert!(
        !stderr.contains("0123456789abcdef"),
        "the token itself is never shown: {stderr}"
    );
    let checked = agent()
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .env(
            "ENVELOPE_TEST_SHORT_TOKEN",
            "0123456789abcdef0123456789abcdef",
        )
        .output()
        .unwrap();
    assert_eq!(checked.status.code(), Some(0), "{checked:?}");
}

#[test]
fn an_http_api_url_off_this_machine_is_refused_at_load() {
    let project = Project::new();
    let path = project.root.join("agent.yaml");
    let write = |url: &str| {
        std::fs::write(
            &path,
            format!("github:\n  api_url: {url}\nrepositories: [{{ repository: acme/app, pipeline: app }}]\n"),
        )
        .unwrap();
    };
    write("http://github.example.com/api/v3");
    let output = agent()
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in ["agent.yaml:2:12", "plain http", "https://", "localhost"] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in {stderr}"
        );
    }
    for allowed in [
        "http://127.0.0.1:9999",
        "http://localhost:9999",
        "https://github.example.com/api/v3",
    ] {
        write(allowed);
        let output = agent()
            .arg("--config")
            .arg(&path)
            .arg("--check")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{allowed}: {output:?}");
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_503_naming_docker_when_a_building_pipeline_cannot_reach_it() {
    let project = Project::new();
    // The test pipeline, with a build stage in front of its gate.
    let pipeline = project
        .root
        .join("pipelines")
        .join(format!("{PIPELINE}.yaml"));
    let text = std::fs::read_to_string(&pipeline).unwrap();
    std::fs::write(
        &pipeline,
        text.replace("stages:\n", "stages:\n  - build:\n      image: app\n"),
    )
    .unwrap();
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
    let socket = project.root.join("no-docker.sock");
    let mut child = agent()
        .arg("--config")
        .arg(&path)
        .env("GITHUB_TOKEN", "ghp_x")
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let address = format!("127.0.0.1:{port}").parse().unwrap();
    let report = wait_for("the agent's /healthz", Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(address).await.ok()?;
        let health = http(address, "GET", "/healthz", &[], b"").await;
        let report: serde_json::Value = serde_json::from_str(&health.body).ok()?;
        // Wait for the first poll, so that Docker is the only thing wrong.
        report["last_poll_seconds_ago"].as_f64()?;
        Some((health.status, report))
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let (status, report) = report;
    assert_eq!(status, 503, "{report}");
    assert_eq!(report["docker"]["ok"], false, "{report}");
    assert!(
        report["docker"]["detail"]
            .as_str()
            .unwrap()
            .contains("DOCKER_HOST"),
        "{report}"
    );
    assert_eq!(report["store"]["ok"], true, "{report}");
    assert_eq!(report["poll"]["ok"], true, "{report}");
}
