//! buildspec end-to-end tests: real buildspecs run by real bash (and dash as `/bin/sh`) in
//! temporary source directories, with CodeBuild's phase semantics checked line by line. The
//! Docker test skips (with a note) when `docker info` fails, unless ENVELOPE_TEST_REQUIRE_DOCKER
//! is set.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envelope_runner::buildspec::{self, Buildspec};
use envelope_runner::exec::buildspec::{
    BuildspecContext, BuildspecOutcome, BuildspecProgress, CodebuildFacts, PhaseStatus,
    codebuild_variables, run,
};
use envelope_runner::pipeline::diagnostic::SourceFile;
use envelope_runner::secret::Secret;
use tempfile::TempDir;

fn compile(text: &str) -> Buildspec {
    buildspec::compile(&SourceFile::new("buildspec.yml", text))
        .unwrap_or_else(|diagnostics| panic!("{}", diagnostics.render(false)))
}

/// What happened, in order, as short strings: `start install`, `$ echo hi`, `hi`,
/// `end install succeeded`, `notice …`, `image build`.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, entry: String) {
        self.0.lock().unwrap().push(entry);
    }

    fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Only the output lines.
    fn lines(&self) -> Vec<String> {
        self.entries()
            .into_iter()
            .filter(|entry| !is_marker(entry))
            .collect()
    }

    fn record(&self, progress: BuildspecProgress) {
        self.push(match progress {
            BuildspecProgress::PhaseStarted { phase } => format!("start {phase}"),
            BuildspecProgress::Command { command, .. } => format!("$ {command}"),
            BuildspecProgress::Line { line, .. } => line,
            BuildspecProgress::PhaseFinished { phase, status, .. } => {
                format!("end {phase} {status}")
            }
            BuildspecProgress::Notice { message } => format!("notice {message}"),
        });
    }
}

fn is_marker(entry: &str) -> bool {
    ["start ", "$ ", "end ", "notice ", "image build"]
        .iter()
        .any(|prefix| entry.starts_with(prefix))
}

struct Run {
    outcome: BuildspecOutcome,
    log: Log,
    /// The environment the image build was called with, if it was called.
    image_build_env: Option<BTreeMap<String, String>>,
}

impl Run {
    fn statuses(&self) -> Vec<(String, PhaseStatus)> {
        self.outcome
            .phases
            .iter()
            .map(|phase| (phase.name.clone(), phase.status))
            .collect()
    }

    fn phase(&self, name: &str) -> &envelope_runner::exec::buildspec::PhaseResult {
        self.outcome
            .phases
            .iter()
            .find(|phase| phase.name == name)
            .unwrap_or_else(|| panic!("no phase {name} in {:?}", self.outcome.phases))
    }
}

fn context(source: &Path) -> BuildspecContext {
    BuildspecContext {
        source_dir: source.to_path_buf(),
        env: BTreeMap::new(),
        secret_env: BTreeMap::new(),
    }
}

/// Run `text` in `context`; the image build succeeds unless `image_build_error` is given.
async fn run_with(text: &str, context: &BuildspecContext, image_build_error: Option<&str>) -> Run {
    let spec = compile(text);
    let log = Log::default();
    let image_build_env = Arc::new(Mutex::new(None));
    let progress = {
        let log = log.clone();
        move |progress: BuildspecProgress| log.record(progress)
    };
    let outcome = run(&spec, context, &progress, |env| {
        log.push("image build".into());
        *image_build_env.lock().unwrap() = Some(env);
        let result = match image_build_error {
            Some(error) => Err(error.to_string()),
            None => Ok(()),
        };
        async move { result }
    })
    .await
    .expect("the buildspec runs");
    let image_build_env = image_build_env.lock().unwrap().take();
    Run {
        outcome,
        log,
        image_build_env,
    }
}

async fn run_in_temp(text: &str) -> (TempDir, Run) {
    let source = TempDir::new().unwrap();
    let run = run_with(text, &context(source.path()), None).await;
    (source, run)
}

