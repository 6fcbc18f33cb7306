//! The source stage: fetch a git repository into a cached bare mirror and check out one exact
//! commit, submodules included.
//!
//! # Cache layout
//!
//! ```text
//! <cache_dir>/git/<name>.git      bare mirror of one URL (refs/heads/* and refs/tags/*)
//! <cache_dir>/git/<name>.lock     held (flock) by the one process writing or reading the mirror
//! <cache_dir>/git/<name>.tmp-*    a mirror being created; renamed to <name>.git when complete
//! <cache_dir>/git/<name>.old-*    a shallow mirror being replaced by a full one
//! ```
//!
//! `<name>` is a hash of the URL with credentials removed (see [`mirror_name`]), so a changed
//! token keeps its mirror and no secret ends up in a path.
//!
//! # Choices
//!
//! - **Checkout is a plain tree without `.git`**: libgit2 checks the commit's tree out of the bare
//!   mirror straight into `checkout_dir` (`target_dir`, index untouched). Nothing is copied twice
//!   and no second repository is created; builds only need the files and the recorded sha.
//! - **Shallow only when there is no mirror**: with `shallow_without_mirror`, the first fetch of a
//!   URL takes depth 1 of the one requested ref and keeps it at the mirror path. Later shallow
//!   requests fetch depth 1 into it again. The first request that is *not* shallow builds a full
//!   mirror next to it and swaps it in (never unshallows in place), so a full mirror is always
//!   complete and a shallow one never stands in the way. libgit2's local transport cannot fetch
//!   shallow, so `file://` and local paths are always mirrored in full (which is cheap there).
//! - **Nothing half-written**: a new mirror is fetched into `<name>.tmp-*` and renamed into place
//!   only once the fetch succeeded. Fetching into an existing mirror relies on libgit2 writing the
//!   pack under a temporary name and each ref through a `.lock` file renamed into place: a failure
//!   leaves either the old or the new value of each ref, all pointing at complete objects. Lock
//!   files and temporary packs left by a killed process are removed before the next fetch, which
//!   is safe because this process then holds the mirror's lock.
//! - **One lock per mirror, held through checkout**: the only operation that removes a mirror is
//!   replacing a shallow one with a full one, and a reader checking out of the old directory must
//!   not see it vanish. Runs of different repositories never wait for each other.
//! - **A commit sha already in the mirror needs no network**: commits are immutable, so a re-run
//!   of the same sha works offline.
//! - **HTTP(S) through reqwest, not libgit2's client** ([`http`]): libgit2 keeps the protocol,
//!   reqwest carries the requests (whole, with `TCP_NODELAY`, TLS by rustls, proxies from
//!   `http_proxy`/`https_proxy`/`no_proxy`, a connect timeout, the token sent with the first
//!   request). libgit2 is built without TLS.
//!
//! Everything here blocks; async callers use `tokio::task::spawn_blocking` (all public types are
//! `Send`).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use git2::build::CheckoutBuilder;
use git2::{
    AutotagOption, Direction, ErrorClass, ErrorCode, FetchOptions, FetchPrune, ObjectType, Oid,
    RemoteCallbacks, Repository,
};
use sha2::{Digest, Sha256};

use crate::secret::Secret;

mod http;

/// The user name GitHub expects next to an installation or personal access token.
const TOKEN_USER: &str = "x-access-token";

/// Transfer progress arrives for every few objects; a reporter needs a few updates a second.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Git itself stops at this depth of nested submodules' recursion in practice; deeper nesting
/// is almost certainly a cycle.
const MAX_SUBMODULE_DEPTH: usize = 10;

/// The file mode git gives a submodule's pinned commit in a tree.
const GITLINK_MODE: u32 = 0o160000;

/// Full-mirror refspecs: every branch and tag, force-updated like `git clone --mirror` does.
const MIRROR_REFSPECS: [&str; 2] = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];

/// What to fetch and where to put it.
#[derive(Debug, Clone)]
pub struct SourceRequest {
    /// `https://...`, `http://...`, `file://...` or a local path. `owner/repo` is expanded by the
    /// caller.
    pub url: String,
    /// A branch name, a tag name, a full ref (`refs/...`) or a 40-hex commit sha. A name that is
    /// both a tag and a branch means the tag (as in `git rev-parse`).
    pub reference: String,
    /// When given, the resolved commit must be this one.
    pub expected_sha: Option<String>,
    /// HTTPS token, sent as basic auth user `x-access-token` (GitHub's convention).
    pub token: Option<Secret>,
    /// Runner cache root; mirrors live in `<cache_dir>/git/`.
    pub cache_dir: PathBuf,
    /// Where the commit's tree is checked out; created, and must be empty or absent.
    pub checkout_dir: PathBuf,
    /// When no mirror exists yet, fetch depth 1 of just the requested ref instead of a full
    /// mirror.
    pub shallow_without_mirror: bool,
}

/// What was checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceOutput {
    /// The full commit sha.
    pub sha: String,
    /// The first 7 characters of `sha`.
    pub short_sha: String,
    /// The tag the reference named; for a sha reference, a tag in the mirror pointing at the
    /// commit (the first by name), if any. A branch reference never reports a tag.
    pub tag: Option<String>,
    /// The branch the reference named, if it named one.
    pub branch: Option<String>,
    pub checkout_dir: PathBuf,
    /// True when an existing mirror was reused (only what was new was fetched, if anything).
    pub fetched_from_mirror: bool,
}

/// Progress of one fetch, for reporters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceProgress {
    /// Fetching from this URL (credentials removed); once for the repository and once for each
    /// submodule.
    Fetching { url: String },
    /// Objects arriving, at most every 100 ms and once when complete.
    Transfer {
        received_objects: usize,
        total_objects: usize,
        received_bytes: usize,
    },
    /// The repository's commit (submodules included) is checked out. Sent once, last.
    CheckedOut { sha: String },
}

