//! What a built image holds: labels, tags and build args, the files `.dockerignore` leaves
//! out, the target stage of a multi-stage Dockerfile, and a secret readable in its step but
//! absent from every layer, the history and the progress.

use std::collections::BTreeMap;
use std::process::Command;

use envelope_runner::exec::build::{BuildProgress, BuildSecret};
use envelope_runner::secret::Secret;

use super::{contains, context, request, run_build, save, text};
use crate::support::docker::RemoveImages;
use envelope_tests::env::{parts, unique};

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
    let _cleanup = RemoveImages {
        docker_cli: env.docker_cli().to_owned(),
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
    let _cleanup = RemoveImages {
        docker_cli: env.docker_cli().to_owned(),
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
    let _cleanup = RemoveImages {
        docker_cli: env.docker_cli().to_owned(),
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

/// SHA-256 in hex, for a Dockerfile that checks a secret without containing it.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
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
