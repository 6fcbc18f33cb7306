//! The cached bare mirror of one URL: locking it, cleaning up after a killed process, creating,
//! fetching into or replacing it, and resolving the reference in it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

use git2::Repository;

use super::reference::{Reference, Resolved, resolve};
use super::remote::{FetchShape, Session};
use super::url::{RemoteUrl, mirror_name};
use super::{Source, SourceError, SourceProgress};

/// Full-mirror refspecs: every branch and tag, force-updated like `git clone --mirror` does.
const MIRROR_REFSPECS: [&str; 2] = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];

/// An up-to-date mirror holding the resolved commit, locked for as long as this lives.
pub(super) struct Mirror {
    pub(super) repo: Repository,
    pub(super) resolved: Resolved,
    pub(super) reused: bool,
    pub(super) _lock: File,
}

/// Bring the mirror of `source.url` up to date (creating or replacing it as needed) and resolve
/// the reference in it.
pub(super) fn sync_mirror(
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

pub(super) fn cache_error(path: &Path, source: io::Error) -> SourceError {
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
