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
//! `<name>` is a hash of the URL with credentials removed (see [`url::mirror_name`]), so a changed
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

use std::io;
use std::path::{Path, PathBuf};

use crate::secret::Secret;

use checkout::{check_checkout_dir, check_out, clear_checkout_dir, update_submodules};
use mirror::{Mirror, cache_error, sync_mirror};
use reference::Reference;
use url::RemoteUrl;

mod checkout;
mod http;
mod mirror;
mod reference;
mod remote;
mod url;

/// The user name GitHub expects next to an installation or personal access token.
const TOKEN_USER: &str = "x-access-token";

/// Git itself stops at this depth of nested submodules' recursion in practice; deeper nesting
/// is almost certainly a cycle.
const MAX_SUBMODULE_DEPTH: usize = 10;

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

#[cfg(test)]
mod tests {
    use super::remote::http_status;
    use super::*;

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
