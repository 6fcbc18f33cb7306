//! `run --local`'s own input errors, as a user reads them: a malformed or unknown `--secret`,
//! one whose variable is unset, an `--env-file` line that is not `KEY=VALUE`, and the options
//! without `--local`. Each stops before a store is opened or Docker is reached, with exit code 2.

use std::path::Path;
use std::process::Command;

/// A project whose pipeline declares the build secret `composer_auth` and the variable
/// `GREETING`.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
    std::fs::write(
        dir.path().join("pipelines/api.yaml"),
        "source:\n  repository: acme/api\nenv: [GREETING]\nstages:\n  - build:\n      image: api\n      secrets:\n        - id: composer_auth\n          env: COMPOSER_AUTH\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bad.env"),
        "# settings\nGREETING=hi\nGREETING hello\n",
    )
    .unwrap();
    dir
}

/// Exit code and standard error of `run api --local ARGS` in `project`, with the project's
/// path written as `<project>`.
fn run_local(project: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_envelope-runner"))
        .current_dir(project)
        .env("NO_COLOR", "1")
        .env_remove("ENVELOPE_STORE")
        .env_remove("E2E_UNSET_VARIABLE")
        .args(["run", "api"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        !project.join(".envelope").exists(),
        "no store is opened for input the command refuses"
    );
    format!(
        "exit {:?}\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
            .replace(&project.display().to_string(), "<project>")
    )
}

#[test]
fn bad_secret_and_env_file_arguments_are_named() {
    let project = project();
    let dir = project.path();
    let cases = [
        (
            "secret_without_a_source",
            vec!["--local", "--secret", "composer_auth"],
        ),
        (
            "secret_from_an_unknown_place",
            vec!["--local", "--secret", "composer_auth=vault:x"],
        ),
        (
            "secret_from_an_unset_variable",
            vec![
                "--local",
                "--secret",
                "composer_auth=env:E2E_UNSET_VARIABLE",
            ],
        ),
        (
            "secret_from_a_missing_file",
            vec!["--local", "--secret", "composer_auth=file:missing.json"],
        ),
        (
            "secret_no_build_declares",
            vec!["--local", "--secret", "npm_token=file:bad.env"],
        ),
        (
            "env_file_with_a_bad_line",
            vec!["--local", "--env-file", "bad.env"],
        ),
        (
            "secret_without_local",
            vec!["--secret", "composer_auth=env:HOME"],
        ),
    ];
    for (name, args) in cases {
        let rendered = run_local(dir, &args);
        assert!(rendered.starts_with("exit Some(2)\n"), "{name}: {rendered}");
        insta::assert_snapshot!(name, rendered);
    }
}
