//! source end-to-end tests: real repositories made with the git CLI, fetched over smart HTTP
//! with token auth (git http-backend behind a small Python server) and over file:// URLs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use envelope_runner::exec::source::{
    SourceError, SourceOutput, SourceProgress, SourceRequest, fetch,
};
use envelope_runner::secret::Secret;
use envelope_tests::git_fixture::{GitServer, WorkRepo, closed_port, git};
use tempfile::TempDir;

const TOKEN: &str = "ghs_test-token-5f3a9c";

/// Served repositories:
/// - `app.git`: main = three commits; annotated tag `v1.0.0` at the second; branch `release`
///   at the first; branch `master` = main.
/// - `platform.git`: a submodule `vendor/lib` (`../lib.git`), which has its own submodule
///   `leaf` (`../leaf.git`).
struct Fixture {
    temp: TempDir,
    app: WorkRepo,
    commits: Vec<String>,
    server: GitServer,
    checkouts: AtomicUsize,
}

impl Fixture {
    fn new() -> Self {
        Self::with_token(Some(TOKEN))
    }

    fn with_token(token: Option<&str>) -> Self {
        let temp = TempDir::new().unwrap();
        let served = temp.path().join("served");
        let app = WorkRepo::init(temp.path().join("work/app")).unwrap();
        let first = app
            .commit_file("README.md", "version one\n", "first")
            .unwrap();
        app.git(&["branch", "release"]).unwrap();
        let second = app
            .commit_file("src/main.sh", "echo two\n", "second")
            .unwrap();
        app.tag("v1.0.0").unwrap();
        let third = app
            .commit_file("README.md", "version three\n", "third")
            .unwrap();
        // The mirror's HEAD is refs/heads/master. libgit2 checks out against HEAD's tree when
        // it uses a repository's index; with this branch, a checkout that did so would skip the
        // files other commits share with it.
        app.git(&["branch", "master"]).unwrap();
        app.publish(&served.join("app.git")).unwrap();
        let server = GitServer::start(&served, token).unwrap();
        Fixture {
            temp,
            app,
            commits: vec![first, second, third],
            server,
            checkouts: AtomicUsize::new(0),
        }
    }

    /// Build `platform.git` → `lib.git` → `leaf.git` next to `app.git`.
    fn add_platform_with_submodules(&self) -> (String, String, String) {
        let served = self.temp.path().join("served");
        let leaf = WorkRepo::init(self.temp.path().join("work/leaf")).unwrap();
        let leaf_sha = leaf.commit_file("leaf.txt", "leaf\n", "leaf").unwrap();
        leaf.publish(&served.join("leaf.git")).unwrap();

        let lib = WorkRepo::init(self.temp.path().join("work/lib")).unwrap();
        lib.commit_file("lib.txt", "lib\n", "lib").unwrap();
        let leaf_path = served.join("leaf.git");
        let lib_sha = lib
            .add_submodule(&leaf_path.to_string_lossy(), "leaf", "../leaf.git")
            .unwrap();
        lib.publish(&served.join("lib.git")).unwrap();

        let platform = WorkRepo::init(self.temp.path().join("work/platform")).unwrap();
        platform
            .commit_file("platform.txt", "platform\n", "platform")
            .unwrap();
        let lib_path = served.join("lib.git");
        let platform_sha = platform
            .add_submodule(&lib_path.to_string_lossy(), "vendor/lib", "../lib.git")
            .unwrap();
        platform.publish(&served.join("platform.git")).unwrap();
        (platform_sha, lib_sha, leaf_sha)
    }

    fn served(&self, repository: &str) -> PathBuf {
        self.temp.path().join("served").join(repository)
    }

    fn cache(&self) -> PathBuf {
        self.temp.path().join("cache")
    }

    /// A request for `reference` in app.git over HTTP with the right token, into a new
    /// checkout directory.
    fn request(&self, reference: &str) -> SourceRequest {
        self.request_for(&self.server.url("app.git"), reference)
    }