fn s(status: &str) -> PhaseStatus {
    match status {
        "ok" => PhaseStatus::Succeeded,
        "failed" => PhaseStatus::Failed,
        _ => PhaseStatus::Skipped,
    }
}

fn statuses(expected: &[(&str, &str)]) -> Vec<(String, PhaseStatus)> {
    expected
        .iter()
        .map(|(name, status)| (name.to_string(), s(status)))
        .collect()
}

#[tokio::test]
async fn phases_run_in_order_around_the_image_build() {
    let (_source, run) = run_in_temp(
        "version: 0.2\nphases:\n\
         \x20 post_build:\n    commands: [echo four]\n\
         \x20 build:\n    commands: [echo three]\n    finally: [echo three-finally]\n\
         \x20 install:\n    commands: [echo one]\n\
         \x20 pre_build:\n    commands: [echo two]\n",
    )
    .await;
    let entries: Vec<String> = run
        .log
        .entries()
        .into_iter()
        .filter(|entry| !entry.starts_with("$ "))
        .collect();
    assert_eq!(
        entries,
        [
            "start install",
            "one",
            "end install succeeded",
            "start pre_build",
            "two",
            "end pre_build succeeded",
            "start build",
            "three",
            "image build",
            "three-finally",
            "end build succeeded",
            "start post_build",
            "four",
            "end post_build succeeded",
        ]
    );
    assert!(run.outcome.succeeded);
    assert_eq!(
        run.statuses(),
        statuses(&[
            ("install", "ok"),
            ("pre_build", "ok"),
            ("build", "ok"),
            ("post_build", "ok")
        ])
    );
}

#[tokio::test]
async fn without_a_build_phase_the_image_build_runs_between_pre_build_and_post_build() {
    let (_source, run) = run_in_temp(
        "version: 0.2\nphases:\n  pre_build:\n    commands: [echo before]\n\
         \x20 post_build:\n    commands: [echo after]\n",
    )
    .await;
    assert_eq!(
        run.log
            .entries()
            .into_iter()
            .filter(|entry| !entry.starts_with("$ ") && !entry.starts_with("start "))
            .collect::<Vec<_>>(),
        [
            "before",
            "end pre_build succeeded",
            "image build",
            "end build succeeded",
            "after",
            "end post_build succeeded"
        ]
    );
    assert!(run.outcome.succeeded);
}

#[tokio::test]
async fn exports_variables_and_directory_persist_across_commands_and_phases() {
    let (source, run) = run_in_temp(
        "version: 0.2\nphases:\n  install:\n    commands:\n\
         \x20     - export GREETING=hello\n\
         \x20     - PLAIN=unexported\n\
         \x20     - mkdir -p sub/dir && cd sub\n\
         \x20     - cd dir\n\
         \x20     - greet() { echo \"function says $1\"; }\n\
         \x20 build:\n    commands:\n\
         \x20     - echo \"$GREETING $PLAIN $(basename \"$PWD\")\"\n\
         \x20     - greet hi\n\
         \x20     - export GREETING=changed; cd ..\n\
         \x20 post_build:\n    commands:\n      - echo \"$GREETING in $(basename \"$PWD\")\"\n",
    )
    .await;
    assert_eq!(
        run.log.lines(),
        ["hello unexported dir", "function says hi", "changed in sub"]
    );
    // The image build comes at the end of the build phase's commands.
    let env = run.image_build_env.expect("the image build ran");
    assert_eq!(env["GREETING"], "changed");
    assert!(
        !env.contains_key("PLAIN"),
        "only exported variables are in the environment"
    );
    assert_eq!(
        env["CODEBUILD_SRC_DIR"],
        source.path().to_str().unwrap(),
        "{env:?}"
    );
}

#[tokio::test]
async fn dash_as_bin_sh_keeps_state_too() {
    let (_source, run) = run_in_temp(
        "version: 0.2\nenv:\n  shell: /bin/sh\nphases:\n  install:\n    commands:\n\
         \x20     - export A=1; B=2; mkdir -p d && cd d\n\
         \x20 build:\n    commands:\n      - echo \"$A$B $(basename \"$PWD\")\"\n",
    )
    .await;
    assert_eq!(run.log.lines(), ["12 d"]);
    assert!(run.outcome.succeeded);
}

