//! Nothing waits forever: every outside party that accepts a connection and then says nothing
//! (a git server, the Docker daemon, an AWS endpoint, a buildspec command's server) fails the
//! run as an environment error (exit code 6), and the record says which call timed out.
//!
//! The silent parties are real listeners: `Silent` accepts and never answers, `Freezer`
//! forwards to a real server until a marked request's answer has started, then goes quiet.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use envelope_tests::env::{parts, unique};
use envelope_tests::git_fixture::GitServer;

use crate::support::{
    TOKEN, example_app, project, project_with, run_id, runner, stage, status_json, text,
};

/// A TCP listener on 127.0.0.1 that accepts every connection, reads what comes and never
/// answers. Connections are held until the listener is dropped.
struct Silent {
    port: u16,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Silent {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let keep = held.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let mut reader = stream.try_clone().expect("clone");
                keep.lock().expect("lock").push(stream);
                // Read (and drop) whatever the client sends, so it never blocks on writing.
                thread::spawn(move || {
                    let mut buffer = [0u8; 4096];
                    while matches!(reader.read(&mut buffer), Ok(n) if n > 0) {}
                });
            }
        });
        Silent { port, held }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        for stream in self.held.lock().expect("lock").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Where a `Freezer` forwards to.
#[derive(Clone)]
enum Upstream {
    Tcp(String),
    Unix(String),
}

trait Duplex: Read + Write + Send {
    fn split(&self) -> Box<dyn Duplex>;
    fn close(&self);
}

impl Duplex for TcpStream {
    fn split(&self) -> Box<dyn Duplex> {
        Box::new(self.try_clone().expect("clone"))
    }
    fn close(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}

impl Duplex for UnixStream {
    fn split(&self) -> Box<dyn Duplex> {
        Box::new(self.try_clone().expect("clone"))
    }
    fn close(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}

/// A TCP proxy in front of a real server. On a connection whose request contains `marker`,
/// it forwards the answer's headers and `body_bytes` bytes of its body, then nothing more
/// (what it still receives is dropped): the server seems to stall in the middle of its
/// answer. Other connections pass untouched.
struct Freezer {
    port: u16,
    frozen: Arc<AtomicBool>,
}

impl Freezer {
    fn start(upstream: Upstream, marker: &'static [u8], body_bytes: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let frozen = Arc::new(AtomicBool::new(false));
        let any_frozen = frozen.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let server: Box<dyn Duplex> = match &upstream {
                    Upstream::Tcp(address) => {
                        Box::new(TcpStream::connect(address).expect("upstream"))
                    }
                    Upstream::Unix(path) => Box::new(UnixStream::connect(path).expect("upstream")),
                };
                let seen = Arc::new(AtomicBool::new(false));
                // Client to server, watching for the marker.
                {
                    let mut from = client.try_clone().expect("clone");
                    let mut to = server.split();
                    let seen = seen.clone();
                    let client = client.try_clone().expect("clone");
                    thread::spawn(move || {
                        let mut window: Vec<u8> = Vec::new();
                        let mut buffer = [0u8; 16384];
                        loop {
                            let n = match from.read(&mut buffer) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            window.extend_from_slice(&buffer[..n]);
                            if window.windows(marker.len()).any(|w| w == marker) {
                                seen.store(true, Ordering::SeqCst);
                            }
                            let keep = window.len().saturating_sub(marker.len());
                            window.drain(..keep);
                            if to.write_all(&buffer[..n]).is_err() {
                                break;
                            }
                        }
                        to.close();
                        client.close();
                    });
                }
                // Server to client, freezing after the marked request's answer began.
                {
                    let mut from = server.split();
                    let mut to = client.try_clone().expect("clone");
                    let any_frozen = any_frozen.clone();
                    thread::spawn(move || {
                        let mut answer: Vec<u8> = Vec::new();
                        let mut buffer = [0u8; 16384];
                        loop {
                            let n = match from.read(&mut buffer) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let mut chunk = &buffer[..n];
                            if seen.load(Ordering::SeqCst) {
                                answer.extend_from_slice(chunk);
                                if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n")
                                {
                                    let allowed = end + 4 + body_bytes;
                                    let before = answer.len() - chunk.len();
                                    if answer.len() > allowed {
                                        chunk = &chunk[..allowed.saturating_sub(before)];
                                        let _ = to.write_all(chunk);
                                        any_frozen.store(true, Ordering::SeqCst);
                                        // Silence from here on; keep draining the server.
                                        while matches!(from.read(&mut buffer), Ok(n) if n > 0) {}
                                        break;
                                    }
                                }
                            }
                            if to.write_all(chunk).is_err() {
                                break;
                            }
                        }
                        to.close();
                    });
                }
            }
        });
        Freezer { port, frozen }
    }

    fn froze(&self) -> bool {
        self.frozen.load(Ordering::SeqCst)
    }
}