/// Why the source stage failed. URLs in here never carry credentials and no message contains
/// the token.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("no branch, tag or commit `{reference}` in {url}: {hint}")]
    ReferenceNotFound {
        url: String,
        reference: String,
        hint: &'static str,
    },
    #[error("{}", authentication_message(url, *token_given))]
    AuthenticationFailed { url: String, token_given: bool },
    #[error(
        "could not reach {url} ({detail}): check the network and that the server is up, then retry"
    )]
    Network { url: String, detail: String },
    #[error(
        "the TLS certificate of {url} is not trusted ({detail}): if a private certificate authority signs it, set SSL_CERT_FILE to that authority's certificate (PEM)"
    )]
    UntrustedCertificate { url: String, detail: String },
    #[error("no git repository at {url}: check the repository URL and that the token can read it")]
    RepositoryNotFound { url: String },
    #[error(
        "cannot fetch {url}: only https://, http://, file:// URLs and local paths are supported; use the https:// URL of the repository"
    )]
    UnsupportedUrl { url: String },
    #[error(
        "`{reference}` in {url} is commit {actual}, not the expected {expected}: the reference moved after the run was triggered; start a run for the new commit or pin the reference to the sha"
    )]
    ShaMismatch {
        url: String,
        reference: String,
        expected: String,
        actual: String,
    },
    #[error("cannot check out into {}: the directory is not empty; use an empty or new directory", path.display())]
    CheckoutDirNotEmpty { path: PathBuf },
    #[error("cannot use {} as the checkout directory: {source}", path.display())]
    CheckoutDir { path: PathBuf, source: io::Error },
    #[error("could not check out commit {sha} into {}: {detail}", path.display())]
    Checkout {
        sha: String,
        path: PathBuf,
        detail: String,
    },
    #[error("could not use the git cache at {}: {source}; check that the directory is writable and the disk is not full", path.display())]
    Cache { path: PathBuf, source: io::Error },
    #[error(
        "submodules nested deeper than {MAX_SUBMODULE_DEPTH} levels at `{path}`: the .gitmodules files probably form a cycle"
    )]
    SubmodulesTooDeep { path: String },
    #[error(
        "submodule `{path}` of {parent_url} uses local URL {url}: only a local repository may have local submodules; use an https:// or relative URL in .gitmodules"
    )]
    LocalSubmodule {
        path: String,
        parent_url: String,
        url: String,
    },
    #[error("submodule `{path}`: {source}")]
    Submodule {
        path: String,
        #[source]
        source: Box<SourceError>,
    },
    #[error("git failed on {url}: {detail}")]
    Git { url: String, detail: String },
}

fn authentication_message(url: &str, token_given: bool) -> String {
    if token_given {
        format!("authentication failed for {url}; check the token")
    } else {
        format!(
            "authentication failed for {url}: the server asks for credentials and no token was given; provide a token that can read this repository"
        )
    }
}

impl SourceError {
    /// True when the machine or its credentials are at fault rather than the pipeline's input:
    /// the network, the token, the cache directory. Callers map this to the environment exit
    /// code.
    pub fn is_environment(&self) -> bool {
        match self {
            SourceError::Network { .. }
            | SourceError::UntrustedCertificate { .. }
            | SourceError::AuthenticationFailed { .. }
            | SourceError::Cache { .. } => true,
            SourceError::Submodule { source, .. } => source.is_environment(),
            _ => false,
        }
    }
}

/// Fetch `request.url` into its cached mirror and check out the commit `request.reference`
/// names into `request.checkout_dir`, submodules included. Blocks; reports through `progress`.
pub fn fetch(
    request: &SourceRequest,
    progress: &mut dyn FnMut(SourceProgress),
) -> Result<SourceOutput, SourceError> {
    let url = RemoteUrl::parse(&request.url)?;
    let reference = Reference::parse(&request.reference);
    // With a relative target directory libgit2's checkout fails to create files in
    // subdirectories ("could not open 'dir/src/x' for writing"); absolute paths work.
    let cache_dir = std::path::absolute(&request.cache_dir)
        .map_err(|error| cache_error(&request.cache_dir, error))?;
    let checkout_dir =
        std::path::absolute(&request.checkout_dir).map_err(|source| SourceError::CheckoutDir {
            path: request.checkout_dir.clone(),
            source,
        })?;
    let checkout_dir_existed = check_checkout_dir(&checkout_dir)?;
    let source = Source {
        url: &url,
        reference: &reference,
        token: request.token.as_ref(),
        shallow: request.shallow_without_mirror,
    };
    let result = fetch_and_check_out(request, &source, &cache_dir, &checkout_dir, progress);
    if result.is_err() {
        // A half-written checkout would make a retry fail with "not empty"; put the directory
        // back the way the caller handed it over.
        clear_checkout_dir(&checkout_dir, checkout_dir_existed);
    }
    result
}

fn fetch_and_check_out(
    request: &SourceRequest,
    source: &Source<'_>,
    cache_dir: &Path,
    checkout_dir: &Path,
    progress: &mut dyn FnMut(SourceProgress),
) -> Result<SourceOutput, SourceError> {
    progress(SourceProgress::Fetching {
        url: source.url.redacted.clone(),
    });
    let mirror = sync_mirror(cache_dir, source, progress)?;
    let sha = mirror.resolved.commit.to_string();
    if let Some(expected) = &request.expected_sha
        && !expected.eq_ignore_ascii_case(&sha)
    {
        return Err(SourceError::ShaMismatch {
            url: source.url.redacted.clone(),
            reference: request.reference.clone(),
            expected: expected.clone(),
            actual: sha,
        });
    }
    let submodules = check_out(&mirror.repo, mirror.resolved.commit, checkout_dir)?;
    let Mirror {
        resolved, reused, ..
    } = mirror;
    // The mirror and its lock are dropped here: submodules live in other mirrors, and one that
    // pointed back at this URL must not wait for our own lock.
    update_submodules(
        cache_dir,
        source,
        source.url,
        checkout_dir,
        submodules,
        1,
        progress,
    )?;
    progress(SourceProgress::CheckedOut { sha: sha.clone() });
    Ok(SourceOutput {
        short_sha: sha[..7].to_string(),
        sha,
        tag: resolved.tag,
        branch: resolved.branch,
        checkout_dir: request.checkout_dir.clone(),
        fetched_from_mirror: reused,
    })
}

/// One repository to fetch: the top-level one or a submodule.
struct Source<'a> {
    url: &'a RemoteUrl,
    reference: &'a Reference,
    token: Option<&'a Secret>,
    shallow: bool,
}

// ---------------------------------------------------------------------------------------------
// URLs

/// A repository location, in the three forms this module needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteUrl {
    /// Handed to libgit2: the URL as given (embedded credentials may be needed) or, for a local
    /// repository, its absolute path.
    fetch: String,
    /// Safe to print: userinfo removed.
    redacted: String,
    /// `scheme://host[:port]`, lowercased, for network URLs; `None` for local repositories.
    /// The token is only ever sent to the origin it was given for.
    origin: Option<String>,
    /// What the mirror name is derived from: the redacted URL with case-insensitive parts
    /// lowercased and trailing slashes dropped, or the absolute path.
    cache_key: String,
}

