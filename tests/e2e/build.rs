//! build end-to-end tests: real BuildKit builds on the Docker daemon, through
//! `envelope_runner::exec::build::build`, checked by reading the images back from the daemon
//! (inspect, history, and every layer of `docker save`) and by pushing to the test registries.
//!
//! Tests that need Docker skip (with a note on stderr) only when ENVELOPE_TEST_REQUIRE_DOCKER is
//! unset and Docker cannot be reached; CI sets it, so there they run for real.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{PruneBuildOptions, PushImageOptions, RemoveImageOptions};
use envelope_runner::exec::build::{
    BuildError, BuildOutput, BuildProgress, BuildRequest, BuildSecret, RegistryCredentials, build,
};
use envelope_runner::secret::Secret;
use envelope_tests::env::{TestEnv, parts, unique};
use futures_util::StreamExt;

// ---------------------------------------------------------------- helpers

/// A build context in a temporary directory.
fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, contents) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, contents).expect("write");
    }
    dir
}

fn request(dir: &Path) -> BuildRequest {
    BuildRequest {
        context_dir: dir.to_owned(),
        dockerfile: PathBuf::from("Dockerfile"),
        ..BuildRequest::default()
    }
}

/// Runs a build, collecting its progress events. The build must finish within five minutes.
async fn run_build(
    docker: &Docker,
    request: &BuildRequest,
) -> (Result<BuildOutput, BuildError>, Vec<BuildProgress>) {
    let events = Mutex::new(Vec::new());
    let record = |event: BuildProgress| events.lock().expect("lock").push(event);
    let result = tokio::time::timeout(Duration::from_secs(300), build(docker, request, &record))
        .await
        .expect("the build finishes within five minutes");
    (result, events.into_inner().expect("lock"))
}

/// Removes images by reference when the test ends, whatever happens.
struct Cleanup<'a> {
    docker: &'a Docker,
    references: Vec<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let references = std::mem::take(&mut self.references);
        let docker = self.docker.clone();
        // Best effort, on a thread of its own: Drop cannot await.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                for reference in references {
                    let _ = remove(&docker, &reference).await;
                }
            });
        })
        .join();
    }
}

async fn remove(docker: &Docker, reference: &str) -> Result<(), bollard::errors::Error> {
    docker
        .remove_image(
            reference,
            Some(RemoveImageOptions {
                force: true,
                ..RemoveImageOptions::default()
            }),
            None,
        )
        .await
        .map(drop)
}

/// An image as `docker save` writes it.
struct SavedImage {
    /// The whole archive: manifest, config (with the history), every layer.
    raw: Vec<u8>,
    /// The image's file system: path (no leading `/`) to contents, layers applied in order.
    files: BTreeMap<String, Vec<u8>>,
}

async fn save(docker: &Docker, image: &str) -> SavedImage {
    let mut raw = Vec::new();
    let mut stream = docker.export_image(image);
    while let Some(chunk) = stream.next().await {
        raw.extend_from_slice(&chunk.expect("export chunk"));
    }
    let mut members: HashMap<String, Vec<u8>> = HashMap::new();
    let mut archive = tar::Archive::new(raw.as_slice());
    for entry in archive.entries().expect("saved image is a tar") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).expect("read member");
        members.insert(path, bytes);
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&members["manifest.json"]).expect("manifest.json");
    let mut files = BTreeMap::new();
    for layer in manifest[0]["Layers"].as_array().expect("layers") {
        let layer = layer.as_str().expect("layer path");
        let mut archive = tar::Archive::new(members[layer].as_slice());
        for entry in archive.entries().expect("layer is a tar") {
            let mut entry = entry.expect("layer entry");
            let path = entry.path().expect("path").to_string_lossy().into_owned();
            let name = path.rsplit('/').next().unwrap_or_default();
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let parent = path.strip_suffix(name).unwrap_or_default();
                files.remove(&format!("{parent}{hidden}"));
                continue;
            }
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).expect("read file");
            files.insert(path.trim_end_matches('/').to_owned(), bytes);
        }
    }
    SavedImage { raw, files }
}