    fn request_for(&self, url: &str, reference: &str) -> SourceRequest {
        SourceRequest {
            url: url.to_string(),
            reference: reference.to_string(),
            expected_sha: None,
            token: Some(Secret::new(TOKEN)),
            cache_dir: self.cache(),
            checkout_dir: self.new_checkout_dir(),
            shallow_without_mirror: false,
        }
    }

    fn new_checkout_dir(&self) -> PathBuf {
        let count = self.checkouts.fetch_add(1, Ordering::Relaxed);
        self.temp.path().join(format!("checkouts/{count}"))
    }

    /// Push one more commit to app.git's main; returns its sha.
    fn push_new_commit(&self, contents: &str) -> String {
        let sha = self
            .app
            .commit_file("README.md", contents, "another")
            .unwrap();
        self.app.publish(&self.served("app.git")).unwrap();
        sha
    }

    /// Entries of `<cache>/git` (mirrors, lock files, leftovers), sorted.
    fn cache_entries(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.cache().join("git")) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The only mirror in the cache.
    fn mirror(&self) -> PathBuf {
        let mirrors: Vec<String> = self
            .cache_entries()
            .into_iter()
            .filter(|name| name.ends_with(".git"))
            .collect();
        assert_eq!(mirrors.len(), 1, "mirrors: {mirrors:?}");
        self.cache().join("git").join(&mirrors[0])
    }
}

/// Run a fetch, collecting its progress events.
fn run(request: &SourceRequest) -> (Result<SourceOutput, SourceError>, Vec<SourceProgress>) {
    let mut events = Vec::new();
    let result = fetch(request, &mut |event| events.push(event));
    (result, events)
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap()
}

fn commit_count(mirror: &Path) -> usize {
    git(mirror, &["rev-list", "--all", "--count"])
        .unwrap()
        .parse()
        .unwrap()
}

fn is_shallow(mirror: &Path) -> bool {
    git(mirror, &["rev-parse", "--is-shallow-repository"]).unwrap() == "true"
}

#[test]
fn clones_a_tag_over_smart_http_with_a_token() {
    let fixture = Fixture::new();
    let request = fixture.request("v1.0.0");

    let (result, events) = run(&request);
    let output = result.unwrap();

    assert_eq!(output.sha, fixture.commits[1]);
    assert_eq!(output.short_sha, fixture.commits[1][..7]);
    assert_eq!(output.tag.as_deref(), Some("v1.0.0"));
    assert_eq!(output.branch, None);
    assert!(!output.fetched_from_mirror);
    assert_eq!(output.checkout_dir, request.checkout_dir);
    assert_eq!(read(&output.checkout_dir, "README.md"), "version one\n");
    assert_eq!(read(&output.checkout_dir, "src/main.sh"), "echo two\n");
    assert!(!output.checkout_dir.join(".git").exists());

    assert_eq!(
        events.first(),
        Some(&SourceProgress::Fetching {
            url: fixture.server.url("app.git")
        })
    );
    assert!(
        events
            .iter()
            .any(|event| matches!(event, SourceProgress::Transfer { received_objects, total_objects, .. } if received_objects == total_objects && *total_objects > 0)),
        "{events:?}"
    );
    assert_eq!(
        events.last(),
        Some(&SourceProgress::CheckedOut {
            sha: fixture.commits[1].clone()
        })
    );
    // The mirror holds every branch and tag.
    let mirror = fixture.mirror();
    assert!(!is_shallow(&mirror));
    assert_eq!(commit_count(&mirror), 3);
    assert_eq!(
        git(&mirror, &["rev-parse", "refs/heads/release"]).unwrap(),
        fixture.commits[0]
    );
}

