//! Tests of the build context: what `prepare` accepts, and what walks of its synced
//! directories send, in which order and with which stats.

use std::fs;

use super::*;

fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, contents) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, contents).expect("write");
    }
    dir
}

fn pulled(dir: &SyncedDir, filter: &PullFilter) -> Vec<String> {
    dir.walk(filter)
        .expect("walk")
        .into_iter()
        .map(|entry| entry.stat.path)
        .collect()
}

#[test]
fn sends_what_dockerignore_keeps_and_always_the_dockerfile() {
    let dir = tree(&[
        ("Dockerfile", "FROM scratch\n"),
        (
            ".dockerignore",
            "*.log\nsecret/\nDockerfile\n.dockerignore\nnode_modules\n!node_modules/keep.js\n",
        ),
        ("app.py", "print()\n"),
        ("debug.log", "x"),
        ("sub/debug.log", "kept: *.log is for the root only"),
        ("secret/key", "k"),
        ("node_modules/left-pad/index.js", "x"),
        ("node_modules/keep.js", "x"),
    ]);
    let context = BuildContext::prepare(dir.path(), Path::new("Dockerfile")).expect("ok");
    assert_eq!(
        context.paths(),
        [
            ".dockerignore",
            "Dockerfile",
            "app.py",
            // Excluded itself, but sent as the parent of the exception below it.
            "node_modules",
            "node_modules/keep.js",
            "sub",
            "sub/debug.log"
        ]
    );
}

#[test]
fn dockerfile_specific_ignore_file_wins_and_dockerfile_survives_an_excluded_directory() {
    let dir = tree(&[
        ("docker/app.Dockerfile", "FROM scratch\n"),
        ("docker/app.Dockerfile.dockerignore", "docker\nbig\n"),
        (".dockerignore", "src\n"),
        ("src/main.rs", "fn main() {}"),
        ("big/blob", "x"),
    ]);
    let context =
        BuildContext::prepare(dir.path(), Path::new("./docker/app.Dockerfile")).expect("ok");
    assert_eq!(context.dockerfile(), "docker/app.Dockerfile");
    assert_eq!(context.dockerfile_name(), "app.Dockerfile");
    assert_eq!(
        context.paths(),
        [
            ".dockerignore",
            "docker",
            "docker/app.Dockerfile",
            "docker/app.Dockerfile.dockerignore",
            "src",
            "src/main.rs"
        ]
    );
    let dockerfile_dir = context.synced_dir(DOCKERFILE_DIR).expect("served");
    assert_eq!(dockerfile_dir.root, dir.path().join("docker"));
    assert_eq!(
        pulled(
            &dockerfile_dir,
            &PullFilter {
                follow: vec![
                    "app.Dockerfile".to_owned(),
                    "app.Dockerfile.dockerignore".to_owned()
                ],
                ..PullFilter::default()
            }
        ),
        ["app.Dockerfile", "app.Dockerfile.dockerignore"]
    );
    assert!(context.synced_dir("elsewhere").is_none());
}

#[test]
fn walk_order_is_go_filepath_walk_not_plain_string_order() {
    // '-' sorts before '/', so string order would put "a-b" between "a" and "a/x".
    let dir = tree(&[
        ("Dockerfile", "FROM scratch\n"),
        ("a/x", "1"),
        ("a-b", "2"),
        ("a/y/z", "3"),
    ]);
    let context = BuildContext::prepare(dir.path(), Path::new("Dockerfile")).expect("ok");
    assert_eq!(
        context.paths(),
        ["Dockerfile", "a", "a/x", "a/y", "a/y/z", "a-b"]
    );
}

#[test]
fn include_patterns_send_matches_with_their_parents_only() {
    let dir = tree(&[
        ("Dockerfile", "FROM scratch\n"),
        (".dockerignore", "**/*.tmp\n"),
        ("src/app/main.go", "package main"),
        ("src/app/skip.tmp", "x"),
        ("src/lib/lib.go", "package lib"),
        ("docs/readme", "x"),
    ]);
    let context = BuildContext::prepare(dir.path(), Path::new("Dockerfile")).expect("ok");
    let context_dir = context.synced_dir(CONTEXT_DIR).expect("served");
    let only = |patterns: &[&str]| {
        pulled(
            &context_dir,
            &PullFilter {
                include: patterns.iter().map(|p| (*p).to_owned()).collect(),
                ..PullFilter::default()
            },
        )
    };
    assert_eq!(
        only(&["src/app"]),
        ["src", "src/app", "src/app/main.go"],
        "a directory brings what is in it, minus what .dockerignore drops"
    );
    assert_eq!(
        only(&["src/*/lib.go", ".dockerignore"]),
        [".dockerignore", "src", "src/lib", "src/lib/lib.go"]
    );
    assert!(only(&["nothing/here"]).is_empty());
    // The daemon may replace the owner's exclusions.
    assert_eq!(
        pulled(
            &context_dir,
            &PullFilter {
                include: vec!["src/app".to_owned()],
                exclude: vec!["**/main.go".to_owned()],
                override_excludes: true,
                ..PullFilter::default()
            }
        ),
        ["src", "src/app", "src/app/skip.tmp"]
    );
}