impl RemoteUrl {
    pub(crate) fn parse(url: &str) -> Result<Self, SourceError> {
        let url = url.trim();
        if let Some((scheme, rest)) = url.split_once("://") {
            let scheme = scheme.to_ascii_lowercase();
            match scheme.as_str() {
                "http" | "https" => {
                    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                    let host = authority
                        .rsplit_once('@')
                        .map_or(authority, |(_, host)| host);
                    let origin = format!("{scheme}://{}", host.to_ascii_lowercase());
                    Ok(RemoteUrl {
                        fetch: url.to_string(),
                        redacted: redact_url(url),
                        cache_key: format!("{origin}{}", path.trim_end_matches('/')),
                        origin: Some(origin),
                    })
                }
                "file" => Ok(Self::local(Path::new(rest))),
                _ => Err(SourceError::UnsupportedUrl {
                    url: redact_url(url),
                }),
            }
        } else if is_scp_like(url) {
            Err(SourceError::UnsupportedUrl {
                url: url.to_string(),
            })
        } else {
            Ok(Self::local(Path::new(url)))
        }
    }

    fn local(path: &Path) -> Self {
        // The same repository reached by a relative path, a symlink or file:// shares a mirror.
        let absolute = fs::canonicalize(path)
            .or_else(|_| std::path::absolute(path))
            .unwrap_or_else(|_| path.to_path_buf());
        let text = absolute.to_string_lossy().trim_end_matches('/').to_string();
        RemoteUrl {
            fetch: text.clone(),
            redacted: text.clone(),
            origin: None,
            cache_key: text,
        }
    }

    fn is_local(&self) -> bool {
        self.origin.is_none()
    }
}

/// `host:path` and `user@host:path` are git's ssh shorthand, which needs ssh support this build
/// does not have; a colon before the first slash is how git tells them from paths.
fn is_scp_like(url: &str) -> bool {
    match url.find(':') {
        Some(colon) => colon > 1 && !url[..colon].contains('/'),
        None => false,
    }
}

/// `url` with any `user:password@` removed, for messages and progress.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |offset| authority_start + offset);
    match url[authority_start..authority_end].rfind('@') {
        Some(at) => format!(
            "{}{}",
            &url[..authority_start],
            &url[authority_start + at + 1..]
        ),
        None => url.to_string(),
    }
}

/// The file name (without extension) of a URL's mirror: a stable hash of its cache key, so
/// runs find the same mirror across versions. Changing this orphans every existing cache.
pub(crate) fn mirror_name(cache_key: &str) -> String {
    let digest = Sha256::digest(cache_key.as_bytes());
    hex::encode(&digest[..16])
}

/// A submodule URL from .gitmodules, made absolute the way git does: `./x` and `../x` are
/// relative to the superproject's URL, anything else is used as is.
pub(crate) fn resolve_submodule_url(parent: &str, url: &str) -> String {
    if !(url.starts_with("./") || url.starts_with("../")) {
        return url.to_string();
    }
    let mut base = parent.trim_end_matches('/').to_string();
    // `../` never climbs above `scheme://host`.
    let floor = base.find("://").map_or(0, |at| at + 3);
    let mut rest = url;
    loop {
        if let Some(after) = rest.strip_prefix("./") {
            rest = after;
        } else if let Some(after) = rest.strip_prefix("../") {
            rest = after;
            if let Some(slash) = base.rfind('/').filter(|&slash| slash >= floor) {
                base.truncate(slash);
            }
        } else {
            break;
        }
    }
    if rest.is_empty() {
        base
    } else {
        format!("{base}/{rest}")
    }
}

// ---------------------------------------------------------------------------------------------
// References

#[derive(Debug, Clone, PartialEq, Eq)]
enum Reference {
    Commit(Oid),
    /// `refs/...`
    Full(String),
    /// A tag or branch name.
    Name(String),
}

impl Reference {
    fn parse(text: &str) -> Self {
        let text = text.trim();
        if text.len() == 40
            && text.bytes().all(|byte| byte.is_ascii_hexdigit())
            && let Ok(oid) = Oid::from_str(text)
        {
            return Reference::Commit(oid);
        }
        if text.starts_with("refs/") {
            Reference::Full(text.to_string())
        } else {
            Reference::Name(text.to_string())
        }
    }

    /// The full ref names this reference may mean, most preferred first. Invalid names (spaces,
    /// `*`, `..`) mean nothing, which also keeps them out of refspecs.
    fn candidates(&self) -> Vec<String> {
        let names = match self {
            Reference::Commit(_) => vec![],
            Reference::Full(name) => vec![name.clone()],
            Reference::Name(name) => {
                vec![format!("refs/tags/{name}"), format!("refs/heads/{name}")]
            }
        };
        names
            .into_iter()
            .filter(|name| git2::Reference::is_valid_name(name))
            .collect()
    }

    fn not_found(&self, url: &RemoteUrl) -> SourceError {
        let (reference, hint) = match self {
            Reference::Commit(oid) => (
                oid.to_string(),
                "check that the commit was pushed to a branch or tag of this repository",
            ),
            Reference::Full(name) => (name.clone(), "check the ref name"),
            Reference::Name(name) => (name.clone(), "check the release tag or branch name"),
        };
        SourceError::ReferenceNotFound {
            url: url.redacted.clone(),
            reference,
            hint,
        }
    }
}

/// A reference resolved in a mirror.
#[derive(Debug)]
struct Resolved {
    commit: Oid,
    tag: Option<String>,
    branch: Option<String>,
}

fn resolve(repo: &Repository, reference: &Reference) -> Option<Resolved> {
    if let Reference::Commit(oid) = reference {
        let commit = repo.find_commit(*oid).ok()?.id();
        return Some(Resolved {
            commit,
            tag: tag_pointing_at(repo, commit),
            branch: None,
        });
    }
    let (name, commit) = reference.candidates().into_iter().find_map(|name| {
        let commit = repo.find_reference(&name).ok()?.peel_to_commit().ok()?;
        Some((name, commit.id()))
    })?;
    Some(Resolved {
        commit,
        tag: name.strip_prefix("refs/tags/").map(str::to_string),
        branch: name.strip_prefix("refs/heads/").map(str::to_string),
    })
}