#[test]
fn a_second_fetch_reuses_the_mirror_and_gets_the_new_commit() {
    let fixture = Fixture::new();
    let first = run(&fixture.request("main")).0.unwrap();
    assert_eq!(first.sha, fixture.commits[2]);
    assert_eq!(first.branch.as_deref(), Some("main"));
    assert!(!first.fetched_from_mirror);

    let new_sha = fixture.push_new_commit("version four\n");
    let (result, events) = run(&fixture.request("main"));
    let second = result.unwrap();

    assert_eq!(second.sha, new_sha);
    assert!(second.fetched_from_mirror);
    assert_eq!(read(&second.checkout_dir, "README.md"), "version four\n");
    // Only what was new came over the wire: one commit, one tree, one blob.
    let transferred = events.iter().find_map(|event| match event {
        SourceProgress::Transfer { total_objects, .. } => Some(*total_objects),
        _ => None,
    });
    assert_eq!(transferred, Some(3), "{events:?}");
}

#[test]
fn a_first_shallow_fetch_takes_depth_one_and_a_full_request_supersedes_it() {
    let fixture = Fixture::new();
    let mut request = fixture.request("main");
    request.shallow_without_mirror = true;

    let shallow = run(&request).0.unwrap();
    assert_eq!(shallow.sha, fixture.commits[2]);
    assert!(!shallow.fetched_from_mirror);
    assert_eq!(read(&shallow.checkout_dir, "README.md"), "version three\n");
    let mirror = fixture.mirror();
    assert!(is_shallow(&mirror));
    assert_eq!(commit_count(&mirror), 1);

    // Another shallow request fetches depth 1 of its ref into the shallow mirror.
    let mut tag_request = fixture.request("v1.0.0");
    tag_request.shallow_without_mirror = true;
    let tag = run(&tag_request).0.unwrap();
    assert_eq!(tag.sha, fixture.commits[1]);
    assert!(tag.fetched_from_mirror);
    assert!(is_shallow(&mirror));
    assert_eq!(commit_count(&mirror), 2);

    // The first full request replaces the shallow mirror with a complete one.
    let full = run(&fixture.request("release")).0.unwrap();
    assert_eq!(full.sha, fixture.commits[0]);
    assert!(!full.fetched_from_mirror);
    let mirror = fixture.mirror();
    assert!(!is_shallow(&mirror));
    assert_eq!(commit_count(&mirror), 3);
    git(&mirror, &["fsck", "--no-progress"]).unwrap();
    assert!(
        fixture
            .cache_entries()
            .iter()
            .all(|name| !name.contains(".tmp-") && !name.contains(".old-")),
        "{:?}",
        fixture.cache_entries()
    );

    // From now on shallow requests use the full mirror.
    let mut again = fixture.request("main");
    again.shallow_without_mirror = true;
    let again = run(&again).0.unwrap();
    assert!(again.fetched_from_mirror);
    assert!(!is_shallow(&fixture.mirror()));
}

