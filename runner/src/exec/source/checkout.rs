//! Checkout: the checkout directory's checks, writing a commit's tree out of a bare mirror, and
//! fetching and checking out its submodules recursively.

use std::fs;
use std::io;
use std::path::{Component, Path};

use git2::build::CheckoutBuilder;
use git2::{ObjectType, Oid, Repository};

use super::mirror::sync_mirror;
use super::reference::Reference;
use super::url::{RemoteUrl, resolve_submodule_url};
use super::{MAX_SUBMODULE_DEPTH, Source, SourceError, SourceProgress};

/// The file mode git gives a submodule's pinned commit in a tree.
const GITLINK_MODE: u32 = 0o160000;

/// Whether the directory existed; an error if it holds anything.
pub(super) fn check_checkout_dir(dir: &Path) -> Result<bool, SourceError> {
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

pub(super) fn clear_checkout_dir(dir: &Path, existed: bool) {
    let _ = fs::remove_dir_all(dir);
    if existed {
        let _ = fs::create_dir_all(dir);
    }
}

/// A submodule of a checked-out commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SubmoduleEntry {
    path: String,
    url: String,
    commit: Oid,
}

/// Write `commit`'s tree into `dir` and list the submodules it pins.
pub(super) fn check_out(
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
pub(super) fn update_submodules(
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