/// The first tag (by name) whose commit is `commit`, so a sha-triggered run still knows its
/// release tag.
fn tag_pointing_at(repo: &Repository, commit: Oid) -> Option<String> {
    let mut names: Vec<String> = repo
        .references_glob("refs/tags/*")
        .ok()?
        .filter_map(Result::ok)
        .filter(|reference| {
            reference
                .peel_to_commit()
                .is_ok_and(|tagged| tagged.id() == commit)
        })
        .filter_map(|reference| {
            Some(
                reference
                    .name()
                    .ok()?
                    .strip_prefix("refs/tags/")?
                    .to_string(),
            )
        })
        .collect();
    names.sort();
    names.into_iter().next()
}

// ---------------------------------------------------------------------------------------------
// The mirror

/// An up-to-date mirror holding the resolved commit, locked for as long as this lives.
struct Mirror {
    repo: Repository,
    resolved: Resolved,
    reused: bool,
    _lock: File,
}

/// Bring the mirror of `source.url` up to date (creating or replacing it as needed) and resolve
/// the reference in it.
fn sync_mirror(
    cache_dir: &Path,
    source: &Source<'_>,
    progress: &mut dyn FnMut(SourceProgress),
) -> Result<Mirror, SourceError> {
    let root = cache_dir.join("git");
    fs::create_dir_all(&root).map_err(|error| cache_error(&root, error))?;
    let name = mirror_name(&source.url.cache_key);
    let lock = lock_mirror(&root, &name)?;
    remove_leftovers(&root, &name)?;
    let path = root.join(format!("{name}.git"));
    let session = Session {
        url: source.url,
        token: source.token,
    };

    let existing = open_existing(&root, &path)?;
    let wants_shallow = source.shallow && !source.url.is_local();

    if let Some(repo) = existing {
        recover_interrupted_fetch(&path);
        // A commit already here is all a sha reference needs.
        if let Reference::Commit(_) = source.reference
            && let Some(resolved) = resolve(&repo, source.reference)
        {
            return Ok(Mirror {
                repo,
                resolved,
                reused: true,
                _lock: lock,
            });
        }
        if !repo.is_shallow() {
            fetch_full(&session, &repo, source.reference, progress)?;
            let resolved = resolve_or_fetch_commit(&session, &repo, source.reference, progress)?;
            return Ok(Mirror {
                repo,
                resolved,
                reused: true,
                _lock: lock,
            });
        }
        if wants_shallow && session.fetch_shallow(&repo, source.reference, progress)? {
            let resolved = resolve(&repo, source.reference)
                .ok_or_else(|| source.reference.not_found(source.url))?;
            return Ok(Mirror {
                repo,
                resolved,
                reused: true,
                _lock: lock,
            });
        }
        // A shallow mirror that cannot serve this request: superseded by a full one below.
    } else if wants_shallow {
        let staging = Staging::create(&root, &name, source.url)?;
        if session.fetch_shallow(&staging.repo, source.reference, progress)? {
            let repo = staging.install(&path)?;
            let resolved = resolve(&repo, source.reference)
                .ok_or_else(|| source.reference.not_found(source.url))?;
            return Ok(Mirror {
                repo,
                resolved,
                reused: false,
                _lock: lock,
            });
        }
        // The commit is at no branch or tag tip, so depth 1 of a ref cannot reach it.
    }

    let staging = Staging::create(&root, &name, source.url)?;
    fetch_full(&session, &staging.repo, source.reference, progress)?;
    let repo = staging.install(&path)?;
    // A reference that is not there still leaves a good mirror for the next run.
    let resolved = resolve_or_fetch_commit(&session, &repo, source.reference, progress)?;
    Ok(Mirror {
        repo,
        resolved,
        reused: false,
        _lock: lock,
    })
}

fn cache_error(path: &Path, source: io::Error) -> SourceError {
    SourceError::Cache {
        path: path.to_path_buf(),
        source,
    }
}

