//! Files a pipeline points at, tried through the binary with real symlinks, a FIFO, a device,
//! an oversized file and bytes that are not UTF-8: each is refused with exit code 2 and the
//! place in the pipeline, promptly, without reading it and without quoting what is outside.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Words in files outside the project; no message may show them.
const OUTSIDE_SECRET: &str = "OUTSIDE-SECRET-4711";

/// A project whose pipeline `p` names `buildspec` (line 6, column 18 of pipelines/p.yaml).
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn with_buildspec(buildspec: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        std::fs::create_dir_all(root.join("pipelines")).unwrap();
        std::fs::create_dir_all(root.join("buildspecs")).unwrap();
        std::fs::write(
            root.join("pipelines/p.yaml"),
            format!(
                "source:\n  repository: acme/app\nstages:\n  - build:\n      image: app\n      buildspec: {buildspec}\n"
            ),
        )
        .unwrap();
        // A file outside the project that links may point at.
        std::fs::write(
            dir.path().join("outside.yml"),
            format!("version: 0.2\n{OUTSIDE_SECRET}: [\n"),
        )
        .unwrap();
        Project { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("project")
    }

    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside.yml")
    }
}

/// Run the binary in the project and wait for it, at most a minute (then kill it and fail):
/// a file that is read although it should not be (a FIFO, /dev/zero) must not hang the suite.
/// Its address space is capped so that reading /dev/zero cannot exhaust the machine.
fn run(root: &Path, args: &[&str]) -> Output {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 4194304; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_envelope-runner"))
        .args(args)
        .current_dir(root)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "`envelope-runner {}` did not finish within a minute: it is reading a file it should refuse\n{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `validate` exits 2 and its errors contain each of `expected`; returns them.
fn refused(project: &Project, expected: &[&str]) -> String {
    let output = run(&project.root(), &["validate", "pipelines/p.yaml"]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for text in expected {
        assert!(stderr.contains(text), "expected `{text}` in:\n{stderr}");
    }
    assert!(
        !stderr.contains(OUTSIDE_SECRET),
        "a file outside the project was quoted:\n{stderr}"
    );
    stderr
}

#[test]
fn a_buildspec_that_goes_up_or_is_absolute_is_refused_at_its_key() {
    let project = Project::with_buildspec("../outside.yml");
    refused(
        &project,
        &[
            "pipelines/p.yaml:6:18",
            "buildspec `../outside.yml` goes up with `..`; it must stay inside the project",
        ],
    );
    let absolute = Project::with_buildspec("/placeholder");
    let written = absolute.outside().display().to_string();
    std::fs::write(
        absolute.root().join("pipelines/p.yaml"),
        format!(
            "source:\n  repository: acme/app\nstages:\n  - build:\n      image: app\n      buildspec: {written}\n"
        ),
    )
    .unwrap();
    refused(
        &absolute,
        &[
            "pipelines/p.yaml:6:18",
            &format!("buildspec `{written}` is an absolute path"),
        ],
    );
}

#[test]
fn a_symlink_out_of_the_project_is_refused_without_quoting_its_target() {
    let project = Project::with_buildspec("buildspecs/link.yml");
    std::os::unix::fs::symlink(
        project.outside(),
        project.root().join("buildspecs/link.yml"),
    )
    .unwrap();
    refused(
        &project,
        &[
            "pipelines/p.yaml:6:18",
            "buildspec `buildspecs/link.yml` leads outside the project",
            "a symlink may only point inside the project",
        ],
    );
    // A folder symlinked out of the project is just as far out.
    let project = Project::with_buildspec("buildspecs/up/outside.yml");
    std::os::unix::fs::symlink(project.dir.path(), project.root().join("buildspecs/up")).unwrap();
    refused(&project, &["leads outside the project"]);
}

#[test]
fn a_symlink_inside_the_project_is_followed() {
    let project = Project::with_buildspec("buildspecs/link.yml");
    std::fs::write(
        project.root().join("buildspecs/real.yml"),
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo hi\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("real.yml", project.root().join("buildspecs/link.yml")).unwrap();
    let output = run(&project.root(), &["validate", "pipelines/p.yaml"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_symlink_to_dev_zero_is_refused_without_reading_it() {
    let project = Project::with_buildspec("buildspecs/zero.yml");
    std::os::unix::fs::symlink("/dev/zero", project.root().join("buildspecs/zero.yml")).unwrap();
    refused(
        &project,
        &[
            "pipelines/p.yaml:6:18",
            "buildspec `buildspecs/zero.yml` leads outside the project (it resolves to /dev/zero)",
        ],
    );
    let plan = run(&project.root(), &["plan", "p", "--ref", "main"]);
    assert_eq!(plan.status.code(), Some(2));
    // The defaults file is held to the same rules.
    let project = Project::with_buildspec("buildspecs/none.yml");
    std::os::unix::fs::symlink("/dev/zero", project.root().join("envelope.yaml")).unwrap();
    let output = run(&project.root(), &["validate", "pipelines/p.yaml"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("project defaults file `envelope.yaml` leads outside the project"),
        "{stderr}"
    );
}

#[test]
fn a_fifo_is_refused_without_waiting_for_a_writer() {
    let project = Project::with_buildspec("buildspecs/fifo.yml");
    let fifo = project.root().join("buildspecs/fifo.yml");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    refused(
        &project,
        &[
            "pipelines/p.yaml:6:18",
            "buildspec `buildspecs/fifo.yml` is a FIFO, not a regular file",
        ],
    );
    // The pipeline file itself may not be one either.
    let output = run(&project.root(), &["validate", "buildspecs/fifo.yml"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn a_file_over_one_mebibyte_is_refused_before_reading() {
    let project = Project::with_buildspec("buildspecs/big.yml");
    let line = "# padding padding padding padding padding padding padding padding\n";
    let big = line.repeat(2 * 1024 * 1024 / line.len() + 1);
    std::fs::write(project.root().join("buildspecs/big.yml"), &big).unwrap();
    refused(
        &project,
        &[
            "pipelines/p.yaml:6:18",
            &format!(
                "buildspec `buildspecs/big.yml` is {} bytes; files a pipeline names may hold at most 1 MiB (1048576 bytes)",
                big.len()
            ),
        ],
    );
}

#[test]
fn bytes_that_are_not_utf8_are_reported_at_their_line_and_column() {
    let project = Project::with_buildspec("buildspecs/latin1.yml");
    std::fs::write(
        project.root().join("buildspecs/latin1.yml"),
        b"version: 0.2\nphases:\n  build:\n    commands:\n      - echo caf\xe9\n",
    )
    .unwrap();
    refused(
        &project,
        &[
            "buildspecs/latin1.yml:5:17",
            "buildspec `buildspecs/latin1.yml` is not UTF-8: byte 0xE9 at line 5, column 17",
            "pipelines/p.yaml:6:18 names it",
        ],
    );
    // In the pipeline file itself.
    std::fs::write(
        project.root().join("pipelines/p.yaml"),
        b"source:\n  repository: acme/app\n# r\xc3sum\xc3\xa9\nstages: []\n",
    )
    .unwrap();
    refused(
        &project,
        &[
            "pipelines/p.yaml:3:4",
            "is not UTF-8: byte 0xC3 at line 3, column 4",
        ],
    );
}

#[test]
fn other_paths_a_pipeline_names_stay_inside_their_folder() {
    let project = Project::with_buildspec("buildspecs/none.yml");
    std::fs::write(
        project.root().join("pipelines/p.yaml"),
        "source:\n  repository: acme/app\nstages:\n  - build:\n      image: app\n      context: /srv/app\n      dockerfile: ../Dockerfile\n      secrets:\n        - id: npm\n          file: ../../.npmrc\n",
    )
    .unwrap();
    refused(
        &project,
        &[
            "pipelines/p.yaml:6:16",
            "context `/srv/app` is an absolute path; it must be relative to the repository",
            "pipelines/p.yaml:7:19",
            "dockerfile `../Dockerfile` goes up with `..`; it must stay inside the build context",
            "pipelines/p.yaml:10:17",
            "secret file `../../.npmrc` goes up with `..`; it must stay inside the project",
        ],
    );
}