#[test]
fn submodules_are_checked_out_recursively_with_the_token() {
    let fixture = Fixture::new();
    let (platform_sha, lib_sha, leaf_sha) = fixture.add_platform_with_submodules();
    let request = fixture.request_for(&fixture.server.url("platform.git"), "main");

    let (result, events) = run(&request);
    let output = result.unwrap();

    assert_eq!(output.sha, platform_sha);
    let dir = &output.checkout_dir;
    assert_eq!(read(dir, "platform.txt"), "platform\n");
    assert_eq!(read(dir, "vendor/lib/lib.txt"), "lib\n");
    assert_eq!(read(dir, "vendor/lib/leaf/leaf.txt"), "leaf\n");
    let fetched: Vec<&str> = events
        .iter()
        .filter_map(|event| match event {
            SourceProgress::Fetching { url } => Some(url.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        fetched,
        [
            fixture.server.url("platform.git"),
            fixture.server.url("lib.git"),
            fixture.server.url("leaf.git")
        ]
    );
    assert_eq!(
        events.last(),
        Some(&SourceProgress::CheckedOut { sha: platform_sha })
    );
    // Each submodule has its own mirror, holding the pinned commit.
    let mirrors = fixture
        .cache_entries()
        .into_iter()
        .filter(|name| name.ends_with(".git"))
        .count();
    assert_eq!(mirrors, 3);
    let _ = (lib_sha, leaf_sha);

    // Shallow works for submodules too: their pinned commits are branch tips here.
    let mut shallow = fixture.request_for(&fixture.server.url("platform.git"), "main");
    shallow.cache_dir = fixture.temp.path().join("other-cache");
    shallow.shallow_without_mirror = true;
    let output = run(&shallow).0.unwrap();
    assert_eq!(
        read(&output.checkout_dir, "vendor/lib/leaf/leaf.txt"),
        "leaf\n"
    );
}

#[test]
fn a_missing_reference_is_a_clear_error() {
    let fixture = Fixture::new();
    for shallow in [true, false] {
        let mut request = fixture.request("v9.9.9");
        request.shallow_without_mirror = shallow;
        let error = run(&request).0.unwrap_err();
        assert!(
            matches!(error, SourceError::ReferenceNotFound { .. }),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "no branch, tag or commit `v9.9.9` in {}: check the release tag or branch name",
                fixture.server.url("app.git")
            )
        );
        assert!(!error.is_environment());
        assert!(!request.checkout_dir.exists());
    }

    let unknown_commit = "0123456789012345678901234567890123456789";
    let error = run(&fixture.request(unknown_commit)).0.unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with(&format!("no branch, tag or commit `{unknown_commit}` in")),
        "{error}"
    );

    let error = run(&fixture.request_for(&fixture.server.url("nothing.git"), "main"))
        .0
        .unwrap_err();
    assert!(
        matches!(error, SourceError::RepositoryNotFound { .. }),
        "{error:?}"
    );
}

