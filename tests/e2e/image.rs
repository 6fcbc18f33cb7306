//! The runner's own image (Dockerfile.runner), built by `scripts/runner-image build` from the
//! binaries this test run uses, on the test set-up's offline busybox base, then run as its
//! non-root user: `--version`, `agent --version`, `validate` of the repository's pipelines
//! (exit 0) and of a broken one (exit 2), and the HEALTHCHECK turning an agent container
//! healthy through `/healthz`.

use crate::support::docker::RemoveContainer;
use envelope_tests::env::{TestEnv, parts, repo_root, runner_binary, unique};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const TAG: &str = "envelope-runner:e2e";
const UID: &str = "10001";

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `docker run --rm --network none [extra...] TAG args...`
fn run(env: &TestEnv, extra: &[&str], args: &[&str]) -> Output {
    Command::new(env.docker_cli())
        .args(["run", "--rm", "--network", "none"])
        .args(extra)
        .arg(TAG)
        .args(args)
        .output()
        .unwrap()
}

/// A folder the container's user (10001) can read: tempdirs are 0700 and owned by root.
fn readable(dir: &Path) {
    Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(dir)
        .status()
        .unwrap();
}

#[tokio::test]
async fn runner_image_runs_the_cli_and_the_agent_as_a_non_root_user_with_a_health_check() {
    let Some((env, docker)) = parts("runner_image").await else {
        return;
    };
    let root = repo_root();
    let started = Instant::now();

    // Build from the binaries nextest already built: a `cargo build` here could rebuild them
    // with other features, and would wait for the build lock.
    let bin_dir = runner_binary().parent().unwrap().to_path_buf();
    let stage = tempfile::tempdir().unwrap();
    let build = Command::new(root.join("scripts/runner-image"))
        .arg("build")
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--stage-dir")
        .arg(stage.path().join("context"))
        .args(["--tag", TAG, "--base", env.base_image()])
        .env("ENVELOPE_TEST_DOCKER_CLI", env.docker_cli())
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", text(&build));
    eprintln!(
        "runner_image: built in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // The image as configured: non-root user, a health check, a modest size.
    let image = docker.inspect_image(TAG).await.unwrap();
    let config = image.config.unwrap();
    let user = config.user.unwrap_or_default();
    assert_eq!(user.split(':').next(), Some(UID), "image user {user:?}");
    let test = config
        .healthcheck
        .and_then(|health| health.test)
        .unwrap_or_default();
    assert_eq!(
        test,
        ["CMD", "/usr/local/bin/envelope-healthcheck"],
        "HEALTHCHECK"
    );
    assert_eq!(config.working_dir.as_deref(), Some("/work"));
    let size = image.size.unwrap_or_default();
    eprintln!("runner_image: {TAG} is {:.1} MB", size as f64 / 1e6);
    assert!(
        size < 200_000_000,
        "the image is {size} bytes: are the binaries stripped?"
    );

    // The CLI and the agent start with only the libraries the image ships.
    let version = run(env, &[], &["--version"]);
    assert_eq!(version.status.code(), Some(0), "{}", text(&version));
    let expected = format!("envelope-runner {}", env!("CARGO_PKG_VERSION"));
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), expected);
    let has_agent = root.join("agent/Cargo.toml").is_file();
    if has_agent {
        let agent = run(env, &[], &["agent", "--version"]);
        assert_eq!(agent.status.code(), Some(0), "{}", text(&agent));
        assert!(
            String::from_utf8_lossy(&agent.stdout).starts_with("envelope-agent "),
            "{}",
            text(&agent)
        );
    }
    let id = run(env, &["--entrypoint", "id"], &["-u"]);
    assert_eq!(
        String::from_utf8_lossy(&id.stdout).trim(),
        UID,
        "{}",
        text(&id)
    );

    // validate: the repository's pipelines mounted read-only, on a read-only root.
    let mount = format!("{}:/work:ro", root.display());
    let valid = run(env, &["--read-only", "-v", &mount], &["validate"]);
    assert_eq!(valid.status.code(), Some(0), "{}", text(&valid));
    let listed = String::from_utf8_lossy(&valid.stdout);
    for pipeline in ["api", "tenant", "hq"] {
        assert!(
            listed.contains(&format!("pipelines/{pipeline}.yaml")),
            "{}",
            text(&valid)
        );
    }

    // ...and a broken pipeline: exit 2 with the diagnostic pointing at the file.
    let broken = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(broken.path().join("pipelines")).unwrap();
    std::fs::write(
        broken.path().join("pipelines/broken.yaml"),
        "source:\n  repository: epactltd/api\nstages:\n  - build:\n      imagee: x\n",
    )
    .unwrap();
    readable(broken.path());
    let mount = format!("{}:/work:ro", broken.path().display());
    let invalid = run(
        env,
        &["--read-only", "-e", "NO_COLOR=1", "-v", &mount],
        &["validate"],
    );
    assert_eq!(invalid.status.code(), Some(2), "{}", text(&invalid));
    let stderr = String::from_utf8_lossy(&invalid.stderr);
    assert!(
        stderr.contains("pipelines/broken.yaml:5:7") && stderr.contains("imagee"),
        "{}",
        text(&invalid)
    );

    // The health check of a CLI container: the binary starts.
    let health = run(env, &["--entrypoint", "envelope-healthcheck"], &[]);
    assert_eq!(health.status.code(), Some(0), "{}", text(&health));

    if has_agent {
        agent_turns_healthy(env, &root, broken.path());
    }
    eprintln!(
        "runner_image: done in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// `envelope-runner agent` as the container's process: the image's HEALTHCHECK (probed every
/// second here) must report healthy through GET /healthz. GitHub is an address nothing listens
/// on, so polls fail; /healthz stays healthy for the first three poll intervals (3 minutes).
/// The container has no Docker daemon, so the pipeline watched is one without a build stage
/// (with one, /healthz rightly answers 503).
fn agent_turns_healthy(env: &TestEnv, root: &Path, scratch: &Path) {
    let config = scratch.join("agent.yaml");
    std::fs::write(
        &config,
        "project: /project\nstore: /home/envelope/state.db\nlisten: 127.0.0.1:8080\n\
         github:\n  api_url: http://127.0.0.1:9\n\
         repositories:\n  - repository: epactltd/api\n    pipeline: gate\n",
    )
    .unwrap();
    let project = scratch.join("project");
    std::fs::create_dir_all(project.join("pipelines")).unwrap();
    std::fs::write(
        project.join("pipelines/gate.yaml"),
        "description: an approval gate only, needs no Docker\nsource:\n  repository: epactltd/api\n  tags: [\"v*\"]\nstages:\n  - approval:\n      timeout: 1h\n",
    )
    .unwrap();
    readable(scratch);
    let container = RemoveContainer {
        docker_cli: env.docker_cli().to_owned(),
        name: unique("envelope-runner-image"),
    };
    let started = Command::new(env.docker_cli())
        .args(["run", "-d", "--name", &container.name, "--network", "none"])
        .arg("-v")
        .arg(format!("{}:/work:ro", root.display()))
        .arg("-v")
        .arg(format!("{}:/etc/envelope-agent.yaml:ro", config.display()))
        .arg("-v")
        .arg(format!("{}:/project:ro", project.display()))
        .args(["-e", "GITHUB_TOKEN=not-a-real-token"])
        .args(["--health-interval", "1s", "--health-start-period", "1s"])
        .args([TAG, "agent", "--config", "/etc/envelope-agent.yaml"])
        .output()
        .unwrap();
    assert!(started.status.success(), "{}", text(&started));

    let deadline = Instant::now() + Duration::from_secs(30);
    let state = loop {
        let inspect = Command::new(env.docker_cli())
            .args([
                "inspect",
                "-f",
                "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
                &container.name,
            ])
            .output()
            .unwrap();
        let state = String::from_utf8_lossy(&inspect.stdout).trim().to_string();
        if state == "running healthy" || !state.starts_with("running") {
            break state;
        }
        if Instant::now() > deadline {
            break state;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    if state != "running healthy" {
        let logs = Command::new(env.docker_cli())
            .args(["logs", &container.name])
            .output()
            .unwrap();
        let health = Command::new(env.docker_cli())
            .args(["inspect", "-f", "{{json .State.Health}}", &container.name])
            .output()
            .unwrap();
        panic!(
            "the agent container is {state:?}, not running and healthy\n{}\n--- health\n{}",
            text(&logs),
            String::from_utf8_lossy(&health.stdout)
        );
    }
    // The agent really is the process the check asked.
    let exe = Command::new(env.docker_cli())
        .args(["exec", &container.name, "readlink", "/proc/1/exe"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&exe.stdout).trim(),
        "/usr/local/bin/envelope-agent",
        "{}",
        text(&exe)
    );
}