#[tokio::test]
async fn finally_runs_after_a_failed_command() {
    let (_source, run) = run_in_temp(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo first\n\
         \x20     - sh -c 'exit 7'\n      - echo never\n\
         \x20   finally:\n      - echo \"finally ran, succeeding=$CODEBUILD_BUILD_SUCCEEDING\"\n",
    )
    .await;
    assert_eq!(
        run.log.lines(),
        ["first", "finally ran, succeeding=0"],
        "{:?}",
        run.log.entries()
    );
    assert!(!run.outcome.succeeded);
    let build = run.phase("build");
    assert_eq!(build.status, PhaseStatus::Failed);
    assert_eq!(build.failed_command.as_deref(), Some("sh -c 'exit 7'"));
    assert_eq!(build.exit_code, Some(7));
    assert_eq!(
        build.error.as_deref(),
        Some("`sh -c 'exit 7'` exited with status 7")
    );
    assert!(
        run.image_build_env.is_none(),
        "no image build after a failed command"
    );
}

#[tokio::test]
async fn a_failure_in_finally_fails_the_phase() {
    let (_source, run) = run_in_temp(
        "version: 0.2\nphases:\n  pre_build:\n    commands: [echo ok]\n    finally: ['false', echo never]\n\
         \x20 build:\n    commands: [echo skipped]\n",
    )
    .await;
    assert_eq!(run.log.lines(), ["ok"]);
    assert_eq!(
        run.statuses(),
        statuses(&[("pre_build", "failed"), ("build", "skipped")])
    );
    assert_eq!(
        run.phase("pre_build").failed_command.as_deref(),
        Some("false")
    );
}

#[tokio::test]
async fn on_failure_continue_runs_the_next_phase_and_fails_the_build() {
    let (_source, run) = run_in_temp(
        "version: 0.2\nphases:\n  install:\n    on-failure: CONTINUE\n    commands: ['false', echo never]\n\
         \x20 pre_build:\n    commands: ['echo \"pre_build runs, succeeding=$CODEBUILD_BUILD_SUCCEEDING\"']\n\
         \x20 build:\n    commands: [echo build runs]\n",
    )
    .await;
    assert_eq!(
        run.log.lines(),
        ["pre_build runs, succeeding=0", "build runs"]
    );
    assert!(!run.outcome.succeeded);
    assert_eq!(
        run.statuses(),
        statuses(&[("install", "failed"), ("pre_build", "ok"), ("build", "ok")])
    );
    assert_eq!(
        run.outcome.first_failure().map(|phase| phase.name.as_str()),
        Some("install")
    );
}

#[tokio::test]
async fn a_failing_install_skips_every_later_phase_and_the_image_build() {
    let (_source, run) = run_in_temp(
        "version: 0.2\nphases:\n  install:\n    commands: [echo installing, 'false']\n    finally: [echo install-finally]\n\
         \x20 pre_build:\n    commands: [echo pre_build]\n\
         \x20 build:\n    commands: [echo build]\n\
         \x20 post_build:\n    commands: [echo post_build]\n",
    )
    .await;
    assert_eq!(run.log.lines(), ["installing", "install-finally"]);
    assert!(
        run.image_build_env.is_none(),
        "the image build must not run"
    );
    assert!(!run.outcome.succeeded);
    assert_eq!(
        run.statuses(),
        statuses(&[
            ("install", "failed"),
            ("pre_build", "skipped"),
            ("build", "skipped"),
            ("post_build", "skipped")
        ])
    );
    assert!(
        run.log
            .entries()
            .contains(&"end post_build skipped".to_string()),
        "{:?}",
        run.log.entries()
    );
}

