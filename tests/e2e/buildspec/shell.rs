//! Commands share one long-lived shell (bash, or dash as `/bin/sh`): exports, the directory
//! and functions carry across commands and phases, multi-line commands run as one, and a
//! command that ends the shell, the shell's own errors, xtrace, redirections and any file
//! descriptor a command uses are handled.

use std::time::Duration;

use envelope_runner::exec::buildspec::PhaseStatus;

use super::run_in_temp;

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
