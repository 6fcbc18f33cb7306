//! GitHub Actions mode, run as the runner runs it: the binary in a synthetic Actions environment
//! (variables, a release event file, output and summary files). No Docker: the runs either
//! fail at the source stage or stop at an approval gate right after it.

use envelope_runner::event::Event;
use envelope_runner::report::{
    CommandToken, GithubActionsReporter, Reporter, SummaryLinks, escape_data, escape_property,
    job_summary, output_entry, run_outputs,
};
use envelope_runner::run::{
    ApprovalRecord, RunId, RunRecord, RunStatus, RunTrigger, StageOutputs, StageRecord,
    StageStatus, TriggerKind,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

#[test]
fn data_and_properties_are_escaped_like_the_actions_toolkit() {
    // (input, escaped data, escaped property)
    let cases = [
        ("plain text", "plain text", "plain text"),
        ("100%", "100%25", "100%25"),
        ("a\rb", "a%0Db", "a%0Db"),
        ("a\nb", "a%0Ab", "a%0Ab"),
        ("a\r\nb", "a%0D%0Ab", "a%0D%0Ab"),
        ("key: value", "key: value", "key%3A value"),
        ("a,b", "a,b", "a%2Cb"),
        // `%` first, so an escape sequence in the input survives the round trip.
        ("%0A", "%250A", "%250A"),
        ("::error::x", "::error::x", "%3A%3Aerror%3A%3Ax"),
        (
            "50%: a,b\r\nc",
            "50%25: a,b%0D%0Ac",
            "50%25%3A a%2Cb%0D%0Ac",
        ),
        ("", "", ""),
    ];
    for (input, data, property) in cases {
        assert_eq!(escape_data(input), data, "data of {input:?}");
        assert_eq!(escape_property(input), property, "property of {input:?}");
    }
}

#[test]
fn outputs_use_a_random_heredoc_delimiter_only_for_multi_line_values() {
    assert_eq!(output_entry("run-id", "01abc"), "run-id=01abc\n");
    let entry = output_entry("notes", "line one\nline two");
    let delimiter = entry
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("notes<<"))
        .expect("heredoc form");
    assert_eq!(
        entry,
        format!("notes<<{delimiter}\nline one\nline two\n{delimiter}\n")
    );
}

