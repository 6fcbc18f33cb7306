//! `run --local` like act, through the binary against the real Docker daemon: a working tree
//! (a real git repository) whose pipeline tags and labels its image with `${release.tag}` is
//! built and tagged `local-<short sha>` (`-dirty` with uncommitted changes); `--secret` reaches
//! a `RUN --mount=type=secret` step (the image holds the value's sha256, never the value, and no
//! output shows it); `--env-file` gives the build its `env:` variable; bad `--secret` and
//! `--env-file` input stops before anything runs, with exit code 2.

use crate::build::image::sha256_hex;
use crate::support::docker::RemoveImages;
use crate::support::{run_id, runner, stage, text};
use envelope_tests::env::{TestEnv, parts, unique};
use envelope_tests::git_fixture::WorkRepo;
use std::path::Path;
use std::process::{Command, Output};

/// A working tree whose build reads the `token` secret, `${release.version}`,
/// `${release.tag}` and `${env.GREETING}`, and tags the image `${release.tag}` and `latest`.
fn working_tree(env: &TestEnv, image: &str) -> (tempfile::TempDir, WorkRepo) {
    let dir = tempfile::tempdir().unwrap();
    let repo = WorkRepo::init(dir.path().join("work")).unwrap();
    repo.commit_file(".gitignore", "cache/\n.envelope/\n", "ignore run state")
        .unwrap();
    repo.commit_file(
        "Dockerfile",
        &format!(
            "FROM {}\n\
             ARG APP_VERSION=none\n\
             ARG GREETING=none\n\
             ARG RELEASE=none\n\
             RUN --mount=type=secret,id=token sh -c 'sha256sum < /run/secrets/token | cut -d\" \" -f1 > /token.sha256'\n\
             RUN echo \"$APP_VERSION\" > /version && echo \"$RELEASE\" > /release && echo \"$GREETING\" > /greeting\n",
            env.base_image()
        ),
        "app",
    )
    .unwrap();
    repo.commit_file(
        "pipelines/app.yaml",
        &format!(
            r#"source:
  repository: acme/app
  tags: ["v*"]
aws:
  region: eu-west-2
  account: "000000000000"
  registry: {registry}
env: [GREETING]
stages:
  - build:
      image: {image}
      build_args:
        APP_VERSION: ${{release.version}}
        RELEASE: ${{release.tag}}
        GREETING: ${{env.GREETING}}
      secrets:
        - id: token
          env: E2E_LOCAL_TOKEN_FROM_THE_PIPELINE
      tags: ["${{release.tag}}", latest]
"#,
            registry = env.registry()
        ),
        "pipeline",
    )
    .unwrap();
    (dir, repo)
}

/// `run app --local` in the working tree with `args`.
fn run_local(env: &TestEnv, tree: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
    runner(env, tree)
        .current_dir(tree)
        .env_remove("GREETING")
        .envs(vars.iter().copied())
        .args(["run", "app", "--local"])
        .args(args)
        .output()
        .unwrap()
}

/// A file of an image, read by running it.
fn read_in_image(env: &TestEnv, image: &str, file: &str) -> String {
    let output = Command::new(env.docker_cli())
        .envs(env.vars())
        .args(["run", "--rm", "--entrypoint", "cat", image, file])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test]
