//! A release tag is chosen by whoever publishes the release: `plan` refuses one that holds
//! shell syntax (a valid git ref) before substituting it anywhere, and shows approvers the
//! migration command exactly as it will run.

use std::process::Command;

/// A pipeline that puts the release tag into a build argument, a label and a migration command
/// run by a shell, but not into an image tag (whose own check would refuse it by accident).
const PIPELINE: &str = r#"source:
  repository: acme/app
  tags: ["v*"]
aws:
  region: eu-west-2
  account: "123456789012"
stages:
  - build:
      image: app
      tags: ["${git.short_sha}", latest]
      build_args:
        APP_VERSION: ${release.tag}
      labels:
        release: ${release.tag}
  - approval:
      timeout: 1h
  - migrate:
      cluster: prod
      service: api
      container: api
      command: [sh, -c, "php artisan migrate --force --tag=${release.tag}"]
"#;

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
    std::fs::write(dir.path().join("pipelines/app.yaml"), PIPELINE).unwrap();
    dir
}

fn plan(project: &std::path::Path, git_ref: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_envelope-runner"))
        .current_dir(project)
        .env("NO_COLOR", "1")
        .env_remove("GITHUB_ACTIONS")
        .args(["plan", "app", "--ref", git_ref])
        .output()
        .unwrap()
}

#[test]
fn plan_refuses_a_release_tag_with_shell_syntax() {
    let project = project();
    let marker = project.path().join(format!("pwned-{}", std::process::id()));
    let tag = format!("v1$(touch${{IFS}}{})", marker.display());
    let output = plan(project.path(), &tag);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for expected in [
        format!("the release tag `{tag}` (${{release.tag}}) cannot be used: character 3 is `$`"),
        "may hold only ASCII letters, digits, `.`, `_`, `-`, `/` and `+`".to_string(),
        "Nothing was run".to_string(),
    ] {
        assert!(stderr.contains(&expected), "`{expected}` in:\n{stderr}");
    }
    assert!(
        output.stdout.is_empty(),
        "no plan is printed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(!marker.exists(), "the tag ran as a command");

    // A branch is held to the same rule, and escapes keep the terminal safe.
    let output = plan(project.path(), "main\u{1b}[2J;id");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the branch `main\\u{1b}[2J;id` (${git.branch}) cannot be used"),
        "{stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
}

#[test]
fn plan_shows_the_migration_command_as_it_will_run() {
    let project = project();
    let output = plan(project.path(), "v1.2.3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("command   sh -c 'php artisan migrate --force --tag=v1.2.3'"),
        "{stdout}"
    );
    assert!(stdout.contains("arg       APP_VERSION=v1.2.3"), "{stdout}");
}