#[test]
fn validate_annotates_the_broken_pipeline_file() {
    let project = tempfile::tempdir().unwrap();
    std::fs::create_dir(project.path().join("pipelines")).unwrap();
    std::fs::copy(
        crate::fixtures().join("invalid/unknown-key.yaml"),
        project.path().join("pipelines/broken.yaml"),
    )
    .unwrap();
    let job = Job::new(project.path());
    let output = job
        .runner()
        .args(["validate", "pipelines/broken.yaml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines[0],
        "::error file=pipelines/broken.yaml,line=8,col=7,title=envelope-runner%3A invalid pipeline::\
         unknown key `imgae` in `stages[0].build` (did you mean `image`?)%0Ahelp: rename `imgae` to `image`"
    );
    // The normal rendering follows, quoting the file with workflow commands stopped.
    assert!(
        stderr.contains(" --> pipelines/broken.yaml:8:7"),
        "{stderr}"
    );
    assert_eq!(
        processed_commands(&stderr),
        [lines[0]],
        "only the annotation is a command:\n{stderr}"
    );

    // Outside Actions: the rendering only.
    let output = Command::new(env!("CARGO_BIN_EXE_envelope-runner"))
        .current_dir(project.path())
        .env_clear()
        .args(["validate", "pipelines/broken.yaml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!stderr.contains("::"), "{stderr}");
    assert!(
        stderr.contains(" --> pipelines/broken.yaml:8:7"),
        "{stderr}"
    );
}

#[test]
fn plan_takes_the_release_tag_and_commit_from_the_event() {
    let folder = tempfile::tempdir().unwrap();
    let job = Job::new(folder.path());
    let plan = |extra: &[&str]| {
        let output = job
            .runner()
            .current_dir(crate::workspace_root())
            .args(["plan", "api", "--output", "json"])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let from_event = plan(&[]);
    assert_eq!(from_event["trigger"]["git_ref"], "refs/tags/v1.2.3");
    assert_eq!(from_event["trigger"]["tag"], "v1.2.3");
    assert_eq!(from_event["trigger"]["sha"], SHA);
    assert_eq!(from_event["trigger"]["short_sha"], &SHA[..7]);
    assert_eq!(from_event["steps"][0]["reference"], "refs/tags/v1.2.3");
    assert_eq!(from_event["steps"][0]["expected_sha"], SHA);
    assert!(
        from_event["steps"][2]["tags"]
            .as_array()
            .unwrap()
            .contains(&"v1.2.3".into()),
        "{from_event}"
    );

    // An explicit --ref wins, and the event's commit does not go with it.
    let explicit = plan(&["--ref", "v9.9.9"]);
    assert_eq!(explicit["trigger"]["tag"], "v9.9.9");
    assert_eq!(explicit["trigger"]["sha"], serde_json::Value::Null);

    // Outside Actions there is nothing to default to.
    let output = Command::new(env!("CARGO_BIN_EXE_envelope-runner"))
        .current_dir(crate::workspace_root())
        .env_clear()
        .args(["plan", "api"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("give --ref"));
}

#[test]
fn a_failed_run_masks_secrets_first_and_writes_outputs_and_summary() {
    let project = tempfile::tempdir().unwrap();
    let root = project.path();
    write(
        &root.join("pipelines/app.yaml"),
        &format!(
            r#"source:
  repository: file://{}/missing-repository
  tags: ["v*"]
  token_env: DEPLOY_TOKEN
aws:
  registry: 127.0.0.1:5000
stages:
  - build:
      image: app
      tags: ["${{release.tag}}"]
      secrets:
        - id: npm
          env: NPM_TOKEN
        - id: license
          file: secrets/license.txt
  - approval:
      timeout: 1h
"#,
            root.display()
        ),
    );
    write(&root.join("secrets/license.txt"), "license-key-abc\n");
    let job = Job::new(root);
    let log = job.run_logged(
        job.runner()
            .args(["run", "app"])
            .env("GITHUB_TOKEN", "ghs_topsecret-1234")
            .env("ENVELOPE_REGISTRY_PASSWORD", "reg%pass,word:1")
            .env("AWS_SECRET_ACCESS_KEY", "aws-secret-key-9")
            .env("DEPLOY_TOKEN", "deploy-token-5678")
            .env("NPM_TOKEN", "npm-line-one\r\nnpm-line-two\n"),
        1,
    );

    // Masks come before anything else, every line of a multi-line value on its own.
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines[..6],
        [
            "::add-mask::ghs_topsecret-1234",
            "::add-mask::reg%25pass,word:1",
            "::add-mask::aws-secret-key-9",
            "::add-mask::deploy-token-5678",
            "::add-mask::npm-line-one",
            "::add-mask::npm-line-two",
        ],
        "{log}"
    );
    assert_eq!(lines[6], "::add-mask::license-key-abc", "{log}");
    let rest = lines[7..].join("\n");
    let outputs = std::fs::read_to_string(&job.output_file).unwrap();
    let summary = std::fs::read_to_string(&job.summary_file).unwrap();
    for secret in [
        "ghs_topsecret",
        "reg%pass",
        "aws-secret-key",
        "deploy-token",
        "npm-line",
        "license-key",
    ] {
        for (name, text) in [("log", &rest), ("outputs", &outputs), ("summary", &summary)] {
            assert!(!text.contains(secret), "{secret} in the {name}:\n{text}");
        }
    }

    // A group per stage; the failure as an error annotation; nothing else is a command.
    let run = run_id_in(&outputs);
    let error = format!(
        "::error title=Stage source failed::no git repository at {}/missing-repository: \
         check the repository URL and that the token can read it",
        root.display()
    );
    let processed = processed_commands(&log);
    assert_eq!(
        processed[7..],
        ["::group::source", "::endgroup::", error.as_str()],
        "{log}"
    );
    assert!(log.contains(&format!("run {run} failed")), "{log}");

    assert_eq!(outputs, format!("run-id={run}\nstatus=failed\n"));
    insta::assert_snapshot!("failed_run_summary", redact(&summary, &run, root));
}

#[test]
fn until_approval_is_a_green_job_and_a_later_job_approves_and_resumes() {
    let folder = tempfile::tempdir().unwrap();
    let root = folder.path();
    let sha = release_repository(&root.join("app"), "v1.2.3");
    write(
        &root.join("pipelines/gate.yaml"),
        &format!(
            "source:\n  repository: file://{}/app\n  tags: [\"v*\"]\nstages:\n  - approval:\n      timeout: 1h\n",
            root.display()
        ),
    );
    let store = root.join("shared/state.db");
    let store = store.to_str().unwrap();

    // Job 1: up to the gate. Exit 0, the run waits in the store.
    let build = Job::new(root).with_sha(&sha);
    let log = build.run_logged(
        build
            .runner()
            .args(["run", "gate", "--until", "approval", "--store", store]),
        0,
    );
    let outputs = std::fs::read_to_string(&build.output_file).unwrap();
    let run = run_id_in(&outputs);
    assert_eq!(outputs, format!("run-id={run}\nstatus=waiting\n"));
    let processed = processed_commands(&log);
    let names: Vec<&str> = processed.iter().map(|line| command_name(line)).collect();
    assert_eq!(
        names,
        [
            "group", "endgroup", "group", "notice", "endgroup", "warning"
        ],
        "{log}"
    );
    assert!(
        processed[5].contains("--store dynamodb://TABLE"),
        "a store on the runner cannot be shared: {}",
        processed[5]
    );
    insta::assert_snapshot!(
        "waiting_run_summary",
        redact(
            &std::fs::read_to_string(&build.summary_file).unwrap(),
            &run,
            root
        )
    );

    // Job 2, behind the environment's reviewers: approve, then resume.
    let deploy = Job::new(root).with_sha(&sha);
    let approve = deploy
        .runner()
        .args(["approve", &run, "--store", store])
        .args(["--comment", "approved in GitHub environment"])
        .output()
        .unwrap();
    assert_eq!(
        approve.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&approve.stderr)
    );
    deploy.run_logged(deploy.runner().args(["resume", &run, "--store", store]), 0);
    assert_eq!(
        std::fs::read_to_string(&deploy.output_file).unwrap(),
        format!("run-id={run}\nstatus=succeeded\n")
    );
    insta::assert_snapshot!(
        "resumed_run_summary",
        redact(
            &std::fs::read_to_string(&deploy.summary_file).unwrap(),
            &run,
            root
        )
    );

    // Outside Actions, stopping at the gate keeps its documented exit code.
    let output = Command::new(env!("CARGO_BIN_EXE_envelope-runner"))
        .current_dir(root)
        .env_clear()
        .args(["run", "gate", "--until", "approval", "--ref", "v1.2.3"])
        .args(["--store", store, "--cache-dir"])
        .arg(root.join("cache"))
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_reporter_keeps_stage_output_from_issuing_workflow_commands() {
    let token = CommandToken::random();
    let mut reporter = GithubActionsReporter::new(Vec::new(), token.clone());
    let log = |line: &str| Event::Log {
        stage: "build".into(),
        line: line.into(),
    };
    for event in [
        Event::StageStarted {
            stage: "build".into(),
            kind: envelope_runner::run::StageKind::Build,
        },
        log("::add-mask::x"),
        log("   ::set-output name=digest::sha256:forged"),
        log("RUN echo ##[error]forged"),
        log("::endgroup::"),
        log("::stop-commands::guessed"),
        log("::guessed::"),
        log("::warning::after a guessed resume"),
        Event::BuildStep {
            stage: "build".into(),
            step: "RUN echo ::error::x".into(),
            cached: false,
            completed: true,
            seconds: Some(1.0),
            error: Some("::error::exit code 3".into()),
        },
        Event::Output {
            stage: "build".into(),
            key: "note".into(),
            value: "##[add-mask]value".into(),
        },
        Event::Notice {
            stage: Some("build".into()),
            message: "two\n::error::lines".into(),
        },
        log("::notice::still stopped after our notice"),
        Event::StageFinished {
            stage: "build".into(),
            status: StageStatus::Failed,
            seconds: 1.0,
            error: Some("step failed:\n::error::forged in the error".into()),
        },
        Event::RunFinished {
            run: RunId("01run".into()),
            status: RunStatus::Failed,
            seconds: 1.0,
        },
    ] {
        reporter.event(&event);
    }
    reporter.finish();
    // What the command prints after the run (here a forged annotation) is still inert.
    let output = format!(
        "{}\n{}::warning::printed after the run\n",
        token.stop_line(),
        String::from_utf8(reporter.into_inner()).unwrap()
    );
    assert_eq!(
        processed_commands(&output),
        [
            "::group::build",
            "::notice title=envelope-runner%3A build::two%0A::error::lines",
            "::endgroup::",
            "::error title=Stage build failed::step failed:%0A::error::forged in the error",
        ],
        "{output}"
    );
}

#[test]
fn outputs_and_summary_of_a_deployed_run() {
    let record = deployed_record();
    assert_eq!(
        run_outputs(&record),
        [
            ("run-id", "01jd4x7q8e3v5w6y7z8a9b0c1d"),
            ("status", "succeeded"),
            (
                "image",
                "123456789012.dkr.ecr.eu-west-2.amazonaws.com/envelope-api@sha256:4f1c"
            ),
            ("image-digest", "sha256:4f1c"),
            (
                "task-definition-envelope-prod-api",
                "arn:aws:ecs:eu-west-2:123456789012:task-definition/envelope-prod-api:43"
            ),
            (
                "task-definition-envelope-prod-worker",
                "arn:aws:ecs:eu-west-2:123456789012:task-definition/envelope-prod-worker:17"
            ),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
    );
    let links = SummaryLinks {
        workflow_run: Some("https://github.com/acme/deploy/actions/runs/42".into()),
        commit: Some(format!("https://github.com/epactltd/api/commit/{SHA}")),
        release: Some("https://github.com/epactltd/api/releases/tag/v1.2.3".into()),
    };
    insta::assert_snapshot!(
        "deployed_run_summary",
        job_summary(&record, &BTreeMap::new(), &links, &|text| text.to_owned())
    );
}

/// A GitHub Actions job: its environment variables and files, in a temporary folder.
struct Job {
    folder: PathBuf,
    variables: Vec<(String, String)>,
    output_file: PathBuf,
    summary_file: PathBuf,
}

impl Job {
    /// A job triggered by publishing release v1.2.3 (commit `SHA`), working in `folder`.
    fn new(folder: &Path) -> Self {
        let jobs = folder.join("jobs");
        std::fs::create_dir_all(&jobs).unwrap();
        let files = tempfile::Builder::new().tempdir_in(&jobs).unwrap().keep();
        let event = files.join("event.json");
        write(
            &event,
            r#"{"action": "published", "release": {"tag_name": "v1.2.3", "draft": false}}"#,
        );
        let output_file = files.join("output");
        let summary_file = files.join("step_summary");
        let variables = [
            ("GITHUB_ACTIONS", "true"),
            ("CI", "true"),
            ("GITHUB_EVENT_NAME", "release"),
            ("GITHUB_EVENT_PATH", event.to_str().unwrap()),
            ("GITHUB_REF", "refs/tags/v1.2.3"),
            ("GITHUB_REF_NAME", "v1.2.3"),
            ("GITHUB_REF_TYPE", "tag"),
            ("GITHUB_SHA", SHA),
            ("GITHUB_RUN_ID", "9876543210"),
            ("GITHUB_RUN_ATTEMPT", "1"),
            ("GITHUB_ACTOR", "octocat"),
            ("GITHUB_REPOSITORY", "acme/deploy"),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_WORKSPACE", folder.to_str().unwrap()),
            ("GITHUB_OUTPUT", output_file.to_str().unwrap()),
            ("GITHUB_STEP_SUMMARY", summary_file.to_str().unwrap()),
            ("NO_COLOR", "1"),
        ]
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .to_vec();
        Job {
            folder: folder.to_path_buf(),
            variables,
            output_file,
            summary_file,
        }
    }

    fn with_sha(mut self, sha: &str) -> Self {
        for (key, value) in &mut self.variables {
            if key == "GITHUB_SHA" {
                *value = sha.to_owned();
            }
        }
        self
    }

    /// The binary in this job's environment and nothing else.
    fn runner(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_envelope-runner"));
        command
            .current_dir(&self.folder)
            .env_clear()
            .envs(self.variables.iter().map(|(k, v)| (k, v)))
            .env("ENVELOPE_CACHE_DIR", self.folder.join("cache"));
        command
    }

    /// Run with standard output and standard error into one file, as the runner's log sees
    /// them in order; check the exit code; return the log.
    fn run_logged(&self, command: &mut Command, expected_code: i32) -> String {
        let path = tempfile::NamedTempFile::new_in(&self.folder)
            .unwrap()
            .into_temp_path();
        let file = std::fs::File::create(&path).unwrap();
        let status = command
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .status()
            .unwrap();
        let log = std::fs::read_to_string(&path).unwrap();
        assert_eq!(status.code(), Some(expected_code), "{log}");
        log
    }
}

/// The workflow commands the Actions runner would act on in `output`, in order, without the
/// `stop-commands` switch itself: v2 commands (`::name ...::data` after leading spaces) and v1
/// commands (`##[name ...]data` anywhere in a line), none while commands are stopped except the
/// resume token. Stricter than the runner, which ignores names it does not know.
fn processed_commands(output: &str) -> Vec<&str> {
    let mut stopped_by: Option<String> = None;
    let mut processed = Vec::new();
    for line in output.lines() {
        let v2 = line.trim_start().strip_prefix("::").and_then(|rest| {
            let end = rest.find("::")?;
            Some((rest[..end].to_owned(), rest[end + 2..].to_owned()))
        });
        let v1 = || {
            let start = line.find("##[")? + 3;
            let end = start + line[start..].find(']')?;
            Some((line[start..end].to_owned(), line[end + 1..].to_owned()))
        };
        let Some((info, data)) = v2.or_else(v1) else {
            continue;
        };
        let name = info.split(' ').next().unwrap_or_default().to_owned();
        match &stopped_by {
            Some(token) if *token == name => stopped_by = None,
            Some(_) => {}
            None if name == "stop-commands" => stopped_by = Some(data),
            None => processed.push(line),
        }
    }
    processed
}

fn command_name(line: &str) -> &str {
    line.trim_start_matches(':')
        .split([' ', ':'])
        .next()
        .unwrap_or_default()
}

fn run_id_in(outputs: &str) -> String {
    let run = outputs
        .lines()
        .find_map(|line| line.strip_prefix("run-id="))
        .unwrap_or_else(|| panic!("no run-id output in {outputs:?}"))
        .to_owned();
    assert!(
        regex::Regex::new("^[0-9a-z]{26}$").unwrap().is_match(&run),
        "{run}"
    );
    run
}

/// The summary without what changes between test runs: the run id, times, durations and the
/// temporary folder.
fn redact(summary: &str, run: &str, folder: &Path) -> String {
    let summary = summary
        .replace(run, "[RUN]")
        .replace(folder.to_str().unwrap(), "[FOLDER]");
    let times =
        regex::Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)").unwrap();
    let summary = times.replace_all(&summary, "[TIME]");
    let durations = regex::Regex::new(r"\| (\d+h )?(\d+m )?\d+[sm] \|").unwrap();
    durations
        .replace_all(&summary, "| [DURATION] |")
        .into_owned()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A git repository with one commit tagged `tag`; returns the commit.
fn release_repository(path: &Path, tag: &str) -> String {
    let repository = git2::Repository::init(path).unwrap();
    write(&path.join("README.md"), "the app\n");
    let mut index = repository.index().unwrap();
    index.add_path(Path::new("README.md")).unwrap();
    let tree = repository.find_tree(index.write_tree().unwrap()).unwrap();
    // A fixed time makes the commit, and so the summaries, the same on every run.
    let signature = git2::Signature::new(
        "Release Bot",
        "release@example.com",
        &git2::Time::new(1_790_000_000, 0),
    )
    .unwrap();
    let commit = repository
        .commit(Some("HEAD"), &signature, &signature, "release", &tree, &[])
        .unwrap();
    let object = repository.find_object(commit, None).unwrap();
    repository.tag_lightweight(tag, &object, false).unwrap();
    commit.to_string()
}

fn deployed_record() -> RunRecord {
    let stage = |name: &str, kind: &str, started: &str, finished: &str, outputs| StageRecord {
        name: name.into(),
        kind: kind.parse().unwrap(),
        status: StageStatus::Succeeded,
        started_at: Some(format!("2026-11-26T09:{started}Z")),
        finished_at: Some(format!("2026-11-26T09:{finished}Z")),
        outputs,
        error: None,
    };
    let image = "123456789012.dkr.ecr.eu-west-2.amazonaws.com/envelope-api@sha256:4f1c";
    RunRecord {
        id: RunId("01jd4x7q8e3v5w6y7z8a9b0c1d".into()),
        pipeline: "api".into(),
        status: RunStatus::Succeeded,
        trigger: RunTrigger {
            kind: TriggerKind::GithubActions {
                run_id: "42".into(),
                actor: "release-bot".into(),
            },
            git_ref: "refs/tags/v1.2.3".into(),
            sha: Some(SHA.into()),
            tag: Some("v1.2.3".into()),
        },
        created_at: "2026-11-26T09:00:00Z".into(),
        finished_at: Some("2026-11-26T10:02:30Z".into()),
        context: BTreeMap::new(),
        stages: vec![
            stage(
                "source",
                "source",
                "00:00",
                "00:04",
                StageOutputs {
                    sha: Some(SHA.into()),
                    ..StageOutputs::default()
                },
            ),
            stage("build", "build", "00:04", "03:10", StageOutputs::default()),
            stage(
                "push",
                "push",
                "03:10",
                "03:25",
                StageOutputs {
                    image: Some(image.into()),
                    digest: Some("sha256:4f1c".into()),
                    ..StageOutputs::default()
                },
            ),
            stage(
                "approval",
                "approval",
                "03:25",
                "58:00",
                StageOutputs {
                    approval: Some(ApprovalRecord {
                        approved: true,
                        by: "jane_doe".into(),
                        at: "2026-11-26T09:58:00Z".into(),
                        comment: Some("approved in GitHub environment | prod".into()),
                    }),
                    ..StageOutputs::default()
                },
            ),
            stage(
                "migrate",
                "migrate",
                "58:00",
                "59:12",
                StageOutputs {
                    exit_code: Some(0),
                    ..StageOutputs::default()
                },
            ),
            stage(
                "deploy",
                "deploy",
                "59:12",
                "59:59",
                StageOutputs {
                    task_definitions: [
                        (
                            "envelope-prod-api",
                            "arn:aws:ecs:eu-west-2:123456789012:task-definition/envelope-prod-api:43",
                        ),
                        (
                            "envelope-prod-worker",
                            "arn:aws:ecs:eu-west-2:123456789012:task-definition/envelope-prod-worker:17",
                        ),
                    ]
                    .map(|(service, arn)| (service.to_owned(), arn.to_owned()))
                    .into(),
                    ..StageOutputs::default()
                },
            ),
        ],
    }
}