#[tokio::test]
async fn a_failing_build_still_runs_post_build_with_succeeding_0() {
    let (_source, run) = run_in_temp(
        "version: 0.2\nphases:\n  install:\n    commands: ['echo \"install: $CODEBUILD_BUILD_SUCCEEDING\"']\n\
         \x20 build:\n    commands: ['false']\n\
         \x20 post_build:\n    commands: ['echo \"post_build: $CODEBUILD_BUILD_SUCCEEDING\"']\n",
    )
    .await;
    assert_eq!(run.log.lines(), ["install: 1", "post_build: 0"]);
    assert!(!run.outcome.succeeded);
    assert_eq!(
        run.statuses(),
        statuses(&[("install", "ok"), ("build", "failed"), ("post_build", "ok")])
    );
}

#[tokio::test]
async fn a_failed_image_build_is_a_build_phase_failure() {
    let source = TempDir::new().unwrap();
    let run = run_with(
        "version: 0.2\nphases:\n  build:\n    commands: [echo commands]\n    finally: ['echo \"finally: $CODEBUILD_BUILD_SUCCEEDING\"']\n\
         \x20 post_build:\n    commands: ['echo \"post_build: $CODEBUILD_BUILD_SUCCEEDING\"']\n",
        &context(source.path()),
        Some("Dockerfile:3: unknown instruction RUNN"),
    )
    .await;
    assert_eq!(run.log.lines(), ["commands", "finally: 0", "post_build: 0"]);
    assert!(!run.outcome.succeeded);
    let build = run.phase("build");
    assert_eq!(build.status, PhaseStatus::Failed);
    assert_eq!(build.failed_command, None);
    assert_eq!(
        build.error.as_deref(),
        Some("the image build failed: Dockerfile:3: unknown instruction RUNN")
    );
    assert_eq!(run.phase("post_build").status, PhaseStatus::Succeeded);
}

#[tokio::test]
async fn exported_variables_are_captured_after_the_last_phase() {
    let (_source, run) = run_in_temp(
        "version: 0.2\nenv:\n  exported-variables: [IMAGE_TAG, PLAIN, NEVER_SET]\n\
         phases:\n  pre_build:\n    commands: ['export IMAGE_TAG=early']\n\
         \x20 post_build:\n    commands: ['export IMAGE_TAG=\"v1-$(echo abc)\"', 'PLAIN=\"two words\"']\n",
    )
    .await;
    assert_eq!(
        run.outcome.exported,
        BTreeMap::from([
            ("IMAGE_TAG".to_string(), "v1-abc".to_string()),
            ("PLAIN".to_string(), "two words".to_string()),
        ])
    );
    assert!(
        run.log.entries().contains(
            &"notice exported variable `NEVER_SET` is not set at the end of the build; it is left out"
                .to_string()
        ),
        "{:?}",
        run.log.entries()
    );
    // The image build sees the values of that moment.
    assert_eq!(run.image_build_env.unwrap()["IMAGE_TAG"], "early");
}

#[tokio::test]
async fn secret_values_are_masked_in_output_and_kept_from_the_image_build() {
    let source = TempDir::new().unwrap();
    let mut context = context(source.path());
    context
        .secret_env
        .insert("DB_PASSWORD".into(), Secret::new("s3cr3t-Value-42"));
    let run = run_with(
        "version: 0.2\nenv:\n  exported-variables: [COPY]\nphases:\n  build:\n    commands:\n\
         \x20     - echo \"password is $DB_PASSWORD\"\n\
         \x20     - echo \"$DB_PASSWORD\" >&2\n\
         \x20     - printf 'x%sx\\n' \"$DB_PASSWORD\"\n\
         \x20     - export COPY=\"$DB_PASSWORD\"\n\
         \x20     - test \"$DB_PASSWORD\" = s3cr3t-Value-42 && false\n",
        &context,
        None,
    )
    .await;
    assert_eq!(
        run.log.lines(),
        ["password is [REDACTED]", "[REDACTED]", "x[REDACTED]x"]
    );
    for entry in run.log.entries() {
        assert!(!entry.contains("s3cr3t"), "{entry}");
    }
    let build = run.phase("build");
    assert_eq!(
        build.failed_command.as_deref(),
        Some("test \"$DB_PASSWORD\" = [REDACTED] && false")
    );
    assert!(!build.error.as_deref().unwrap().contains("s3cr3t"));
    assert!(
        run.outcome.exported.is_empty(),
        "a secret is never stored as an exported variable"
    );
    assert!(run.image_build_env.is_none());

    // The image build gets the environment without the secret variables.
    let run = run_with(
        "version: 0.2\nphases:\n  build:\n    commands: ['test -n \"$DB_PASSWORD\"']\n",
        &context,
        None,
    )
    .await;
    assert!(run.outcome.succeeded, "{:?}", run.outcome);
    let env = run.image_build_env.unwrap();
    assert!(!env.contains_key("DB_PASSWORD"));
}

