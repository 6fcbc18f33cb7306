//! The example app (`examples/hello`) committed into a fresh repository, tagged `v1.0.0` and
//! served as a bare repository under a folder of its own.

use crate::git_fixture::WorkRepo;
use std::path::PathBuf;

/// A token for a git server that serves the example app with auth (`GitServer::start`), given
/// to the runner as GITHUB_TOKEN: it must never appear in what the runner prints.
pub const TOKEN: &str = "ghs_e2eTokenThatMustNeverBePrinted0123456789";

/// The example app committed into a fresh repository, tagged `v1.0.0`.
pub struct App {
    pub _dir: tempfile::TempDir,
    pub repo: WorkRepo,
    pub bare_root: PathBuf,
}

pub fn example_app() -> App {
    example_app_with(&[])
}

/// [`example_app`] with more files (path, contents) in the same commit.
pub fn example_app_with(extra: &[(&str, &str)]) -> App {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let repo = WorkRepo::init(&work).unwrap();
    let example = crate::env::repo_root().join("examples/hello");
    for file in ["Dockerfile", ".dockerignore", "migrate.sh", "app/server.sh"] {
        let target = work.join(file);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(example.join(file), &target).unwrap();
    }
    for (file, contents) in extra {
        std::fs::write(work.join(file), contents).unwrap();
    }
    repo.git(&["add", "-A"]).unwrap();
    repo.git(&["commit", "-q", "-m", "example app"]).unwrap();
    repo.tag("v1.0.0").unwrap();
    let bare_root = dir.path().join("served");
    std::fs::create_dir_all(&bare_root).unwrap();
    repo.publish(&bare_root.join("hello.git")).unwrap();
    App {
        _dir: dir,
        repo,
        bare_root,
    }
}