#[test]
fn followed_paths_bring_their_link_targets() {
    let dir = tree(&[("Dockerfile.real", "FROM scratch\n"), ("other", "x")]);
    std::os::unix::fs::symlink("Dockerfile.real", dir.path().join("Dockerfile")).expect("symlink");
    let context = BuildContext::prepare(dir.path(), Path::new("Dockerfile")).expect("ok");
    let dockerfile_dir = context.synced_dir(DOCKERFILE_DIR).expect("served");
    assert_eq!(
        pulled(
            &dockerfile_dir,
            &PullFilter {
                follow: vec!["Dockerfile".to_owned()],
                ..PullFilter::default()
            }
        ),
        ["Dockerfile", "Dockerfile.real"]
    );
}

#[test]
fn refuses_a_missing_or_escaping_dockerfile_and_a_bad_ignore_file() {
    let dir = tree(&[
        ("Dockerfile", "FROM scratch\n"),
        (".dockerignore", "ok\n!\n"),
    ]);
    assert!(matches!(
        BuildContext::prepare(dir.path(), Path::new("Nope")),
        Err(ContextError::DockerfileMissing)
    ));
    assert!(matches!(
        BuildContext::prepare(dir.path(), Path::new("../Dockerfile")),
        Err(ContextError::DockerfileOutside)
    ));
    assert!(matches!(
        BuildContext::prepare(&dir.path().join("missing"), Path::new("Dockerfile")),
        Err(ContextError::ContextDirMissing)
    ));
    match BuildContext::prepare(dir.path(), Path::new("Dockerfile")) {
        Err(ContextError::IgnoreInvalid(path, error)) => {
            assert!(path.ends_with(".dockerignore"));
            assert_eq!(error.line, 2);
        }
        other => panic!("expected an invalid ignore file, got {other:?}"),
    }
}

#[test]
fn stats_are_owned_by_root_and_keep_modes_times_and_links() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tree(&[
        ("Dockerfile", "FROM scratch\n"),
        ("bin/run.sh", "#!/bin/sh\n"),
    ]);
    fs::set_permissions(
        dir.path().join("bin/run.sh"),
        fs::Permissions::from_mode(0o4755),
    )
    .expect("chmod");
    std::os::unix::fs::symlink("bin/run.sh", dir.path().join("link")).expect("symlink");
    let context = BuildContext::prepare(dir.path(), Path::new("Dockerfile")).expect("ok");
    let entries = context
        .synced_dir(CONTEXT_DIR)
        .expect("served")
        .walk(&PullFilter::default())
        .expect("walk");
    let by_path = |path: &str| {
        entries
            .iter()
            .find(|entry| entry.stat.path == path)
            .unwrap_or_else(|| panic!("{path} sent"))
    };
    for entry in &entries {
        assert_eq!((entry.stat.uid, entry.stat.gid), (0, 0));
    }
    let bin = by_path("bin");
    assert_eq!(bin.stat.mode & go_mode::DIR, go_mode::DIR);
    assert!(!bin.is_file());
    let run = by_path("bin/run.sh");
    assert_eq!(run.stat.mode, go_mode::SETUID | 0o755);
    assert_eq!(run.stat.size, 10);
    assert!(run.is_file());
    let modified = fs::metadata(dir.path().join("bin/run.sh"))
        .and_then(|metadata| metadata.modified())
        .expect("mtime")
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    assert_eq!(
        run.stat.mod_time,
        i64::try_from(modified.as_nanos()).expect("fits")
    );
    let link = by_path("link");
    assert_eq!(link.stat.mode & go_mode::SYMLINK, go_mode::SYMLINK);
    assert_eq!(link.stat.linkname, "bin/run.sh");
    assert!(!link.is_file());
}

#[test]
fn a_name_that_is_not_utf8_is_refused_unless_ignored() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tree(&[
        ("Dockerfile", "FROM scratch\n"),
        (".dockerignore", "*.tmp\n"),
    ]);
    fs::write(
        dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9.tmp")),
        "x",
    )
    .expect("write");
    let context = BuildContext::prepare(dir.path(), Path::new("Dockerfile")).expect("ok");
    assert_eq!(context.paths(), [".dockerignore", "Dockerfile"]);

    let odd = dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt"));
    fs::write(&odd, "x").expect("write");
    let error = context
        .synced_dir(CONTEXT_DIR)
        .expect("served")
        .walk(&PullFilter::default())
        .expect_err("refused");
    assert_eq!(error.path, odd);
    assert!(
        error.source.to_string().contains("not UTF-8"),
        "{}",
        error.source
    );
}
