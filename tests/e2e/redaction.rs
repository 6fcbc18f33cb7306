//! Secrets never show, in any mode: a buildspec and a Dockerfile step that print build
//! secrets (whole, split across two writes, multi-line, base64 and URL-encoded) through the
//! `envelope-runner` binary against the real daemon and registry; the terminal output (text
//! and JSON lines), `logs`, `status`, the final error and the store file never hold a value.
//! An approval webhook URL is shown as scheme and host only.

use crate::support::{project_with, run_id, runner, text};
use base64::Engine as _;
use envelope_tests::env::{TestEnv, parts, unique};
use envelope_tests::git_fixture::WorkRepo;
use std::path::Path;

/// A repository whose Dockerfile prints the `token` build secret and fails, tagged `v1.0.0`;
/// returns the temporary directory and the bare repository's URL.
fn app(env: &TestEnv) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let repo = WorkRepo::init(dir.path().join("work")).unwrap();
    repo.commit_file(
        "Dockerfile",
        &format!(
            "FROM {}\nRUN --mount=type=secret,id=token sh -c 'echo \"leak $(cat /run/secrets/token)\"; exit 3'\n",
            env.base_image()
        ),
        "app",
    )
    .unwrap();
    repo.tag("v1.0.0").unwrap();
    let bare = dir.path().join("app.git");
    repo.publish(&bare).unwrap();
    (dir, format!("file://{}", bare.display()))
}

/// Every form of a secret that must not appear anywhere.
fn forms(value: &str) -> Vec<String> {
    let mut forms = vec![
        value.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(value),
        percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
            .to_string(),
    ];
    forms.extend(value.lines().map(str::to_owned));
    forms
}

fn assert_clean(what: &str, text: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{what} shows a secret form {secret:?}:\n{text}"
        );
    }
}

