//! Builds that fail, with an error that says what to do: a missing Dockerfile, a daemon that is
//! not running, a syntax error, a failing step, a copy of a file `.dockerignore` leaves out,
//! and a context file that cannot be sent.

use std::path::PathBuf;

use bollard::Docker;
use envelope_runner::exec::build::{BuildError, BuildProgress};

use super::{context, request, run_build};
use envelope_tests::env::{parts, unique};

#[tokio::test]
async fn a_missing_dockerfile_is_named() {
    // Needs no daemon: the build stops before it asks one.
    let dir = context(&[("app.txt", "x")]);
    let docker = Docker::connect_with_http("tcp://127.0.0.1:1", 5, bollard::API_DEFAULT_VERSION)
        .expect("a client (not a connection)");
    let mut request = request(dir.path());
    request.dockerfile = PathBuf::from("docker/Dockerfile.api");
    let (result, events) = run_build(&docker, &request).await;
    let error = result.expect_err("no Dockerfile");
    assert!(
        matches!(error, BuildError::DockerfileMissing { .. }),
        "{error:?}"
    );
    let expected = format!(
        "no Dockerfile at {}",
        dir.path().join("docker/Dockerfile.api").display()
    );
    assert!(error.to_string().starts_with(&expected), "{error}");
    assert!(events.is_empty());
}

#[tokio::test]
async fn a_daemon_that_is_not_running_says_how_to_start_docker() {
    // A socket file nobody listens on: connection refused, like a stopped dockerd.
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    let docker = Docker::connect_with_unix(
        &format!("unix://{}", socket.display()),
        5,
        bollard::API_DEFAULT_VERSION,
    )
    .expect("client");
    let context = context(&[("Dockerfile", "FROM scratch\n")]);
    let (result, _events) = run_build(&docker, &request(context.path())).await;
    let error = result.expect_err("no daemon");
    assert!(
        matches!(error, BuildError::DaemonUnreachable { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&socket.display().to_string()), "{message}");
    assert!(message.contains("Start Docker"), "{message}");
}

#[tokio::test]
async fn a_dockerfile_syntax_error_shows_the_line_number_and_text() {
    let Some((env, docker)) = parts("build syntax error").await else {
        return;
    };
    let dockerfile = format!(
        "FROM {}\nRUN echo fine\nCOPPY app.txt /app.txt\n",
        env.base_image()
    );
    let dir = context(&[("Dockerfile", &dockerfile), ("app.txt", "x")]);
    let (result, _events) = run_build(&docker, &request(dir.path())).await;
    let error = result.expect_err("syntax error");
    let message = error.to_string();
    assert!(
        matches!(error, BuildError::DockerfileSyntax { line: 3, .. }),
        "{error:?}"
    );
    let location = format!("{}:3:", dir.path().join("Dockerfile").display());
    assert!(message.starts_with(&location), "{message}");
    assert!(message.contains("3 | COPPY app.txt /app.txt"), "{message}");
    assert!(message.contains("COPPY"), "{message}");
}

#[tokio::test]
async fn a_failing_step_is_named_with_its_last_output_lines() {
    let Some((env, docker)) = parts("build failing step").await else {
        return;
    };
    let marker = unique("run");
    let dockerfile = format!(
        "FROM {}\nRUN echo {marker}\nRUN sh -c 'echo compiling; echo \"error: it broke\" >&2; exit 3'\nRUN echo never\n",
        env.base_image()
    );
    let dir = context(&[("Dockerfile", &dockerfile)]);
    let (result, events) = run_build(&docker, &request(dir.path())).await;
    let error = result.expect_err("the step fails");
    let BuildError::StepFailed {
        step,
        message,
        output,
    } = &error
    else {
        panic!("expected a failed step, got {error:?}");
    };
    assert!(step.starts_with("[3/4] RUN sh -c"), "{step}");
    assert!(message.contains("exit code: 3"), "{message}");
    // stdout and stderr are separate streams: their lines may arrive in either order.
    let mut lines = output.clone();
    lines.sort();
    assert_eq!(lines, ["compiling", "error: it broke"]);
    let rendered = error.to_string();
    assert!(rendered.contains("\nlast output lines:\n  "), "{rendered}");
    assert!(rendered.contains("\n  compiling"), "{rendered}");
    assert!(rendered.contains("\n  error: it broke"), "{rendered}");
    assert!(events.iter().any(|event| matches!(event,
        BuildProgress::Step { error: Some(_), name, .. } if name.starts_with("[3/4]"))));
}

#[tokio::test]
async fn copying_a_file_that_dockerignore_leaves_out_says_so() {
    let Some((env, docker)) = parts("build copy of an ignored file").await else {
        return;
    };
    let dockerfile = format!("FROM {}\nCOPY .env.local /app/.env\n", env.base_image());
    let dir = context(&[
        ("Dockerfile", &dockerfile),
        (".dockerignore", ".env*\n"),
        (".env.local", "APP_KEY=x\n"),
    ]);
    let (result, _events) = run_build(&docker, &request(dir.path())).await;
    let error = result.expect_err("the file is not in the context");
    assert!(
        matches!(&error, BuildError::StepFailed { step, .. } if step == "[2/2] COPY .env.local /app/.env"),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("not left out by .dockerignore"),
        "{message}"
    );
}

#[tokio::test]
async fn a_context_file_that_cannot_be_sent_is_named() {
    use std::os::unix::ffi::OsStrExt;
    let Some((env, docker)) = parts("build context with a non-UTF-8 name").await else {
        return;
    };
    let dockerfile = format!("FROM {}\nCOPY . /ctx\n", env.base_image());
    let dir = context(&[("Dockerfile", &dockerfile)]);
    let odd = dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt"));
    std::fs::write(&odd, "x").expect("write");
    let (result, _events) = run_build(&docker, &request(dir.path())).await;
    let error = result.expect_err("the context cannot be sent");
    assert!(
        matches!(&error, BuildError::Context { path, .. } if *path == odd),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("not UTF-8"), "{message}");
    assert!(message.contains(".dockerignore"), "{message}");
}