async fn a_local_run_tags_a_stand_in_and_takes_secrets_and_env_files_from_the_command_line() {
    let Some((env, _docker)) = parts("local_stand_in").await else {
        return;
    };
    let image = unique("e2e-local/app");
    let (dir, repo) = working_tree(env, &image);
    let short = repo.head().unwrap()[..7].to_owned();
    let stand_in = format!("local-{short}");
    let _cleanup = RemoveImages {
        docker_cli: env.docker_cli().to_owned(),
        references: vec![
            format!("{image}:{stand_in}"),
            format!("{image}:{stand_in}-dirty"),
            format!("{image}:latest"),
        ],
    };
    let secret = unique("s3cr3t-local-token");
    let env_file = dir.path().join("local.env");
    std::fs::write(
        &env_file,
        "# for the build\nexport GREETING=\"hello from the env file\" # a comment\nOTHER=x\n",
    )
    .unwrap();

    let output = run_local(
        env,
        &repo.dir,
        &[
            "--secret",
            "token=env:E2E_LOCAL_TOKEN",
            "--env-file",
            env_file.to_str().unwrap(),
        ],
        &[("E2E_LOCAL_TOKEN", &secret)],
    );
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(!all.contains(&secret), "the secret leaked:\n{all}");
    assert!(
        all.contains(&format!(
            "{stand_in} (a local stand-in for ${{release.tag}}: not a release)"
        )),
        "the output says the tag is a stand-in:\n{all}"
    );
    let tagged = format!("{image}:{stand_in}");
    assert_eq!(
        read_in_image(env, &tagged, "/token.sha256"),
        sha256_hex(secret.as_bytes()),
        "the build step read the --secret value"
    );
    assert_eq!(read_in_image(env, &tagged, "/version"), stand_in);
    assert_eq!(read_in_image(env, &tagged, "/release"), stand_in);
    assert_eq!(
        read_in_image(env, &tagged, "/greeting"),
        "hello from the env file"
    );
    let record = crate::support::status_json(env, &repo.dir, &run_id(&output));
    assert_eq!(
        record["context"]["local_tag"],
        stand_in.as_str(),
        "{record}"
    );
    assert_eq!(stage(&record, "build")["status"], "succeeded", "{record}");
    assert!(
        !record.to_string().contains(&secret),
        "the record holds the secret"
    );

    // A tracked file changed: the stand-in says so. The secret now comes from a file.
    let dockerfile = std::fs::read_to_string(repo.dir.join("Dockerfile")).unwrap();
    std::fs::write(
        repo.dir.join("Dockerfile"),
        format!("{dockerfile}# edited\n"),
    )
    .unwrap();
    let secret_file = dir.path().join("token.txt");
    std::fs::write(&secret_file, &secret).unwrap();
    let from_file = format!("token=file:{}", secret_file.display());
    let output = run_local(
        env,
        &repo.dir,
        &["--secret", &from_file],
        &[("GREETING", "from the environment")],
    );
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(!all.contains(&secret), "the secret leaked:\n{all}");
    let dirty = format!("{image}:{stand_in}-dirty");
    assert_eq!(
        read_in_image(env, &dirty, "/token.sha256"),
        sha256_hex(secret.as_bytes())
    );
    assert_eq!(
        read_in_image(env, &dirty, "/greeting"),
        "from the environment"
    );
}

#[tokio::test]
async fn bad_local_input_stops_before_the_run_with_exit_code_2() {
    let Some((env, _docker)) = parts("local_bad_input").await else {
        return;
    };
    let (dir, repo) = working_tree(env, &unique("e2e-local/refused"));
    let bad_env = dir.path().join("bad.env");
    std::fs::write(&bad_env, "GREETING=hi\nnot a line\n").unwrap();
    let secret = unique("s3cr3t-never-shown");
    for (args, expected) in [
        (
            vec!["--secret", "token"],
            "--secret: write ID=env:NAME (an environment variable) or ID=file:PATH".to_owned(),
        ),
        (
            vec!["--secret", "token=env:E2E_LOCAL_UNSET"],
            "--secret token: environment variable E2E_LOCAL_UNSET is not set".to_owned(),
        ),
        (
            vec!["--secret", "npm=env:E2E_LOCAL_TOKEN"],
            "--secret npm: no build stage of pipeline `app` declares a secret `npm`".to_owned(),
        ),
        (
            vec!["--env-file", bad_env.to_str().unwrap()],
            format!("{}:2: expected `KEY=VALUE`", bad_env.display()),
        ),
    ] {
        let output = run_local(env, &repo.dir, &args, &[("E2E_LOCAL_TOKEN", &secret)]);
        let all = text(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {all}");
        assert!(all.contains(&expected), "{args:?}: {all}");
        assert!(
            !all.contains(&secret),
            "{args:?}: the secret leaked:\n{all}"
        );
        assert!(
            !repo.dir.join(".envelope").exists(),
            "{args:?}: no run store was even opened"
        );
    }
    // Without --local there is no stand-in: a branch run of this pipeline cannot plan.
    let output = runner(env, &repo.dir)
        .args(["run", "app", "--ref", "main"])
        .env("GREETING", "x")
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(2), "{all}");
    assert!(
        all.contains("uses `${release.tag}` but `main` is not a release tag"),
        "{all}"
    );
}