#[tokio::test]
async fn build_secrets_are_redacted_in_every_output_and_in_the_store() {
    let Some((env, _docker)) = parts("redaction").await else {
        return;
    };
    let token = format!("c@nary/{}", unique("tok"));
    let key_line = unique("MIIEkeyline");
    let pem = format!("-----BEGIN TEST KEY-----\n{key_line}\n-----END TEST KEY-----");
    let (_app, url) = app(env);
    let image = format!("e2e/{}", unique("redaction"));
    let project = project_with(&url, env.registry(), &image, "", "");
    let pipeline_path = project.path().join("pipelines/hello.yaml");
    let pipeline = std::fs::read_to_string(&pipeline_path).unwrap().replace(
        "      tags: [",
        "      buildspec: buildspecs/build.yml\n      secrets:\n        - {id: token, env: APP_TOKEN}\n        - {id: key, env: APP_KEY}\n      tags: [",
    );
    std::fs::write(&pipeline_path, pipeline).unwrap();
    let encoded = percent_encoding::utf8_percent_encode(&token, percent_encoding::NON_ALPHANUMERIC);
    // Whole, split across two writes with a pause between them, base64, URL-encoded (the
    // command text itself carries that form) and a multi-line value.
    let buildspec = format!(
        "version: 0.2\nphases:\n  pre_build:\n    commands:\n\
         \x20     - echo \"auth is $APP_TOKEN\"\n\
         \x20     - printf 'split %s' \"${{APP_TOKEN%????}}\"; sleep 0.3; printf '%s\\n' \"${{APP_TOKEN#\"${{APP_TOKEN%????}}\"}}\"\n\
         \x20     - printf '%s' \"$APP_TOKEN\" | base64\n\
         \x20     - echo 'query token={encoded}'\n\
         \x20     - echo \"$APP_KEY\"\n"
    );
    std::fs::create_dir_all(project.path().join("buildspecs")).unwrap();
    std::fs::write(project.path().join("buildspecs/build.yml"), buildspec).unwrap();
    let mut secrets = forms(&token);
    secrets.extend(forms(&pem));

    let command = |args: &[&str]| {
        let mut command = runner(env, project.path());
        command
            .env("APP_TOKEN", &token)
            .env("APP_KEY", &pem)
            .args(args);
        command.output().unwrap()
    };
    let output = command(&["run", "hello", "--ref", "v1.0.0", "--until", "push"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert_clean("the run's output", &all, &secrets);
    // Redacted, not dropped: every line that carried a secret is there with the marker.
    for line in [
        "auth is [REDACTED]",
        "split [REDACTED]",
        "query token=[REDACTED]",
        "leak [REDACTED]",
    ] {
        assert!(all.contains(line), "no `{line}` in {all}");
    }
    assert!(
        all.lines()
            .filter(|line| line.trim_end().ends_with("[REDACTED]"))
            .count()
            >= 7,
        "{all}"
    );
    let id = run_id(&output);

    let json = command(&[
        "run",
        "hello",
        "--ref",
        "v1.0.0",
        "--until",
        "push",
        "--log-format",
        "json",
    ]);
    let json_text = text(&json);
    assert_eq!(json.status.code(), Some(1), "{json_text}");
    assert_clean("JSON lines", &json_text, &secrets);
    assert!(json_text.contains("auth is [REDACTED]"), "{json_text}");

    for args in [
        vec!["logs", id.as_str()],
        vec!["status", id.as_str()],
        vec!["status", id.as_str(), "--output", "json"],
        vec!["history", "hello"],
    ] {
        let output = command(&args);
        let shown = text(&output);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {shown}");
        assert_clean(&format!("`{}`", args.join(" ")), &shown, &secrets);
    }
    let logs = text(&command(&["logs", &id]));
    assert!(logs.contains("auth is [REDACTED]"), "{logs}");
    assert!(logs.contains("leak [REDACTED]"), "{logs}");

    // In GitHub Actions, inspecting commands mask the job's secrets and fence their output
    // (nothing they print from the store is read as a workflow command).
    let github_token = unique("ghs_token");
    for args in [vec!["logs", id.as_str()], vec!["status", id.as_str()]] {
        let output = runner(env, project.path())
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_TOKEN", &github_token)
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            lines.first().copied(),
            Some(format!("::add-mask::{github_token}").as_str()),
            "{stderr}"
        );
        let token = lines
            .iter()
            .find_map(|line| line.strip_prefix("::stop-commands::"))
            .unwrap_or_else(|| panic!("`{}` does not fence its output: {stderr}", args[0]));
        assert_eq!(
            lines.last().copied(),
            Some(format!("::{token}::").as_str()),
            "{stderr}"
        );
        assert!(!String::from_utf8_lossy(&output.stdout).is_empty());
    }

    assert_store_clean(project.path(), &secrets);
}

/// No secret form in any file of the project's store (the SQLite database and its journal).
fn assert_store_clean(project: &Path, secrets: &[String]) {
    let mut files = 0;
    for entry in walk(project) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        if !name.contains(".db") && !name.contains("sqlite") {
            continue;
        }
        files += 1;
        let bytes = std::fs::read(&entry).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert_clean(&entry.display().to_string(), &text, secrets);
    }
    assert!(files > 0, "no store file under {}", project.display());
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() && !path.ends_with("cache") {
            out.extend(walk(&path));
        } else if path.is_file() {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn an_approval_webhook_url_shows_scheme_and_host_only() {
    let Some((env, _docker)) = parts("webhook url").await else {
        return;
    };
    let secret_path = unique("T0B0sekrit");
    let hook = format!("https://hooks.example.com/services/{secret_path}?token=abc123");
    let project = project_with(
        "file:///nonexistent.git",
        env.registry(),
        "e2e/webhook",
        "",
        &format!("  - approval:\n      timeout: 1h\n      notify:\n        webhook: {hook}\n"),
    );
    for args in [
        vec!["plan", "hello", "--ref", "v1.0.0"],
        vec!["plan", "hello", "--ref", "v1.0.0", "--output", "json"],
    ] {
        let output = runner(env, project.path()).args(&args).output().unwrap();
        let shown = text(&output);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {shown}");
        assert!(shown.contains("https://hooks.example.com"), "{shown}");
        assert_clean("plan", &shown, &[secret_path.clone(), "abc123".into()]);
    }
}