fn file_url(root: &Path) -> String {
    format!("file://{}", root.join("hello.git").display())
}

#[tokio::test]
async fn a_git_server_that_goes_silent_fails_the_source_stage_with_exit_6() {
    let Some((env, _docker)) = parts("a_git_server_that_goes_silent").await else {
        return;
    };
    let app = example_app();
    let server = GitServer::start(&app.bare_root, Some(TOKEN)).unwrap();
    // Mid-pack: the answer to the fetch stops after its headers and a few bytes of the pack.
    let freezer = Freezer::start(
        Upstream::Tcp(format!("127.0.0.1:{}", server.port)),
        b"POST /hello.git/git-upload-pack",
        24,
    );
    let frozen = project(
        &format!("http://127.0.0.1:{}/hello.git", freezer.port),
        env.registry(),
        &format!("e2e/{}", unique("git-silent")),
    );
    let output = runner(env, frozen.path())
        .env("GITHUB_TOKEN", TOKEN)
        .env("ENVELOPE_GIT_TIMEOUT", "2s")
        .args(["run", "hello", "--ref", "v1.0.0", "--until", "push"])
        .output()
        .unwrap();
    let all = text(&output);
    assert!(freezer.froze(), "the fetch never reached the pack: {all}");
    assert_eq!(output.status.code(), Some(6), "{all}");
    let record = status_json(env, frozen.path(), &run_id(&output));
    let source = stage(&record, "source");
    assert_eq!(source["status"], "failed", "{record}");
    let error = source["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("sent nothing for 2s in the middle of its answer: timed out"),
        "{record}"
    );
    assert!(!all.contains(TOKEN), "{all}");

    // A server that accepts and never answers at all.
    let silent = Silent::start();
    let quiet = project(
        &format!("{}/hello.git", silent.url()),
        env.registry(),
        &format!("e2e/{}", unique("git-silent")),
    );
    let output = runner(env, quiet.path())
        .env("ENVELOPE_GIT_TIMEOUT", "1s")
        .args(["run", "hello", "--ref", "v1.0.0", "--until", "push"])
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(6), "{all}");
    let record = status_json(env, quiet.path(), &run_id(&output));
    let error = stage(&record, "source")["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("sent nothing for 1s before answering: timed out"),
        "{record}"
    );
}

#[tokio::test]
async fn a_docker_daemon_that_stops_reporting_fails_the_build_after_its_idle_timeout() {
    let Some((env, _docker)) = parts("a_docker_daemon_that_stops_reporting").await else {
        return;
    };
    let socket = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|host| host.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| "/var/run/docker.sock".to_owned());
    // The build's answer stops a little way into BuildKit's progress stream.
    let freezer = Freezer::start(Upstream::Unix(socket), b"/build?", 64);
    let app = example_app();
    let image = format!("e2e/{}", unique("idle"));
    let project = project_with(
        &file_url(&app.bare_root),
        env.registry(),
        &image,
        "",
        "      idle_timeout: 3s\n",
    );
    let output = runner(env, project.path())
        .env("DOCKER_HOST", format!("tcp://127.0.0.1:{}", freezer.port))
        .args(["run", "hello", "--ref", "v1.0.0", "--until", "push"])
        .output()
        .unwrap();
    let all = text(&output);
    assert!(freezer.froze(), "the build never started: {all}");
    assert_eq!(output.status.code(), Some(6), "{all}");
    let record = status_json(env, project.path(), &run_id(&output));
    let build = stage(&record, "build");
    assert_eq!(build["status"], "failed", "{record}");
    let error = build["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "the Docker daemon at tcp://127.0.0.1:{} reported no build progress for 3s",
            freezer.port
        )),
        "{record}"
    );
}