#[tokio::test]
async fn multi_line_commands_run_as_one_command() {
    let (_source, run) = run_in_temp(
        "version: 0.2\nphases:\n  build:\n    commands:\n\
         \x20     - |\n\
         \x20       for word in alpha beta; do\n\
         \x20         echo \"word $word\"\n\
         \x20       done\n\
         \x20       cat <<EOF\n\
         \x20       here doc line\n\
         \x20       EOF\n\
         \x20       false\n\
         \x20       echo the last line decides the status\n\
         \x20     - |\n\
         \x20       if [ -n \"$HOME\" ]; then\n\
         \x20         printf 'no newline at the end'\n\
         \x20       fi\n\
         \x20     - echo 'it'\\''s quoted' \"and \\\"this\\\"\"\n",
    )
    .await;
    assert_eq!(
        run.log.lines(),
        [
            "word alpha",
            "word beta",
            "here doc line",
            "the last line decides the status",
            "no newline at the end",
            "it's quoted and \"this\""
        ]
    );
    assert!(run.outcome.succeeded);
}

#[tokio::test]
async fn codebuild_variables_are_visible_to_commands() {
    let source = TempDir::new().unwrap();
    let mut context = context(source.path());
    context.env = codebuild_variables(&CodebuildFacts {
        source_dir: source.path(),
        resolved_source_version: "4f2c0d7e9b1a8c3d5e6f7a8b9c0d1e2f3a4b5c6d",
        build_number: 17,
        project: "api",
        run_id: "01JABCDEF",
        start_time_ms: 1_750_000_000_000,
        initiator: "github-actions",
        webhook_trigger: Some("tag/v1.2.3"),
    });
    context
        .env
        .insert("PIPELINE_ONLY".into(), "from the pipeline".into());
    let run = run_with(
        "version: 0.2\nenv:\n  variables:\n    PIPELINE_ONLY: from the buildspec\n    PORT: 8080\n\
         phases:\n  build:\n    commands:\n\
         \x20     - echo \"$CODEBUILD_RESOLVED_SOURCE_VERSION\"\n\
         \x20     - test \"$CODEBUILD_SRC_DIR\" = \"$PWD\" && echo src dir is the working directory\n\
         \x20     - echo \"#$CODEBUILD_BUILD_NUMBER $CODEBUILD_BUILD_ID $CODEBUILD_START_TIME\"\n\
         \x20     - echo \"$CODEBUILD_INITIATOR $CODEBUILD_BUILD_SUCCEEDING ${CODEBUILD_WEBHOOK_TRIGGER#tag/}\"\n\
         \x20     - echo \"$PIPELINE_ONLY $PORT\"\n",
        &context,
        None,
    )
    .await;
    assert_eq!(
        run.log.lines(),
        [
            "4f2c0d7e9b1a8c3d5e6f7a8b9c0d1e2f3a4b5c6d",
            "src dir is the working directory",
            "#17 api:01JABCDEF 1750000000000",
            "github-actions 1 v1.2.3",
            "from the pipeline 8080",
        ]
    );
}