#[test]
fn a_wrong_or_missing_token_fails_authentication_without_showing_the_token() {
    let fixture = Fixture::new();
    let wrong_token = "ghs_wrong-token-0000";
    for shallow in [false, true] {
        let mut request = fixture.request("main");
        request.token = Some(Secret::new(wrong_token));
        request.shallow_without_mirror = shallow;
        let error = run(&request).0.unwrap_err();
        assert!(
            matches!(error, SourceError::AuthenticationFailed { .. }),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "authentication failed for {}; check the token",
                fixture.server.url("app.git")
            )
        );
        assert!(error.is_environment());
        for shown in [error.to_string(), format!("{error:?}")] {
            assert!(!shown.contains(wrong_token), "{shown}");
        }
    }

    let mut request = fixture.request("main");
    request.token = None;
    let error = run(&request).0.unwrap_err();
    assert!(
        matches!(
            error,
            SourceError::AuthenticationFailed {
                token_given: false,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().starts_with("authentication failed for"));
    assert!(
        fixture
            .cache_entries()
            .iter()
            .all(|name| !name.ends_with(".git"))
    );
}

#[test]
fn an_unreachable_server_is_a_network_error() {
    let fixture = Fixture::new();
    let url = format!("http://127.0.0.1:{}/app.git", closed_port());
    for shallow in [false, true] {
        let mut request = fixture.request_for(&url, "main");
        request.shallow_without_mirror = shallow;
        let error = run(&request).0.unwrap_err();
        assert!(matches!(error, SourceError::Network { .. }), "{error:?}");
        assert!(error.is_environment());
        assert!(
            error
                .to_string()
                .starts_with(&format!("could not reach {url}")),
            "{error}"
        );
    }
}

#[test]
fn an_expected_sha_mismatch_is_an_error() {
    let fixture = Fixture::new();
    let mut request = fixture.request("main");
    request.expected_sha = Some(fixture.commits[1].clone());

    let error = run(&request).0.unwrap_err();

    assert!(
        matches!(error, SourceError::ShaMismatch { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&fixture.commits[1]) && message.contains(&fixture.commits[2]));
    assert!(!error.is_environment());
    assert!(!request.checkout_dir.exists());

    // The matching sha, in upper case, passes.
    let mut request = fixture.request("main");
    request.expected_sha = Some(fixture.commits[2].to_uppercase());
    assert_eq!(run(&request).0.unwrap().sha, fixture.commits[2]);
}

#[test]
fn a_failed_first_fetch_leaves_no_mirror_behind() {
    let fixture = Fixture::new();
    fixture.server.truncate_fetches(true).unwrap();
    for shallow in [false, true] {
        let mut request = fixture.request("main");
        request.shallow_without_mirror = shallow;
        let error = run(&request).0.unwrap_err();
        assert!(error.is_environment(), "{error:?}");
        assert!(!request.checkout_dir.exists());
        let leftovers: Vec<String> = fixture
            .cache_entries()
            .into_iter()
            .filter(|name| !name.ends_with(".lock"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
    // And the next, unbroken, fetch creates the mirror.
    fixture.server.truncate_fetches(false).unwrap();
    assert_eq!(
        run(&fixture.request("main")).0.unwrap().sha,
        fixture.commits[2]
    );
}

#[test]
fn a_failed_fetch_keeps_the_existing_mirror_usable() {
    let fixture = Fixture::new();
    run(&fixture.request("main")).0.unwrap();
    let mirror = fixture.mirror();

    let new_sha = fixture.push_new_commit("version four\n");
    fixture.server.truncate_fetches(true).unwrap();
    let error = run(&fixture.request("main")).0.unwrap_err();
    assert!(error.is_environment(), "{error:?}");

    // The mirror is intact and still at the old commit.
    git(&mirror, &["fsck", "--no-progress"]).unwrap();
    assert_eq!(
        git(&mirror, &["rev-parse", "refs/heads/main"]).unwrap(),
        fixture.commits[2]
    );
    // A known commit needs no network at all.
    let offline = run(&fixture.request(&fixture.commits[1])).0.unwrap();
    assert!(offline.fetched_from_mirror);
    assert_eq!(offline.tag.as_deref(), Some("v1.0.0"));

    fixture.server.truncate_fetches(false).unwrap();
    let output = run(&fixture.request("main")).0.unwrap();
    assert_eq!(output.sha, new_sha);
    assert!(output.fetched_from_mirror);
}

#[test]
fn stale_lock_files_from_a_killed_fetch_are_recovered() {
    let fixture = Fixture::new();
    run(&fixture.request("main")).0.unwrap();
    let mirror = fixture.mirror();
    // What a fetch killed while updating refs leaves behind.
    std::fs::write(mirror.join("refs/heads/main.lock"), "").unwrap();
    std::fs::write(mirror.join("packed-refs.lock"), "").unwrap();
    std::fs::write(mirror.join("objects/pack/pack_git2_abcdef"), "partial").unwrap();
    std::fs::create_dir_all(fixture.cache().join("git/leftover")).unwrap();
    let name = mirror.file_stem().unwrap().to_string_lossy().into_owned();
    std::fs::create_dir_all(fixture.cache().join(format!("git/{name}.tmp-killed"))).unwrap();

    let new_sha = fixture.push_new_commit("version four\n");
    let output = run(&fixture.request("main")).0.unwrap();

    assert_eq!(output.sha, new_sha);
    assert!(!mirror.join("refs/heads/main.lock").exists());
    assert!(!mirror.join("objects/pack/pack_git2_abcdef").exists());
    assert!(
        !fixture
            .cache()
            .join(format!("git/{name}.tmp-killed"))
            .exists()
    );
    // Not ours: left alone.
    assert!(fixture.cache().join("git/leftover").exists());
}

#[test]
fn file_urls_and_local_paths_share_a_mirror() {
    let fixture = Fixture::new();
    let path = fixture.served("app.git");
    let file_url = format!("file://{}", path.display());

    let mut request = fixture.request_for(&file_url, "v1.0.0");
    // Shallow is not possible over libgit2's local transport; a full mirror is made instead.
    request.shallow_without_mirror = true;
    request.token = None;
    let (result, events) = run(&request);
    let output = result.unwrap();
    assert_eq!(output.sha, fixture.commits[1]);
    assert_eq!(output.tag.as_deref(), Some("v1.0.0"));
    assert!(!output.fetched_from_mirror);
    assert_eq!(read(&output.checkout_dir, "src/main.sh"), "echo two\n");
    assert_eq!(
        events.first(),
        Some(&SourceProgress::Fetching {
            url: path.display().to_string()
        })
    );
    assert!(!is_shallow(&fixture.mirror()));

    let mut request = fixture.request_for(&path.to_string_lossy(), "release");
    request.token = None;
    let output = run(&request).0.unwrap();
    assert_eq!(output.sha, fixture.commits[0]);
    assert_eq!(output.branch.as_deref(), Some("release"));
    assert!(output.fetched_from_mirror);
    fixture.mirror();

    let missing = fixture.temp.path().join("no-such-repo.git");
    let error = run(&fixture.request_for(&missing.to_string_lossy(), "main"))
        .0
        .unwrap_err();
    assert!(
        matches!(error, SourceError::RepositoryNotFound { .. }),
        "{error:?}"
    );
}

#[test]
fn commit_sha_references_work_shallow_and_full() {
    let fixture = Fixture::new();
    // Leaves commits[2] at no branch tip.
    fixture.app.git(&["branch", "-D", "master"]).unwrap();
    let tip = fixture.push_new_commit("version four\n");

    // A sha at a branch tip can be fetched shallow.
    let mut request = fixture.request(&tip);
    request.shallow_without_mirror = true;
    let output = run(&request).0.unwrap();
    assert_eq!(output.sha, tip);
    assert_eq!(output.branch, None);
    assert!(is_shallow(&fixture.mirror()));
    assert_eq!(commit_count(&fixture.mirror()), 1);

    // A sha at no branch or tag tip needs a full mirror, which replaces the shallow one.
    let mut request = fixture.request(&fixture.commits[2]);
    request.shallow_without_mirror = true;
    let output = run(&request).0.unwrap();
    assert_eq!(output.sha, fixture.commits[2]);
    assert!(!output.fetched_from_mirror);
    assert!(!is_shallow(&fixture.mirror()));

    // A sha reports the tag pointing at it.
    let output = run(&fixture.request(&fixture.commits[1])).0.unwrap();
    assert_eq!(output.tag.as_deref(), Some("v1.0.0"));

    // A full ref works as well.
    let output = run(&fixture.request("refs/heads/release")).0.unwrap();
    assert_eq!(output.sha, fixture.commits[0]);
    assert_eq!(output.branch.as_deref(), Some("release"));
}

#[test]
fn commits_outside_branches_and_tags_are_fetched_by_id() {
    let fixture = Fixture::new();
    run(&fixture.request("main")).0.unwrap();
    // A commit only a non-branch ref reaches, like a pull request head on GitHub.
    let orphan = fixture
        .app
        .commit_file("README.md", "pull request\n", "pr")
        .unwrap();
    git(
        &fixture.served("app.git"),
        &[
            "fetch",
            "--quiet",
            &fixture.app.dir.to_string_lossy(),
            &format!("{orphan}:refs/pull/1/head"),
        ],
    )
    .unwrap();

    let output = run(&fixture.request(&orphan)).0.unwrap();
    assert_eq!(output.sha, orphan);
    assert_eq!(read(&output.checkout_dir, "README.md"), "pull request\n");

    let output = run(&fixture.request("refs/pull/1/head")).0.unwrap();
    assert_eq!(output.sha, orphan);
}

#[test]
fn concurrent_fetches_of_one_repository_wait_for_each_other() {
    let fixture = Fixture::new();
    let requests: Vec<SourceRequest> = (0..4)
        .map(|index| {
            let mut request = fixture.request(if index % 2 == 0 { "main" } else { "v1.0.0" });
            request.shallow_without_mirror = index == 1;
            request
        })
        .collect();
    let outputs: Vec<SourceOutput> = std::thread::scope(|scope| {
        let handles: Vec<_> = requests
            .iter()
            .map(|request| scope.spawn(move || run(request).0))
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap().unwrap())
            .collect()
    });
    for (index, output) in outputs.iter().enumerate() {
        let expected = if index % 2 == 0 { 2 } else { 1 };
        assert_eq!(output.sha, fixture.commits[expected]);
        assert!(output.checkout_dir.join("README.md").exists());
    }
    git(&fixture.mirror(), &["fsck", "--no-progress"]).unwrap();
}

#[test]
fn credentials_in_the_url_never_reach_progress_or_errors() {
    let fixture = Fixture::new();
    let url = format!(
        "http://x-access-token:{TOKEN}@127.0.0.1:{}/app.git",
        fixture.server.port
    );
    let mut request = fixture.request_for(&url, "main");
    request.token = None;
    let (result, events) = run(&request);
    assert_eq!(result.unwrap().sha, fixture.commits[2]);
    assert!(!format!("{events:?}").contains(TOKEN), "{events:?}");

    let mut request = fixture.request_for(&url, "v9.9.9");
    request.token = None;
    let error = run(&request).0.unwrap_err();
    assert!(!error.to_string().contains(TOKEN), "{error}");
    // Same repository, same mirror, whatever the credentials.
    fixture.mirror();
}

#[test]
fn a_non_empty_checkout_dir_is_refused_and_left_alone() {
    let fixture = Fixture::new();
    let request = fixture.request("main");
    std::fs::create_dir_all(&request.checkout_dir).unwrap();
    std::fs::write(request.checkout_dir.join("mine.txt"), "keep me").unwrap();

    let error = run(&request).0.unwrap_err();

    assert!(
        matches!(error, SourceError::CheckoutDirNotEmpty { .. }),
        "{error:?}"
    );
    assert_eq!(read(&request.checkout_dir, "mine.txt"), "keep me");

    // An empty existing directory is fine.
    let request = fixture.request("main");
    std::fs::create_dir_all(&request.checkout_dir).unwrap();
    assert_eq!(run(&request).0.unwrap().sha, fixture.commits[2]);
}

#[test]
fn relative_cache_and_checkout_paths_work() {
    let fixture = Fixture::new();
    // Relative to the current directory without changing it (tests share the process).
    let current = std::env::current_dir().unwrap();
    let up = "../".repeat(current.components().count() - 1);
    let relative = |path: PathBuf| PathBuf::from(format!("{up}{}", path.display()));
    let mut request = fixture.request("v1.0.0");
    request.cache_dir = relative(fixture.cache());
    request.checkout_dir = relative(fixture.new_checkout_dir());
    assert!(request.checkout_dir.is_relative());

    let output = run(&request).0.unwrap();

    assert_eq!(output.sha, fixture.commits[1]);
    assert_eq!(read(&output.checkout_dir, "src/main.sh"), "echo two\n");
    fixture.mirror();
}

#[tokio::test]
async fn runs_from_async_code_through_spawn_blocking() {
    let fixture = Fixture::new();
    let request = fixture.request("v1.0.0");
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let output = tokio::task::spawn_blocking(move || {
        fetch(&request, &mut |event| {
            let _ = sender.send(event);
        })
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(output.sha, fixture.commits[1]);
    let mut last = None;
    while let Some(event) = receiver.recv().await {
        last = Some(event);
    }
    assert_eq!(
        last,
        Some(SourceProgress::CheckedOut {
            sha: fixture.commits[1].clone()
        })
    );
}

#[test]
fn an_unsupported_url_says_what_to_use() {
    let fixture = Fixture::new();
    let error = run(&fixture.request_for("git@github.com:owner/repo.git", "main"))
        .0
        .unwrap_err();
    assert!(
        matches!(error, SourceError::UnsupportedUrl { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("https://"), "{error}");
}