#[tokio::test]
async fn a_buildspec_command_waiting_on_a_silent_server_times_the_build_stage_out() {
    let Some((env, _docker)) = parts("a_buildspec_command_waiting").await else {
        return;
    };
    let silent = Silent::start();
    let app = example_app();
    let project = project_with(
        &file_url(&app.bare_root),
        env.registry(),
        &format!("e2e/{}", unique("spec-timeout")),
        "",
        "      buildspec: buildspecs/wait.yml\n      timeout: 3s\n",
    );
    let command = format!(
        "python3 -c \"import socket; socket.create_connection(('127.0.0.1', {})).recv(1)\"",
        silent.port
    );
    std::fs::create_dir_all(project.path().join("buildspecs")).unwrap();
    std::fs::write(
        project.path().join("buildspecs/wait.yml"),
        format!(
            "version: 0.2\nphases:\n  build:\n    commands:\n      - echo waiting\n      - '{}'\n",
            command.replace('\'', "''")
        ),
    )
    .unwrap();
    let output = runner(env, project.path())
        .args(["run", "hello", "--ref", "v1.0.0", "--until", "push"])
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(6), "{all}");
    let record = status_json(env, project.path(), &run_id(&output));
    let build = stage(&record, "build");
    assert_eq!(build["status"], "failed", "{record}");
    let error = build["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "the build stage `build` timed out after 3s while buildspec command `{command}` ran"
        )),
        "{record}"
    );
}

/// A pipeline whose registry is an ECR host, or a plain one, with `extra` in its build stage.
fn aws_project(
    app_root: &Path,
    registry: &str,
    build_extra: &str,
    stages: &str,
) -> tempfile::TempDir {
    project_with(
        &file_url(app_root),
        registry,
        &format!("e2e/{}", unique("aws-silent")),
        "",
        &format!("{build_extra}{stages}"),
    )
}

#[tokio::test]
async fn aws_calls_that_get_no_answer_fail_with_exit_6_and_name_the_call() {
    let Some((env, _docker)) = parts("aws_calls_that_get_no_answer").await else {
        return;
    };
    let silent = Silent::start();
    let app = example_app();

    // ECR: the registry token.
    let project = aws_project(
        &app.bare_root,
        "123456789012.dkr.ecr.eu-west-2.amazonaws.com",
        "",
        "",
    );
    let output = runner(env, project.path())
        .env("AWS_ENDPOINT_URL_ECR", silent.url())
        .env("ENVELOPE_AWS_TIMEOUT", "1s")
        .args(["run", "hello", "--ref", "v1.0.0", "--until", "push"])
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(6), "{all}");
    let record = status_json(env, project.path(), &run_id(&output));
    let error = stage(&record, "build")["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("ECR GetAuthorizationToken timed out after 1s"),
        "{record}"
    );

    // Secrets Manager: a build secret.
    let project = aws_project(
        &app.bare_root,
        env.registry(),
        "      secrets:\n        - id: token\n          aws_secret: envelope/e2e-silent\n",
        "",
    );
    let output = runner(env, project.path())
        .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", silent.url())
        .env("ENVELOPE_AWS_TIMEOUT", "1s")
        .args(["run", "hello", "--ref", "v1.0.0", "--until", "push"])
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(6), "{all}");
    let record = status_json(env, project.path(), &run_id(&output));
    let error = stage(&record, "build")["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.starts_with("build secret `token`: ")
            && error.contains("Secrets Manager GetSecretValue timed out after 1s"),
        "{record}"
    );

    // DynamoDB: the state store.
    let output = runner(env, project.path())
        .env("AWS_ENDPOINT_URL_DYNAMODB", silent.url())
        .env("ENVELOPE_AWS_TIMEOUT", "1s")
        .args(["history", "--store", "dynamodb://envelope-silent"])
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(6), "{all}");
    assert!(all.contains("DynamoDB timed out after 1s"), "{all}");

    // SNS: the approval notice. Not being able to tell approvers does not fail the run (the
    // gate still waits), but the record says what happened.
    let project = aws_project(
        &app.bare_root,
        env.registry(),
        "",
        "  - approval:\n      timeout: 1h\n      notify:\n        sns: arn:aws:sns:eu-west-2:000000000000:envelope-silent\n",
    );
    let output = runner(env, project.path())
        .env("AWS_ENDPOINT_URL_SNS", silent.url())
        .env("ENVELOPE_AWS_TIMEOUT", "1s")
        .args(["run", "hello", "--ref", "v1.0.0", "--until", "approval"])
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(4), "{all}");
    let logs = runner(env, project.path())
        .args(["logs", &run_id(&output)])
        .output()
        .unwrap();
    let logs = text(&logs);
    assert!(logs.contains("SNS Publish timed out after 1s"), "{logs}");
}