#[tokio::test]
async fn a_command_that_ends_the_shell_fails_and_the_state_carries_on() {
    let (_source, run) = run_in_temp(
        "version: 0.2\nphases:\n  build:\n    commands:\n\
         \x20     - export KEPT=yes; mkdir -p deeper && cd deeper\n\
         \x20     - echo leaving; exit 4\n\
         \x20     - echo never\n\
         \x20   finally: ['echo \"finally: $KEPT $(basename \"$PWD\") $CODEBUILD_BUILD_SUCCEEDING\"']\n\
         \x20 post_build:\n    commands:\n      - set -e; false; echo never\n      - echo after set -e\n",
    )
    .await;
    assert_eq!(
        run.log.lines(),
        ["leaving", "finally: yes deeper 0"],
        "{:?}",
        run.log.entries()
    );
    assert_eq!(run.phase("build").exit_code, Some(4));
    assert_eq!(
        run.phase("build").error.as_deref(),
        Some("`echo leaving; exit 4` ended the shell with status 4")
    );
    let post_build = run.phase("post_build");
    assert_eq!(post_build.status, PhaseStatus::Failed);
    assert_eq!(post_build.exit_code, Some(1));
}

#[tokio::test]
async fn the_shells_own_errors_are_shown_with_the_command() {
    for shell in ["bash", "/bin/sh"] {
        let (_source, run) = run_in_temp(&format!(
            "version: 0.2\nenv:\n  shell: {shell}\nphases:\n  build:\n    commands:\n\
             \x20     - no-such-command-here\n"
        ))
        .await;
        let lines = run.log.lines();
        assert_eq!(lines.len(), 1, "{shell}: {lines:?}");
        assert!(
            lines[0].contains("buildspec command: ")
                && lines[0].contains("no-such-command-here: ")
                && lines[0].contains("not found"),
            "{shell}: {lines:?}"
        );
        assert_eq!(run.phase("build").exit_code, Some(127), "{shell}");
    }
}

#[tokio::test]
async fn xtrace_and_redirected_output_do_not_confuse_the_runner() {
    let (_source, run) = run_in_temp(
        "version: 0.2\nphases:\n  build:\n    commands:\n\
         \x20     - set -x\n\
         \x20     - echo traced\n\
         \x20     - set +x\n\
         \x20     - exec 3>&1 >/dev/null; echo hidden\n\
         \x20     - exec >&3; echo visible again\n\
         \x20     - 'read line; echo \"stdin is empty: [$line]\"'\n",
    )
    .await;
    assert!(run.outcome.succeeded, "{:?}", run.outcome);
    let lines = run.log.lines();
    assert_eq!(
        lines,
        [
            // `++`: bash counts the sourced command file as one level.
            "++ echo traced",
            "traced",
            "++ set +x",
            "visible again",
            "stdin is empty: []"
        ]
    );
}

#[tokio::test]
async fn commands_may_use_any_file_descriptor() {
    // `exec 9>lockfile` (the flock idiom) in bash, and closing descriptor 9 in dash, must not
    // cut the runner off from the shell.
    for (shell, commands) in [
        (
            "bash",
            "['exec 9>lockfile; echo locked', 'exec 9>&-', echo after]",
        ),
        ("/bin/sh", "['exec 9>&-', echo after]"),
    ] {
        let text = format!(
            "version: 0.2\nenv:\n  shell: {shell}\nphases:\n  build:\n    commands: {commands}\n"
        );
        let (_source, run) = tokio::time::timeout(Duration::from_secs(30), run_in_temp(&text))
            .await
            .unwrap_or_else(|_| panic!("{shell}: the run hung"));
        assert!(run.outcome.succeeded, "{shell}: {:?}", run.outcome);
        assert_eq!(
            run.log.lines().last().map(String::as_str),
            Some("after"),
            "{shell}"
        );
    }
}

#[tokio::test]
async fn settings_that_do_not_apply_are_noticed() {
    let (_source, run) = run_in_temp(
        "version: 0.2\nrun-as: builder\nphases:\n  install:\n    runtime-versions:\n      php: 8.3\n    commands: [echo hi]\n",
    )
    .await;
    let notices: Vec<String> = run
        .log
        .entries()
        .into_iter()
        .filter(|entry| entry.starts_with("notice "))
        .collect();
    assert_eq!(
        notices,
        [
            "notice run-as `builder` is not applied: commands run as the runner's own user",
            "notice runtime-versions are not applicable: envelope-runner uses the tools on this machine (php 8.3 requested)",
        ]
    );
    assert!(run.outcome.succeeded);
}