/// Lock the mirror `name` exclusively, waiting for another process that holds it. The lock file
/// is never removed: removing it would let two processes lock two different files.
fn lock_mirror(root: &Path, name: &str) -> Result<File, SourceError> {
    let path = root.join(format!("{name}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|error| cache_error(&path, error))?;
    file.lock().map_err(|error| cache_error(&path, error))?;
    Ok(file)
}

/// Remove what a killed process left while creating or replacing this mirror. Only the lock
/// holder writes these, so under the lock they are certainly abandoned.
fn remove_leftovers(root: &Path, name: &str) -> Result<(), SourceError> {
    let entries = fs::read_dir(root).map_err(|error| cache_error(root, error))?;
    let temporary = format!("{name}.tmp-");
    let retired = format!("{name}.old-");
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        if file_name.starts_with(&temporary) || file_name.starts_with(&retired) {
            fs::remove_dir_all(entry.path()).map_err(|error| cache_error(&entry.path(), error))?;
        }
    }
    Ok(())
}

/// The mirror at `path`, if there is a usable one. One that does not open (damaged by hand, or
/// by a disk error) is moved aside and rebuilt rather than failing every run.
fn open_existing(root: &Path, path: &Path) -> Result<Option<Repository>, SourceError> {
    if !path.exists() {
        return Ok(None);
    }
    match Repository::open_bare(path) {
        Ok(repo) => Ok(Some(repo)),
        Err(_) => {
            retire(root, path)?;
            Ok(None)
        }
    }
}

/// Move the mirror at `path` out of the way and delete it.
fn retire(root: &Path, path: &Path) -> Result<(), SourceError> {
    let name = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    let retired = tempfile::Builder::new()
        .prefix(&format!("{name}.old-"))
        .tempdir_in(root)
        .map_err(|error| cache_error(root, error))?;
    // Renaming onto the empty directory is atomic; the old mirror is then deleted with it.
    fs::rename(path, retired.path()).map_err(|error| cache_error(path, error))?;
    drop(retired);
    Ok(())
}

/// Lock files and temporary packs a killed libgit2 left in an existing mirror. A stale
/// `refs/heads/main.lock` would otherwise make every later fetch fail to update `main`.
fn recover_interrupted_fetch(mirror: &Path) {
    fn remove_lock_files(dir: &Path) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                remove_lock_files(&path);
            } else if path
                .extension()
                .is_some_and(|extension| extension == "lock")
            {
                let _ = fs::remove_file(&path);
            }
        }
    }
    remove_lock_files(&mirror.join("refs"));
    for file in [
        "packed-refs.lock",
        "shallow.lock",
        "config.lock",
        "HEAD.lock",
        "FETCH_HEAD.lock",
    ] {
        let _ = fs::remove_file(mirror.join(file));
    }
    if let Ok(entries) = fs::read_dir(mirror.join("objects/pack")) {
        for entry in entries.flatten() {
            // libgit2's indexer writes `pack_git2_XXXXXX` and renames it once complete.
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with("pack_git2_")
            {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// A mirror being created next to its final place; deleted on drop unless installed.
struct Staging {
    dir: tempfile::TempDir,
    repo: Repository,
}

impl Staging {
    fn create(root: &Path, name: &str, url: &RemoteUrl) -> Result<Self, SourceError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}.tmp-"))
            .tempdir_in(root)
            .map_err(|error| cache_error(root, error))?;
        // Without git's template directory: hook samples and the like are a dozen files to
        // write that a mirror never uses.
        let mut options = git2::RepositoryInitOptions::new();
        options.bare(true).external_template(false);
        let repo =
            Repository::init_opts(dir.path(), &options).map_err(|error| SourceError::Cache {
                path: dir.path().to_path_buf(),
                source: io::Error::other(error.message().to_string()),
            })?;
        // For whoever looks into the cache: which URL this mirror is of.
        if let Ok(mut config) = repo.config() {
            let _ = config.set_str("envelope.url", &url.redacted);
        }
        Ok(Staging { dir, repo })
    }

    /// Put the fetched mirror at `path`, replacing (shallow) one there, and open it.
    fn install(self, path: &Path) -> Result<Repository, SourceError> {
        let Staging { dir, repo } = self;
        drop(repo);
        let root = path.parent().unwrap_or(Path::new("."));
        if path.exists() {
            retire(root, path)?;
        }
        let staged = dir.keep();
        if let Err(error) = fs::rename(&staged, path) {
            let _ = fs::remove_dir_all(&staged);
            return Err(cache_error(path, error));
        }
        Repository::open_bare(path).map_err(|error| SourceError::Cache {
            path: path.to_path_buf(),
            source: io::Error::other(error.message().to_string()),
        })
    }
}

/// Fetch every branch and tag (and a full ref outside those, if that is the reference) into a
/// full mirror, pruning what the remote deleted.
fn fetch_full(
    session: &Session<'_>,
    repo: &Repository,
    reference: &Reference,
    progress: &mut dyn FnMut(SourceProgress),
) -> Result<(), SourceError> {
    let mut refspecs: Vec<String> = MIRROR_REFSPECS
        .iter()
        .map(|spec| spec.to_string())
        .collect();
    if let Reference::Full(name) = reference
        && !name.starts_with("refs/heads/")
        && !name.starts_with("refs/tags/")
        && git2::Reference::is_valid_name(name)
    {
        refspecs.push(format!("+{name}:{name}"));
    }
    session.fetch(repo, &refspecs, FetchShape::Mirror, progress)
}

/// Resolve the reference in a full mirror; a commit on no branch or tag (a pull request's head,
/// say) is then asked for by id, which GitHub allows for reachable commits.
fn resolve_or_fetch_commit(
    session: &Session<'_>,
    repo: &Repository,
    reference: &Reference,
    progress: &mut dyn FnMut(SourceProgress),
) -> Result<Resolved, SourceError> {
    if let Some(resolved) = resolve(repo, reference) {
        return Ok(resolved);
    }
    if let Reference::Commit(oid) = reference {
        match session.fetch(repo, &[oid.to_string()], FetchShape::Objects, progress) {
            Ok(()) => {}
            Err(error) if lost_connection(&error) => return Err(error),
            // The server refuses an unknown id mid-protocol ("not our ref"), which libgit2
            // reports like a broken connection; the fetch just before shows the network is up.
            Err(_) => return Err(reference.not_found(session.url)),
        }
        if let Some(resolved) = resolve(repo, reference) {
            return Ok(resolved);
        }
    }
    Err(reference.not_found(session.url))
}

/// Authentication refused, or the server could not be reached at all.
fn lost_connection(error: &SourceError) -> bool {
    match error {
        SourceError::AuthenticationFailed { .. } | SourceError::Cache { .. } => true,
        SourceError::Network { detail, .. } => {
            detail.starts_with("failed to connect") || detail.starts_with("failed to resolve")
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Talking to the remote

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FetchShape {
    /// Refspecs with wildcards into a full mirror; refs the remote deleted are pruned.
    Mirror,
    /// Depth 1 of one ref.
    Shallow,
    /// Objects by id; no refs change.
    Objects,
}

/// The URL and token of one repository; makes libgit2 callbacks and turns its errors into
/// [`SourceError`]s.
struct Session<'a> {
    url: &'a RemoteUrl,
    token: Option<&'a Secret>,
}

impl<'a> Session<'a> {
    fn fetch(
        &self,
        repo: &Repository,
        refspecs: &[String],
        shape: FetchShape,
        progress: &mut dyn FnMut(SourceProgress),
    ) -> Result<(), SourceError> {
        let _token = self.transport_token();
        let mut remote = repo
            .remote_anonymous(&self.url.fetch)
            .map_err(|error| self.error(error))?;
        let mut options = self.fetch_options(shape, progress);
        // An explicit reflog message: libgit2's default would record the URL, credentials and
        // all.
        remote
            .fetch(refspecs, Some(&mut options), Some("envelope-runner fetch"))
            .map_err(|error| self.error(error))
    }

    /// Fetch depth 1 of the one ref the reference means. Returns false when the reference is a
    /// commit at no ref's tip (only a full fetch can find it).
    fn fetch_shallow(
        &self,
        repo: &Repository,
        reference: &Reference,
        progress: &mut dyn FnMut(SourceProgress),
    ) -> Result<bool, SourceError> {
        let _token = self.transport_token();
        let mut remote = repo
            .remote_anonymous(&self.url.fetch)
            .map_err(|error| self.error(error))?;
        // One connection for listing refs and fetching: over HTTP the listing is the first
        // request of the fetch anyway, so this costs no extra round trip.
        let mut connection = remote
            .connect_auth(Direction::Fetch, None, None)
            .map_err(|error| self.error(error))?;
        let advertised: Vec<(String, Oid)> = connection
            .list()
            .map_err(|error| self.error(error))?
            .iter()
            .map(|head| (head.name().to_string(), head.oid()))
            .collect();
        let Some((name, oid)) = pick_advertised(&advertised, reference) else {
            return match reference {
                Reference::Commit(_) => Ok(false),
                _ => Err(reference.not_found(self.url)),
            };
        };
        // A shallow mirror that already has this ref at this id has nothing to fetch.
        if repo.refname_to_id(&name).is_ok_and(|local| local == oid) {
            return Ok(true);
        }
        let mut options = self.fetch_options(FetchShape::Shallow, progress);
        connection
            .remote()
            .fetch(
                &[format!("+{name}:{name}")],
                Some(&mut options),
                Some("envelope-runner fetch"),
            )
            .map_err(|error| self.error(error))?;
        Ok(true)
    }

    /// Hands the token to the HTTP transport for the fetches made until the guard drops.
    fn transport_token(&self) -> http::TokenGuard {
        http::register();
        http::with_token(&self.url.fetch, self.token)
    }

    fn fetch_options<'cb>(
        &'cb self,
        shape: FetchShape,
        progress: &'cb mut dyn FnMut(SourceProgress),
    ) -> FetchOptions<'cb> {
        // The token travels with the HTTP transport (`http`), not through libgit2's credential
        // callback.
        let mut callbacks = RemoteCallbacks::new();
        let mut reporter = TransferReporter::default();
        callbacks.transfer_progress(move |stats| {
            reporter.report(
                stats.received_objects(),
                stats.total_objects(),
                stats.received_bytes(),
                progress,
            );
            true
        });
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(callbacks)
            // FETCH_HEAD is of no use to a mirror and is one more file to write.
            .update_fetchhead(false)
            // Tags come through the explicit refs/tags/* refspec or not at all.
            .download_tags(AutotagOption::None)
            .prune(match shape {
                FetchShape::Mirror => FetchPrune::On,
                FetchShape::Shallow | FetchShape::Objects => FetchPrune::Off,
            });
        if shape == FetchShape::Shallow {
            options.depth(1);
        }
        options
    }

    fn error(&self, error: git2::Error) -> SourceError {
        let url = self.url.redacted.clone();
        let status = http_status(error.message());
        if error.code() == ErrorCode::Auth || matches!(status, Some(401 | 403)) {
            return SourceError::AuthenticationFailed {
                url,
                token_given: self.token.is_some(),
            };
        }
        if status == Some(404) || (self.url.is_local() && !Path::new(&self.url.fetch).exists()) {
            return SourceError::RepositoryNotFound { url };
        }
        let detail = self.scrub(error.message());
        if let Some((_, reason)) = detail.split_once("invalid peer certificate: ") {
            return SourceError::UntrustedCertificate {
                url,
                detail: reason.trim_end_matches(')').to_owned(),
            };
        }
        match error.class() {
            ErrorClass::Net | ErrorClass::Http | ErrorClass::Ssl => {
                SourceError::Network { url, detail }
            }
            ErrorClass::Os if detail.starts_with("failed to connect") => {
                SourceError::Network { url, detail }
            }
            _ => SourceError::Git { url, detail },
        }
    }

    /// A libgit2 message without the credentials it may quote.
    fn scrub(&self, message: &str) -> String {
        let mut message = message.replace(&self.url.fetch, &self.url.redacted);
        if let Some(token) = self.token.filter(|token| !token.is_empty()) {
            message = message.replace(token.expose(), "***");
        }
        message
    }
}

/// The status in libgit2's "unexpected http status code: 404".
fn http_status(message: &str) -> Option<u16> {
    message
        .strip_prefix("unexpected http status code: ")?
        .trim()
        .parse()
        .ok()
}

/// The advertised ref to fetch for `reference`, with the id the remote has for it.
fn pick_advertised(advertised: &[(String, Oid)], reference: &Reference) -> Option<(String, Oid)> {
    let find = |name: &str| {
        advertised
            .iter()
            .find(|(advertised_name, _)| advertised_name == name)
            .cloned()
    };
    match reference {
        Reference::Commit(oid) => {
            // An annotated tag is advertised twice: as the tag object and, with `^{}`, peeled
            // to its commit.
            let tip = advertised
                .iter()
                .filter(|(_, id)| id == oid)
                .map(|(name, _)| name.trim_end_matches("^{}"))
                .find(|name| name.starts_with("refs/heads/") || name.starts_with("refs/tags/"))?;
            find(tip)
        }
        _ => reference
            .candidates()
            .iter()
            .find_map(|candidate| find(candidate)),
    }
}

/// Turns libgit2's per-object progress into a few events a second.
#[derive(Default)]
struct TransferReporter {
    last: Option<(Instant, usize, usize)>,
}

impl TransferReporter {
    fn report(
        &mut self,
        received_objects: usize,
        total_objects: usize,
        received_bytes: usize,
        progress: &mut dyn FnMut(SourceProgress),
    ) {
        let now = Instant::now();
        let due = match self.last {
            None => true,
            // libgit2 keeps reporting while it resolves deltas; the counts no longer change.
            Some((_, received, total))
                if received == received_objects && total == total_objects =>
            {
                false
            }
            Some((at, _, _)) => {
                received_objects == total_objects || now.duration_since(at) >= PROGRESS_INTERVAL
            }
        };
        if due {
            self.last = Some((now, received_objects, total_objects));
            progress(SourceProgress::Transfer {
                received_objects,
                total_objects,
                received_bytes,
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checkout and submodules

/// Whether the directory existed; an error if it holds anything.
fn check_checkout_dir(dir: &Path) -> Result<bool, SourceError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                Err(SourceError::CheckoutDirNotEmpty {
                    path: dir.to_path_buf(),
                })
            } else {
                Ok(true)
            }
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(SourceError::CheckoutDir {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

fn clear_checkout_dir(dir: &Path, existed: bool) {
    let _ = fs::remove_dir_all(dir);
    if existed {
        let _ = fs::create_dir_all(dir);
    }
}

/// A submodule of a checked-out commit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SubmoduleEntry {
    path: String,
    url: String,
    commit: Oid,
}

/// Write `commit`'s tree into `dir` and list the submodules it pins.
fn check_out(
    repo: &Repository,
    commit: Oid,
    dir: &Path,
) -> Result<Vec<SubmoduleEntry>, SourceError> {
    let failed = |detail: String| SourceError::Checkout {
        sha: commit.to_string(),
        path: dir.to_path_buf(),
        detail,
    };
    fs::create_dir_all(dir).map_err(|error| failed(error.to_string()))?;
    let tree = repo
        .find_commit(commit)
        .and_then(|commit| commit.tree())
        .map_err(|error| failed(error.message().to_string()))?;
    // Checked out from an in-memory index of the tree without its gitlinks: for a gitlink,
    // libgit2's checkout looks the submodule up in the repository, which fails in a bare one
    // ("cannot get submodules without a working tree"). Submodules are handled separately.
    let mut index = git2::Index::new().map_err(|error| failed(error.message().to_string()))?;
    index
        .read_tree(&tree)
        .map_err(|error| failed(error.message().to_string()))?;
    let gitlinks: Vec<String> = index
        .iter()
        .filter(|entry| entry.mode == GITLINK_MODE)
        .map(|entry| String::from_utf8_lossy(&entry.path).into_owned())
        .collect();
    for path in &gitlinks {
        index
            .remove(Path::new(path), 0)
            .map_err(|error| failed(error.message().to_string()))?;
    }
    let mut checkout = CheckoutBuilder::new();
    // With an index that is not on disk libgit2 treats this as an initial checkout (empty
    // baseline, not the mirror's HEAD). force + recreate_missing make sure every file is
    // written even if that changes: files shared with a baseline would otherwise count as
    // "deleted in the work tree" and be skipped. update_index(false): the index is ours.
    checkout
        .force()
        .recreate_missing(true)
        .update_index(false)
        .target_dir(dir);
    repo.checkout_index(Some(&mut index), Some(&mut checkout))
        .map_err(|error| failed(error.message().to_string()))?;
    submodules_of(&tree, dir).map_err(failed)
}

/// The submodules .gitmodules declares that the tree pins to a commit, sorted by path. Entries
/// with `update = none` are skipped, as git does; entries without a pinned commit in the tree
/// are stale and ignored.
fn submodules_of(tree: &git2::Tree<'_>, dir: &Path) -> Result<Vec<SubmoduleEntry>, String> {
    let gitmodules = dir.join(".gitmodules");
    if tree.get_path(Path::new(".gitmodules")).is_err() || !gitmodules.is_file() {
        return Ok(Vec::new());
    }
    let config = git2::Config::open(&gitmodules)
        .map_err(|error| format!("cannot read .gitmodules: {}", error.message()))?;
    let mut declared: std::collections::BTreeMap<String, (Option<String>, Option<String>, bool)> =
        Default::default();
    let mut entries = config
        .entries(None)
        .map_err(|error| format!("cannot read .gitmodules: {}", error.message()))?;
    while let Some(entry) = entries.next() {
        let Ok(entry) = entry else { continue };
        let (Ok(key), Ok(value)) = (entry.name(), entry.value()) else {
            continue;
        };
        // submodule.<name>.<variable>, where <name> may itself contain dots.
        let Some((name, variable)) = key
            .strip_prefix("submodule.")
            .and_then(|rest| rest.rsplit_once('.'))
        else {
            continue;
        };
        let slot = declared.entry(name.to_string()).or_default();
        match variable {
            "path" => slot.0 = Some(value.to_string()),
            "url" => slot.1 = Some(value.to_string()),
            "update" => slot.2 = value == "none",
            _ => {}
        }
    }
    let mut submodules: Vec<SubmoduleEntry> = declared
        .into_values()
        .filter_map(|(path, url, skip)| {
            let (path, url) = (path?, url?);
            let relative = Path::new(&path);
            // Only plain relative paths: .gitmodules must not point a checkout outside `dir`.
            if skip
                || !relative
                    .components()
                    .all(|part| matches!(part, Component::Normal(_)))
            {
                return None;
            }
            let entry = tree.get_path(relative).ok()?;
            (entry.kind() == Some(ObjectType::Commit)).then(|| SubmoduleEntry {
                path,
                url,
                commit: entry.id(),
            })
        })
        .collect();
    submodules.sort_by(|left, right| left.path.cmp(&right.path));
    Ok(submodules)
}

/// Fetch and check out each submodule at its pinned commit, then theirs, like
/// `git submodule update --init --recursive`. Each submodule URL gets its own cached mirror.
fn update_submodules(
    cache_dir: &Path,
    top: &Source<'_>,
    parent_url: &RemoteUrl,
    parent_dir: &Path,
    submodules: Vec<SubmoduleEntry>,
    depth: usize,
    progress: &mut dyn FnMut(SourceProgress),
) -> Result<(), SourceError> {
    for submodule in submodules {
        let wrap = |source: SourceError| SourceError::Submodule {
            path: submodule.path.clone(),
            source: Box::new(source),
        };
        if depth > MAX_SUBMODULE_DEPTH {
            return Err(SourceError::SubmodulesTooDeep {
                path: submodule.path,
            });
        }
        let url = RemoteUrl::parse(&resolve_submodule_url(&parent_url.fetch, &submodule.url))
            .map_err(wrap)?;
        // As git's protocol.file.allow=user: a repository from the network must not make the
        // runner read local repositories into a build.
        if url.is_local() && !parent_url.is_local() {
            return Err(SourceError::LocalSubmodule {
                path: submodule.path,
                parent_url: parent_url.redacted.clone(),
                url: url.redacted,
            });
        }
        // The token is for the repository's own origin; same host and scheme, so it never
        // leaves over plain HTTP or to another host.
        let token = top
            .token
            .filter(|_| url.origin.is_some() && url.origin == top.url.origin);
        let reference = Reference::Commit(submodule.commit);
        let source = Source {
            url: &url,
            reference: &reference,
            token,
            shallow: top.shallow,
        };
        let dir = parent_dir.join(&submodule.path);
        progress(SourceProgress::Fetching {
            url: url.redacted.clone(),
        });
        let nested = (|| {
            check_checkout_dir(&dir)?;
            let mirror = sync_mirror(cache_dir, &source, progress)?;
            check_out(&mirror.repo, submodule.commit, &dir)
        })()
        .map_err(wrap)?;
        update_submodules(cache_dir, top, &url, &dir, nested, depth + 1, progress).map_err(wrap)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_removes_userinfo_only() {
        let cases = [
            ("https://github.com/o/r.git", "https://github.com/o/r.git"),
            (
                "https://x-access-token:ghs_abc@github.com/o/r.git",
                "https://github.com/o/r.git",
            ),
            ("https://user@host:8443/r.git", "https://host:8443/r.git"),
            ("http://a:b@127.0.0.1:9/x?y=@z", "http://127.0.0.1:9/x?y=@z"),
            ("https://p@ss:w@rd@host/r", "https://host/r"),
            ("file:///srv/git/r.git", "file:///srv/git/r.git"),
            ("/srv/git/user@host/r.git", "/srv/git/user@host/r.git"),
        ];
        for (url, expected) in cases {
            assert_eq!(redact_url(url), expected, "{url}");
        }
    }

    #[test]
    fn urls_parse_into_fetch_redacted_and_origin() {
        let url = RemoteUrl::parse("HTTPS://tok:en@GitHub.com/Owner/Repo.git/").unwrap();
        assert_eq!(url.fetch, "HTTPS://tok:en@GitHub.com/Owner/Repo.git/");
        assert_eq!(url.redacted, "HTTPS://GitHub.com/Owner/Repo.git/");
        assert_eq!(url.origin.as_deref(), Some("https://github.com"));
        assert_eq!(url.cache_key, "https://github.com/Owner/Repo.git");

        let local = RemoteUrl::parse("file:///nonexistent/repo.git").unwrap();
        assert!(local.is_local());
        assert_eq!(local.fetch, "/nonexistent/repo.git");
        assert_eq!(RemoteUrl::parse("/nonexistent/repo.git/").unwrap(), local);

        for unsupported in ["git@github.com:o/r.git", "ssh://git@github.com/o/r.git"] {
            assert!(
                matches!(
                    RemoteUrl::parse(unsupported),
                    Err(SourceError::UnsupportedUrl { .. })
                ),
                "{unsupported}"
            );
        }
    }

    #[test]
    fn mirror_names_are_stable_and_ignore_credentials() {
        let plain = RemoteUrl::parse("https://github.com/o/r.git").unwrap();
        let with_token = RemoteUrl::parse("https://x:secret@github.com/o/r.git").unwrap();
        let other = RemoteUrl::parse("https://github.com/o/other.git").unwrap();
        assert_eq!(
            mirror_name(&plain.cache_key),
            mirror_name(&with_token.cache_key)
        );
        assert_ne!(mirror_name(&plain.cache_key), mirror_name(&other.cache_key));
        // Pinned: a different value would orphan every mirror in existing caches.
        assert_eq!(
            mirror_name("https://github.com/o/r.git"),
            "bc3fbd4dd8dbadfc9793e2a816228cf8"
        );
    }

    #[test]
    fn submodule_urls_resolve_like_git() {
        let cases = [
            (
                "https://h/org/app.git",
                "../lib.git",
                "https://h/org/lib.git",
            ),
            (
                "https://h/org/app.git/",
                "../lib.git",
                "https://h/org/lib.git",
            ),
            (
                "https://h/org/app.git",
                "./lib",
                "https://h/org/app.git/lib",
            ),
            (
                "https://h/org/app.git",
                "../../x/lib.git",
                "https://h/x/lib.git",
            ),
            ("https://h/app.git", "../../../lib.git", "https://h/lib.git"),
            ("/srv/git/app.git", "../lib.git", "/srv/git/lib.git"),
            (
                "https://h/org/app.git",
                "https://other/lib.git",
                "https://other/lib.git",
            ),
        ];
        for (parent, url, expected) in cases {
            assert_eq!(
                resolve_submodule_url(parent, url),
                expected,
                "{parent} + {url}"
            );
        }
    }

    #[test]
    fn references_parse_by_shape() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            Reference::parse(sha),
            Reference::Commit(Oid::from_str(sha).unwrap())
        );
        assert_eq!(
            Reference::parse("refs/pull/7/head"),
            Reference::Full("refs/pull/7/head".into())
        );
        assert_eq!(Reference::parse("v1.2.3"), Reference::Name("v1.2.3".into()));
        assert_eq!(
            Reference::parse("v1.2.3").candidates(),
            ["refs/tags/v1.2.3", "refs/heads/v1.2.3"]
        );
        // Refspec syntax never reaches libgit2 through a reference.
        assert!(Reference::parse("main:evil").candidates().is_empty());
        assert!(Reference::parse("*").candidates().is_empty());
    }

    #[test]
    fn advertised_refs_are_picked_tag_first_and_peeled() {
        let oid = |n: u8| Oid::from_bytes(&[n; 20]).unwrap();
        let advertised = vec![
            ("HEAD".to_string(), oid(1)),
            ("refs/heads/main".to_string(), oid(1)),
            ("refs/heads/v2".to_string(), oid(2)),
            ("refs/tags/v2".to_string(), oid(3)),
            ("refs/tags/v2^{}".to_string(), oid(4)),
        ];
        let pick = |reference: Reference| pick_advertised(&advertised, &reference);
        assert_eq!(
            pick(Reference::Name("v2".into())),
            Some(("refs/tags/v2".into(), oid(3)))
        );
        assert_eq!(
            pick(Reference::Name("main".into())),
            Some(("refs/heads/main".into(), oid(1)))
        );
        assert_eq!(
            pick(Reference::Commit(oid(4))),
            Some(("refs/tags/v2".into(), oid(3)))
        );
        assert_eq!(pick(Reference::Commit(oid(9))), None);
        assert_eq!(pick(Reference::Name("v9".into())), None);
    }

    #[test]
    fn error_messages_tell_what_to_do() {
        let url = RemoteUrl::parse("https://x:tok@host/repo.git").unwrap();
        assert_eq!(
            Reference::parse("v9.9.9").not_found(&url).to_string(),
            "no branch, tag or commit `v9.9.9` in https://host/repo.git: check the release tag or branch name"
        );
        let auth = SourceError::AuthenticationFailed {
            url: url.redacted.clone(),
            token_given: true,
        };
        assert_eq!(
            auth.to_string(),
            "authentication failed for https://host/repo.git; check the token"
        );
        assert!(auth.is_environment());
        assert!(!Reference::parse("v9").not_found(&url).is_environment());
        let nested = SourceError::Submodule {
            path: "lib".into(),
            source: Box::new(SourceError::Network {
                url: url.redacted.clone(),
                detail: "failed to connect to host".into(),
            }),
        };
        assert!(nested.is_environment());
        assert_eq!(http_status("unexpected http status code: 404"), Some(404));
        assert_eq!(http_status("early EOF"), None);
    }

    #[test]
    fn transfer_progress_is_throttled_and_ends_complete() {
        let mut events = Vec::new();
        let mut reporter = TransferReporter::default();
        for received in 0..=1000 {
            reporter.report(received, 1000, received * 10, &mut |event| {
                events.push(event)
            });
        }
        // Deltas being resolved: the same counts again, not worth an event.
        reporter.report(1000, 1000, 10_000, &mut |event| events.push(event));
        assert!(events.len() < 10, "{} events", events.len());
        assert_eq!(
            events.last(),
            Some(&SourceProgress::Transfer {
                received_objects: 1000,
                total_objects: 1000,
                received_bytes: 10_000
            })
        );
    }

    #[test]
    fn public_types_can_cross_threads() {
        fn send<T: Send + 'static>() {}
        send::<SourceRequest>();
        send::<SourceOutput>();
        send::<SourceProgress>();
        send::<SourceError>();
        fn sync<T: Sync>() {}
        sync::<SourceError>();
    }
}
