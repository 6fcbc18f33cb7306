//! What comes from outside the project: a release tag holding shell syntax (a valid git ref,
//! tagged in a real repository) never runs and stops a run before anything is built; the
//! buildspec shell gets the release values as environment variables only; a Dockerfile that
//! leads out of the checkout is refused before the build.

use crate::support::{example_app, runner, text};
use envelope_runner::buildspec;
use envelope_runner::exec::buildspec::{BuildspecContext, CodebuildFacts, codebuild_variables};
use envelope_runner::pipeline::diagnostic::SourceFile;
use envelope_tests::env::{head_manifest, parts, unique};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A marker file the hostile tag would create, unique to this test.
fn marker(test: &str) -> PathBuf {
    PathBuf::from("/tmp").join(unique(&format!("pwned-{test}")))
}

/// `v1$(touch${IFS}<marker>)`: git accepts it as a tag name.
fn hostile_tag(marker: &Path) -> String {
    format!("v1$(touch${{IFS}}{})", marker.display())
}

#[tokio::test]
async fn run_refuses_a_release_tag_with_shell_syntax_before_building() {
    let Some((env, _docker)) = parts("run_refuses_a_release_tag_with_shell_syntax").await else {
        return;
    };
    let marker = marker("run");
    let tag = hostile_tag(&marker);
    let app = example_app();
    app.repo.tag(&tag).unwrap();
    let bare = app.bare_root.join("hello.git");
    app.repo.publish(&bare).unwrap();
    let sha = app.repo.head().unwrap();

    let image = format!("e2e/{}", unique("hostile"));
    let project = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(project.path().join("pipelines")).unwrap();
    std::fs::create_dir_all(project.path().join("buildspecs")).unwrap();
    // The tag would reach a build argument and the buildspec, never an image tag (whose own
    // check would refuse it for another reason).
    std::fs::write(
        project.path().join("pipelines/hello.yaml"),
        format!(
            "source:\n  repository: file://{}\n  tags: [\"v*\"]\naws:\n  region: eu-west-2\n  registry: {}\nstages:\n  - build:\n      image: {image}\n      buildspec: buildspecs/build.yml\n      build_args:\n        APP_VERSION: ${{release.tag}}\n      tags: [\"${{git.short_sha}}\"]\n",
            bare.display(),
            env.registry()
        ),
    )
    .unwrap();
    std::fs::write(
        project.path().join("buildspecs/build.yml"),
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo \"building $CODEBUILD_WEBHOOK_TRIGGER\"\n",
    )
    .unwrap();

    let output = runner(env, project.path())
        .args(["run", "hello", "--ref", &tag, "--until", "push"])
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(2), "{all}");
    assert!(
        all.contains(&format!(
            "the release tag `{tag}` (${{release.tag}}) cannot be used: character 3 is `$`"
        )),
        "{all}"
    );
    assert!(all.contains("Nothing was run"), "{all}");
    for stage in ["[source]", "[build]", "[push]"] {
        assert!(!all.contains(stage), "{stage} ran:\n{all}");
    }
    assert!(!marker.exists(), "the release tag ran as a command");
    let (status, _) = head_manifest(env.registry(), &image, &sha[..7]).await;
    assert_eq!(status, 404, "nothing was pushed");
    let history = runner(env, project.path())
        .args(["history", "hello", "--output", "json"])
        .output()
        .unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap_or_default();
    assert!(
        runs.as_array().is_none_or(|runs| runs.is_empty()),
        "no run was recorded: {}",
        text(&history)
    );
}

#[tokio::test]
async fn the_buildspec_shell_gets_release_values_as_environment_variables_only() {
    // Below the plan's own refusal: even a hostile value that reached the shell is data.
    let marker = marker("shell");
    let tag = hostile_tag(&marker);
    let source = tempfile::tempdir().unwrap();
    let trigger = format!("tag/{tag}");
    let env = codebuild_variables(&CodebuildFacts {
        source_dir: source.path(),
        resolved_source_version: "0123456789abcdef0123456789abcdef01234567",
        build_number: 1,
        project: "hello",
        run_id: "01JRUN",
        start_time_ms: 0,
        initiator: "test",
        webhook_trigger: Some(&trigger),
    });
    let spec = buildspec::compile(&SourceFile::new(
        "buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    commands:\n      - printf 'trigger=%s\\n' \"$CODEBUILD_WEBHOOK_TRIGGER\"\n      - echo ref=$CODEBUILD_WEBHOOK_HEAD_REF\n",
    ))
    .unwrap();
    let context = BuildspecContext {
        source_dir: source.path().to_path_buf(),
        env,
        secret_env: BTreeMap::new(),
    };
    let lines = Arc::new(Mutex::new(Vec::new()));
    let progress = {
        let lines = lines.clone();
        move |progress| {
            if let envelope_runner::exec::buildspec::BuildspecProgress::Line { line, .. } = progress
            {
                lines.lock().unwrap().push(line);
            }
        }
    };
    let outcome = envelope_runner::exec::buildspec::run(&spec, &context, &progress, |_| async {
        Ok::<(), String>(())
    })
    .await
    .unwrap();
    assert!(outcome.succeeded, "{outcome:?}");
    let lines = lines.lock().unwrap().clone();
    assert!(
        lines.contains(&format!("trigger=tag/{tag}")),
        "the value arrived as it is: {lines:?}"
    );
    // Unquoted, a variable is split into words but its `$(…)` is never run.
    assert!(lines.contains(&format!("ref=refs/tags/{tag}")), "{lines:?}");
    assert!(!marker.exists(), "the release value ran as a command");
}

#[tokio::test]
async fn a_dockerfile_that_leads_out_of_the_checkout_is_refused_before_the_build() {
    let Some((env, _docker)) = parts("a_dockerfile_that_leads_out_of_the_checkout").await else {
        return;
    };
    let source = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/zero", source.path().join("Dockerfile")).unwrap();
    let project = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(project.path().join("pipelines")).unwrap();
    std::fs::write(
        project.path().join("pipelines/hello.yaml"),
        "source:\n  repository: acme/hello\nstages:\n  - build:\n      image: hello\n      dockerfile: Dockerfile\n",
    )
    .unwrap();
    let output = runner(env, project.path())
        .args(["run", "hello", "--local", "--source"])
        .arg(source.path())
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("hello.yaml:6:19: dockerfile `Dockerfile` leads outside the build context (it resolves to /dev/zero)"),
        "{all}"
    );
}