#[tokio::test]
async fn dropping_the_run_kills_the_shell_and_its_children() {
    let source = TempDir::new().unwrap();
    let pid_file = source.path().join("sleeper.pid");
    let spec = compile(
        "version: 0.2\nphases:\n  build:\n    commands:\n\
         \x20     - sleep 300 & echo $! > sleeper.pid; echo started; sleep 300\n",
    );
    let context = context(source.path());
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let started_tx = Mutex::new(Some(started_tx));
    let progress = move |progress: BuildspecProgress| {
        if matches!(&progress, BuildspecProgress::Line { line, .. } if line == "started")
            && let Some(tx) = started_tx.lock().unwrap().take()
        {
            let _ = tx.send(());
        }
    };
    let running = run(&spec, &context, &progress, |_| async {
        Ok::<(), String>(())
    });
    tokio::select! {
        outcome = running => panic!("the run should still be sleeping: {outcome:?}"),
        _ = started_rx => {}
        () = tokio::time::sleep(Duration::from_secs(30)) => panic!("the command never started"),
    }
    // `running` is dropped here: the shell and the background sleep must go.
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut alive = true;
    for _ in 0..100 {
        alive = process_alive(pid);
        if !alive {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !alive,
        "background process {pid} survived the cancelled run"
    );
}

/// Alive and not a zombie waiting to be reaped.
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test]
async fn background_processes_do_not_outlive_the_build() {
    let (source, run) = run_in_temp(
        "version: 0.2\nphases:\n  install:\n    commands: ['sleep 300 >/dev/null 2>&1 & echo $! > daemon.pid']\n",
    )
    .await;
    assert!(run.outcome.succeeded);
    let pid: u32 = std::fs::read_to_string(source.path().join("daemon.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut alive = true;
    for _ in 0..100 {
        alive = process_alive(pid);
        if !alive {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive, "background process {pid} outlived the build");
}

#[tokio::test]
async fn a_buildspec_can_call_docker_build_itself() {
    let docker = "/usr/bin/docker";
    let answers = std::process::Command::new(docker)
        .arg("info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !answers {
        let reason = "`docker info` does not answer";
        if std::env::var_os("ENVELOPE_TEST_REQUIRE_DOCKER").is_some() {
            panic!("ENVELOPE_TEST_REQUIRE_DOCKER is set but {reason}");
        }
        eprintln!("skipped: {reason} (set ENVELOPE_TEST_REQUIRE_DOCKER to fail instead)");
        return;
    }
    let source = TempDir::new().unwrap();
    let base = std::env::var("ENVELOPE_TEST_BASE_IMAGE")
        .unwrap_or_else(|_| "envelope-test/busybox:1".to_string());
    std::fs::write(
        source.path().join("Dockerfile"),
        format!("FROM {base}\nARG MESSAGE\nRUN echo \"$MESSAGE\" > /message\n"),
    )
    .unwrap();
    let tag = format!("envelope-test/buildspec-e2e:{}", std::process::id());
    let run = run_with(
        &format!(
            "version: 0.2\nenv:\n  variables:\n    MESSAGE: built by a buildspec\nphases:\n  build:\n    commands:\n\
             \x20     - DOCKER_BUILDKIT=1 {docker} build --build-arg MESSAGE -t {tag} .\n\
             \x20 post_build:\n    commands:\n\
             \x20     - {docker} run --rm {tag} cat /message\n\
             \x20     - {docker} rmi {tag} >/dev/null\n"
        ),
        &context(source.path()),
        None,
    )
    .await;
    assert!(
        run.outcome.succeeded,
        "{:?}\n{}",
        run.outcome,
        run.log.entries().join("\n")
    );
    assert!(
        run.log
            .lines()
            .contains(&"built by a buildspec".to_string()),
        "{}",
        run.log.entries().join("\n")
    );
}
