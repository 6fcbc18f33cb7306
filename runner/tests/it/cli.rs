//! The binary: exit codes, output formats and help, run as a user would.

use std::process::Command;

fn runner() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_envelope-runner"));
    command
        .current_dir(crate::workspace_root())
        .env("NO_COLOR", "1");
    command
}

#[test]
fn validate_passes_on_the_shipped_pipelines() {
    let output = runner().arg("validate").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for name in ["api", "tenant", "hq"] {
        assert!(stdout.contains(&format!("pipeline `{name}`")), "{stdout}");
    }
}

#[test]
fn validate_fails_with_exit_code_2_and_locations_on_every_broken_fixture() {
    let folder = crate::fixtures().join("invalid");
    let mut checked = 0;
    let located = regex::Regex::new(r"\.ya?ml:\d+:\d+").unwrap();
    for entry in std::fs::read_dir(&folder).unwrap().flatten() {
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let output = runner().arg("validate").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{}: {stderr}",
            path.display()
        );
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            located.is_match(&stderr),
            "{name}: no file:line:col in\n{stderr}"
        );
        checked += 1;
    }
    assert!(checked >= 15);
}

#[test]
fn validate_json_output_lists_errors_with_positions() {
    let path = crate::fixtures().join("invalid/unknown-key.yaml");
    let output = runner()
        .args(["validate", "--output", "json"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let error = &json[0]["errors"][0];
    assert_eq!(error["line"], 8);
    assert_eq!(error["column"], 7);
    assert_eq!(error["label"], "did you mean `image`?");
}

#[test]
fn a_verify_host_comes_from_the_environment_else_from_envelope_yaml() {
    let url_of = |host: Option<&str>| {
        let mut command = runner();
        command.args(["plan", "hq", "--ref", "v1.2.3", "--output", "json"]);
        match host {
            Some(host) => command.env("HQ_HOST", host),
            None => command.env_remove("HQ_HOST"),
        };
        let plan = plan_json(&mut command);
        let deploy = plan["steps"].as_array().unwrap().last().unwrap().clone();
        deploy["verify"][0]["url"].as_str().unwrap().to_owned()
    };
    assert_eq!(url_of(None), "https://admin.envelope.host/");
    assert_eq!(url_of(Some("127.0.0.1:8443")), "https://127.0.0.1:8443/");
}

/// Runs a `plan --output json` command, which must succeed; its plan.
fn plan_json(command: &mut Command) -> serde_json::Value {
    let output = command.output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn plan_json_of_api_names_every_image_task_and_service() {
    let plan = plan_json(
        runner()
            .args([
                "plan",
                "api",
                "--ref",
                "v1.2.3",
                "--sha",
                "0123456789abcdef0123456789abcdef01234567",
                "--output",
                "json",
            ])
            // The snapshot shows envelope.yaml's host, whatever this shell exports.
            .env_remove("API_HOST"),
    );
    let kinds: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["source", "build", "push", "approval", "migrate", "deploy"]
    );
    assert_eq!(plan["steps"][5]["services"].as_array().unwrap().len(), 4);
    insta::assert_json_snapshot!("cli_plan_api", plan);
}

#[test]
fn plan_of_an_unknown_pipeline_suggests_the_nearest() {
    let output = runner()
        .args(["plan", "apii", "--ref", "v1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("did you mean `api`?"));
}

#[test]
fn schema_is_json_naming_the_stage_kinds() {
    let output = runner().arg("schema").output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let text = schema.to_string();
    for kind in ["build", "approval", "migrate", "deploy"] {
        assert!(text.contains(&format!("\"{kind}\"")), "schema lacks {kind}");
    }
}

#[test]
fn bad_arguments_exit_2_and_help_exits_0() {
    assert_eq!(
        runner().arg("frobnicate").output().unwrap().status.code(),
        Some(2)
    );
    let help = runner().arg("--help").output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("validate") && text.contains("Exit codes"),
        "{text}"
    );
}

/// `plan`'s region, first found wins: --region, the pipeline, envelope.yaml, AWS_REGION.
#[test]
fn plan_takes_the_region_from_the_flag_then_the_files_then_aws_region() {
    let project = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(project.path().join("pipelines")).unwrap();
    let pipeline = |aws: &str| {
        std::fs::write(
            project.path().join("pipelines/app.yaml"),
            format!(
                "source:\n  repository: acme/app\n{aws}stages:\n  - build:\n      image: app\n  - deploy:\n      cluster: c\n      services: [s]\n"
            ),
        )
        .unwrap();
    };
    let region_of = |extra: &[&str]| {
        let output = runner()
            .env("AWS_REGION", "ap-south-1")
            .env_remove("AWS_DEFAULT_REGION")
            .arg("--project")
            .arg(project.path())
            .args(["plan", "app", "--ref", "v1"])
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
            .lines()
            .find_map(|line| line.strip_prefix("aws      region "))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_default()
            .to_owned()
    };
    pipeline("");
    assert_eq!(
        region_of(&[]),
        "ap-south-1",
        "AWS_REGION when no file names one"
    );
    std::fs::write(
        project.path().join("envelope.yaml"),
        "aws:\n  region: eu-west-2\n",
    )
    .unwrap();
    assert_eq!(
        region_of(&[]),
        "eu-west-2",
        "envelope.yaml beats AWS_REGION"
    );
    pipeline("aws:\n  region: eu-central-1\n");
    assert_eq!(
        region_of(&[]),
        "eu-central-1",
        "the pipeline beats envelope.yaml"
    );
    assert_eq!(
        region_of(&["--region", "us-east-1"]),
        "us-east-1",
        "--region beats all"
    );
}

#[test]
fn check_store_reads_every_page_and_says_when_the_store_is_damaged() {
    let directory = tempfile::tempdir().unwrap();
    let store = directory.path().join("state.db");
    let check = || {
        runner()
            .args(["check-store", "--store"])
            .arg(&store)
            .output()
            .unwrap()
    };
    let missing = check();
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no run store"));

    // `history` creates the store; a second page holds the runs table.
    let history = runner()
        .args(["history", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert_eq!(history.status.code(), Some(0), "{history:?}");
    let intact = check();
    assert_eq!(intact.status.code(), Some(0), "{intact:?}");
    assert!(String::from_utf8_lossy(&intact.stdout).contains("every page is intact"));

    let mut bytes = std::fs::read(&store).unwrap();
    assert!(
        bytes.len() >= 2 * 4096,
        "the store has more than its header page"
    );
    bytes[4096..2 * 4096].fill(0xa5);
    std::fs::write(&store, &bytes).unwrap();
    let damaged = check();
    let stderr = String::from_utf8_lossy(&damaged.stderr);
    assert_eq!(damaged.status.code(), Some(7), "{stderr}");
    assert!(
        stderr.contains("is damaged") && stderr.contains("not modified"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&store).unwrap(),
        bytes,
        "the file was left as it was"
    );
}