fn text(image: &SavedImage, path: &str) -> String {
    let bytes = image
        .files
        .get(path)
        .unwrap_or_else(|| panic!("the image has no {path}"));
    String::from_utf8_lossy(bytes).into_owned()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

async fn push(
    docker: &Docker,
    repository: &str,
    tag: &str,
    credentials: Option<DockerCredentials>,
) {
    let mut stream = docker.push_image(
        repository,
        Some(PushImageOptions {
            tag: Some(tag.to_owned()),
            ..PushImageOptions::default()
        }),
        credentials,
    );
    while let Some(item) = stream.next().await {
        let item = item.unwrap_or_else(|error| panic!("pushing {repository}:{tag}: {error}"));
        if let Some(error) = item.error_detail.and_then(|detail| detail.message) {
            panic!("pushing {repository}:{tag}: {error}");
        }
    }
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn a_build_has_the_labels_tags_and_build_args_and_leaves_out_dockerignored_files() {
    let Some((env, docker)) = parts("build labels/tags/args/.dockerignore").await else {
        return;
    };
    let dockerfile = format!(
        "FROM {}\nARG GREETING=unset\nCOPY . /ctx\nRUN echo \"$GREETING\" > /greeting\nRUN ls /ctx > /listing\n",
        env.base_image()
    );
    let dir = context(&[
        ("Dockerfile", &dockerfile),
        (
            ".dockerignore",
            "secret.txt\n*.log\n!keep.log\nnode_modules\n",
        ),
        ("app.txt", "app\n"),
        ("secret.txt", "must not be sent\n"),
        ("debug.log", "noise\n"),
        ("keep.log", "kept by an exception\n"),
        ("node_modules/pkg/index.js", "x\n"),
    ]);
    let name = unique("envelope-e2e/build");
    let tags = vec![format!("{name}:one"), format!("{name}:two")];
    let _cleanup = Cleanup {
        docker: &docker,
        references: tags.clone(),
    };
    let mut request = request(dir.path());
    request.tags = tags.clone();
    request.build_args = BTreeMap::from([("GREETING".to_owned(), "hello".to_owned())]);
    request.labels = BTreeMap::from([
        (
            "org.opencontainers.image.revision".to_owned(),
            "0123abcd".to_owned(),
        ),
        (
            "org.opencontainers.image.source".to_owned(),
            "https://github.com/example/api".to_owned(),
        ),
        (
            "org.opencontainers.image.version".to_owned(),
            "1.2.3".to_owned(),
        ),
    ]);

    let (result, events) = run_build(&docker, &request).await;
    let output = result.unwrap_or_else(|error| panic!("build failed: {error}"));

    assert!(
        output.image_id.starts_with("sha256:"),
        "{}",
        output.image_id
    );
    let inspected = docker
        .inspect_image(&output.image_id)
        .await
        .expect("inspect");
    let mut repo_tags = inspected.repo_tags.clone().unwrap_or_default();
    repo_tags.sort();
    assert_eq!(repo_tags, tags, "both tags name the image");
    let labels = inspected
        .config
        .and_then(|config| config.labels)
        .unwrap_or_default();
    for (key, value) in &request.labels {
        assert_eq!(labels.get(key), Some(value), "label {key}");
    }

    let image = save(&docker, &output.image_id).await;
    assert_eq!(
        text(&image, "greeting"),
        "hello\n",
        "the build arg reached RUN"
    );
    assert_eq!(text(&image, "ctx/app.txt"), "app\n");
    assert_eq!(text(&image, "ctx/keep.log"), "kept by an exception\n");
    for ignored in [
        "ctx/secret.txt",
        "ctx/debug.log",
        "ctx/node_modules/pkg/index.js",
    ] {
        assert!(!image.files.contains_key(ignored), "{ignored} was ignored");
    }
    assert!(image.files.contains_key("ctx/Dockerfile"));
    assert!(image.files.contains_key("ctx/.dockerignore"));
    assert_eq!(
        text(&image, "listing"),
        "Dockerfile\napp.txt\nkeep.log\n",
        "busybox ls hides dotfiles; node_modules left no directory behind"
    );

    // Progress: every Dockerfile step started and completed, with a duration.
    let mut instructions: Vec<_> = output
        .steps
        .iter()
        .filter_map(|step| step.instruction())
        .collect();
    instructions.sort_unstable();
    assert_eq!(
        instructions,
        ["COPY", "FROM", "RUN", "RUN"],
        "{:#?}",
        output.steps
    );
    for step in output
        .steps
        .iter()
        .filter(|step| step.instruction().is_some())
    {
        assert!(step.error.is_none(), "{step:?}");
        assert!(step.cached || step.duration.is_some(), "{step:?}");
        assert!(
            events.iter().any(|event| matches!(event,
                BuildProgress::Step { name, completed: true, .. } if *name == step.name)),
            "a completed event for {}",
            step.name
        );
    }
}

#[tokio::test]
async fn the_target_stage_of_a_multi_stage_dockerfile_is_built() {
    let Some((env, docker)) = parts("build target").await else {
        return;
    };
    let base = env.base_image();
    let marker = unique("marker");
    let dockerfile = format!(
        "FROM {base} AS base\nRUN echo {marker} > /marker\n\
         FROM base AS tester\nRUN echo tester > /stage\n\
         FROM base AS final\nRUN echo final > /stage\n"
    );
    let dir = context(&[("Dockerfile", &dockerfile)]);
    let mut request = request(dir.path());
    request.target = Some("tester".to_owned());
    request.platform = Some("linux/amd64".to_owned());

    let (result, _events) = run_build(&docker, &request).await;
    let output = result.unwrap_or_else(|error| panic!("build failed: {error}"));
    let _cleanup = Cleanup {
        docker: &docker,
        references: vec![output.image_id.clone()],
    };

    let image = save(&docker, &output.image_id).await;
    assert_eq!(text(&image, "stage"), "tester\n");
    assert_eq!(text(&image, "marker"), format!("{marker}\n"));
    assert!(
        output
            .steps
            .iter()
            .all(|step| !step.name.contains("echo final")),
        "the final stage was not built: {:#?}",
        output.steps
    );
}

#[tokio::test]
async fn a_secret_is_readable_in_its_step_and_absent_from_every_layer_history_and_progress() {
    let Some((env, docker)) = parts("build secret").await else {
        return;
    };
    let value = unique("s3cr3t-token");
    // The Dockerfile holds only a hash of the value: its text is part of the image history.
    let hash = sha256_hex(value.as_bytes());
    let dockerfile = format!(
        "FROM {}\n\
         RUN --mount=type=secret,id=token sh -c 'test \"$(sha256sum < /run/secrets/token | cut -d\" \" -f1)\" = {hash} && echo secret-ok > /secret-ok && echo checked; cat /run/secrets/token; echo'\n\
         RUN echo after > /after\n",
        env.base_image()
    );
    let dir = context(&[("Dockerfile", &dockerfile)]);
    let name = unique("envelope-e2e/build-secret");
    let tag = format!("{name}:1");
    let _cleanup = Cleanup {
        docker: &docker,
        references: vec![tag.clone()],
    };
    let mut request = request(dir.path());
    request.tags = vec![tag];
    request.secrets = vec![BuildSecret {
        id: "token".to_owned(),
        value: Secret::new(value.clone()),
    }];

    let (result, events) = run_build(&docker, &request).await;
    let output = result.unwrap_or_else(|error| panic!("build failed: {error}"));

    let image = save(&docker, &output.image_id).await;
    assert_eq!(
        text(&image, "secret-ok"),
        "secret-ok\n",
        "the step read the secret"
    );
    assert!(
        !contains(&image.raw, value.as_bytes()),
        "the secret is in the saved image (a layer, the config or the history)"
    );
    for (path, bytes) in &image.files {
        assert!(
            !contains(bytes, value.as_bytes()),
            "the secret is in {path}"
        );
    }
    let history = docker
        .image_history(&output.image_id)
        .await
        .expect("history");
    assert!(!history.is_empty());
    for item in &history {
        assert!(
            !item.created_by.contains(&value),
            "history: {}",
            item.created_by
        );
        assert!(!item.comment.contains(&value), "history: {}", item.comment);
    }

    let rendered = format!("{events:?}");
    assert!(
        !rendered.contains(&value),
        "the secret reached the progress callback"
    );
    assert!(
        events
            .iter()
            .any(|event| matches!(event, BuildProgress::Log { line, .. } if line == "[REDACTED]")),
        "the step's output of the secret was scrubbed: {events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|event| matches!(event, BuildProgress::Log { line, .. } if line == "checked"))
    );
}

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
async fn after_pruning_its_build_cache_a_rebuild_takes_every_step_from_the_pushed_inline_cache() {
    let Some((env, docker)) = parts("build cache_from").await else {
        return;
    };
    let repository = format!("{}/{}", env.registry(), unique("envelope-e2e/build-cache"));
    cache_round_trip(&docker, env, &repository, None).await;
}

#[tokio::test]
async fn cache_from_a_registry_that_needs_credentials_uses_registry_auth() {
    let Some((env, docker)) = parts("build cache_from with auth").await else {
        return;
    };
    let registry = env.auth_registry();
    let repository = format!("{registry}/{}", unique("envelope-e2e/build-cache-auth"));
    let credentials = RegistryCredentials {
        server: registry.to_owned(),
        username: "AWS".to_owned(),
        password: Secret::new(env.auth_password()),
        expires_at: None,
    };
    cache_round_trip(&docker, env, &repository, Some(credentials)).await;
}

/// Build with several steps, push, remove the local image and the build's cache records,
/// rebuild with `cache_from` the pushed image: every step after FROM must come from the cache.
async fn cache_round_trip(
    docker: &Docker,
    env: &TestEnv,
    repository: &str,
    credentials: Option<RegistryCredentials>,
) {
    let marker = unique("cache");
    let dockerfile = format!(
        "FROM {}\nRUN echo {marker} > /marker\nCOPY app.txt /app.txt\nRUN sha256sum /app.txt > /app.sum\nRUN sleep 1 && echo slow > /slow\n",
        env.base_image()
    );
    let dir = context(&[("Dockerfile", &dockerfile), ("app.txt", "cached app\n")]);
    let first_tag = format!("{repository}:first");
    let second_tag = format!("{repository}:second");
    let _cleanup = Cleanup {
        docker,
        references: vec![first_tag.clone(), second_tag.clone()],
    };
    let docker_credentials = credentials.as_ref().map(|credentials| DockerCredentials {
        username: Some(credentials.username.clone()),
        password: Some(credentials.password.expose().to_owned()),
        serveraddress: Some(credentials.server.clone()),
        ..DockerCredentials::default()
    });

    let mut request = request(dir.path());
    request.tags = vec![first_tag.clone()];
    let (result, _events) = run_build(docker, &request).await;
    let first = result.unwrap_or_else(|error| panic!("first build failed: {error}"));
    push(docker, repository, "first", docker_credentials).await;

    prune_and_remove(docker, &first_tag, &marker).await;
    assert!(
        docker.inspect_image(&first.image_id).await.is_err(),
        "the image is gone"
    );

    request.tags = vec![second_tag.clone()];
    request.cache_from = vec![first_tag];
    request.registry_auth = credentials.iter().cloned().collect();
    let (result, events) = run_build(docker, &request).await;
    let second = result.unwrap_or_else(|error| panic!("rebuild failed: {error}"));

    let steps: Vec<_> = second
        .steps
        .iter()
        .filter(|step| {
            step.instruction()
                .is_some_and(|instruction| instruction != "FROM")
        })
        .collect();
    assert_eq!(steps.len(), 4, "{:#?}", second.steps);
    for step in steps {
        assert!(
            step.cached,
            "not from the cache: {step:?}\nall steps: {:#?}",
            second.steps
        );
    }
    assert!(
        second
            .steps
            .iter()
            .any(|step| step.name.starts_with("importing cache manifest from")),
        "{:#?}",
        second.steps
    );
    assert!(!format!("{events:?}").contains(&env.auth_password()));
    let image = save(docker, &second.image_id).await;
    assert_eq!(text(&image, "marker"), format!("{marker}\n"));

    if credentials.is_some() {
        // Without the credentials the same rebuild finds nothing to reuse.
        prune_and_remove(docker, &second_tag, &marker).await;
        request.registry_auth.clear();
        let (result, _events) = run_build(docker, &request).await;
        let anonymous = result.unwrap_or_else(|error| panic!("anonymous rebuild failed: {error}"));
        assert!(
            anonymous
                .steps
                .iter()
                .any(|step| step.instruction() == Some("RUN") && !step.cached),
            "{:#?}",
            anonymous.steps
        );
    }
}

/// Removes the local image, then prunes every build cache record this build made: the record
/// of the step that wrote `marker` and all that descend from it.
///
/// Not `docker builder prune -af`: with other builds running (CI runs tests in parallel),
/// pruning everything crashed Debian's dockerd 20.10 (a nil dereference in BuildKit 0.8's
/// `GetByBlob` while another build resolved its base image, whose records the prune had just
/// removed). Pruning by id gives this build the same state and leaves the others alone.
async fn prune_and_remove(docker: &Docker, reference: &str, marker: &str) {
    remove(docker, reference)
        .await
        .expect("remove the local image");
    let records = build_cache_records().await;
    let mut doomed: Vec<String> = records
        .iter()
        .filter(|record| record.description.contains(marker))
        .map(|record| record.id.clone())
        .collect();
    assert!(
        !doomed.is_empty(),
        "no build cache record mentions {marker}"
    );
    // Descendants, breadth first; pruned in reverse so children go before their parents.
    let mut index = 0;
    while index < doomed.len() {
        let parent = doomed[index].clone();
        doomed.extend(
            records
                .iter()
                .filter(|record| record.parent == parent)
                .map(|record| record.id.clone()),
        );
        index += 1;
    }
    for id in doomed.iter().rev() {
        docker
            .prune_build(Some(PruneBuildOptions {
                all: Some(true),
                filters: Some(HashMap::from([("id".to_owned(), vec![id.clone()])])),
                ..PruneBuildOptions::default()
            }))
            .await
            .expect("prune a build cache record");
    }
    let left: Vec<_> = build_cache_records()
        .await
        .into_iter()
        .filter(|record| doomed.contains(&record.id))
        .collect();
    assert!(
        left.is_empty(),
        "build cache records survived the prune: {left:?}"
    );
}

#[derive(Debug)]
struct CacheRecord {
    id: String,
    parent: String,
    description: String,
}

/// The daemon's build cache records. bollard 0.21 models `/system/df` as API 1.52 answers it
/// (no record list from older daemons), so this reads the 1.41 answer itself.
async fn build_cache_records() -> Vec<CacheRecord> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::UnixStream::connect("/var/run/docker.sock")
        .await
        .expect("the Docker socket");
    socket
        .write_all(b"GET /v1.41/system/df HTTP/1.0\r\nHost: docker\r\n\r\n")
        .await
        .expect("send");
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await.expect("receive");
    let start = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("an HTTP response")
        + 4;
    let body: serde_json::Value = serde_json::from_slice(&response[start..]).expect("JSON");
    body["BuildCache"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|record| CacheRecord {
            id: record["ID"].as_str().unwrap_or_default().to_owned(),
            parent: record["Parent"].as_str().unwrap_or_default().to_owned(),
            description: record["Description"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        })
        .collect()
}

/// SHA-256 in hex, for a Dockerfile that checks a secret without containing it.
fn sha256_hex(data: &[u8]) -> String {
    let output = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(data)?;
            child.wait_with_output()
        })
        .expect("sha256sum runs");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .expect("a hash")
        .to_owned()
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

/// The most bytes a build's "load build context" step reported transferring.
fn context_bytes_sent(events: &[BuildProgress]) -> u64 {
    events
        .iter()
        .filter_map(|event| match event {
            BuildProgress::Status {
                step,
                name,
                current,
                ..
            } if step == "[internal] load build context" && name.starts_with("transferring") => {
                Some(*current)
            }
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_rebuild_after_a_one_file_change_sends_only_that_file() {
    let Some((env, docker)) = parts("build incremental context").await else {
        return;
    };
    let dockerfile = format!("FROM {}\nCOPY . /ctx\n", env.base_image());
    // Two MiB that do not change between the builds.
    let big: String = (0..32 * 1024).map(|line| format!("{line:063}\n")).collect();
    let dir = context(&[
        ("Dockerfile", &dockerfile),
        ("big.txt", &big),
        ("small.txt", "one\n"),
    ]);
    let tag = format!("{}:latest", unique("envelope-e2e/incremental"));
    let _cleanup = Cleanup {
        docker: &docker,
        references: vec![tag.clone()],
    };
    let mut request = request(dir.path());
    request.tags = vec![tag.clone()];
    let (first, first_events) = run_build(&docker, &request).await;
    first.expect("the first build");
    let first_sent = context_bytes_sent(&first_events);
    assert!(
        first_sent >= big.len() as u64,
        "the first build sends the whole context, reported {first_sent} bytes"
    );

    std::fs::write(dir.path().join("small.txt"), "two\n").expect("edit");
    let (second, second_events) = run_build(&docker, &request).await;
    second.expect("the second build");
    let second_sent = context_bytes_sent(&second_events);
    assert!(
        second_sent < 64 * 1024,
        "only the changed file travels again, reported {second_sent} bytes"
    );
    let image = save(&docker, &tag).await;
    assert_eq!(text(&image, "ctx/small.txt"), "two\n");
    assert_eq!(
        text(&image, "ctx/big.txt"),
        big,
        "the unchanged file is whole"
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

#[tokio::test]
async fn a_context_of_thousands_of_files_behind_a_large_one_is_sent_whole() {
    let Some((env, docker)) = parts("build large context").await else {
        return;
    };
    // While the large file goes out, the daemon asks for thousands of small ones: each request
    // is a tiny HTTP/2 frame, and the session must keep reading them.
    let dockerfile = format!(
        "FROM {}\nCOPY . /ctx\nRUN ls /ctx/files | wc -l > /count && md5sum /ctx/a-large.bin > /large.md5\n",
        env.base_image()
    );
    let dir = context(&[("Dockerfile", &dockerfile)]);
    let large: Vec<u8> = (0..16 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(dir.path().join("a-large.bin"), &large).expect("write");
    std::fs::create_dir(dir.path().join("files")).expect("mkdir");
    for index in 0..4000 {
        std::fs::write(
            dir.path().join(format!("files/{index:04}.txt")),
            format!("file {index}\n"),
        )
        .expect("write");
    }
    let tag = format!("{}:latest", unique("envelope-e2e/large-context"));
    let _cleanup = Cleanup {
        docker: &docker,
        references: vec![tag.clone()],
    };
    let mut request = request(dir.path());
    request.tags = vec![tag.clone()];
    let (result, _events) = run_build(&docker, &request).await;
    result.expect("the build gets the whole context");
    let image = save(&docker, &tag).await;
    assert_eq!(text(&image, "count").trim(), "4000");
    let md5 = Command::new("md5sum")
        .arg(dir.path().join("a-large.bin"))
        .output()
        .expect("md5sum");
    let expected = String::from_utf8_lossy(&md5.stdout);
    let expected = expected.split_whitespace().next().expect("a sum");
    assert!(
        text(&image, "large.md5").starts_with(expected),
        "{}",
        text(&image, "large.md5")
    );
}
