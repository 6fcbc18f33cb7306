//! The build context: the files under the context directory that `.dockerignore` keeps, as
//! BuildKit's file sync sees them.
//!
//! The daemon pulls the context through the session's `FileSync/DiffCopy` the way it pulls it
//! from the Docker CLI: this side walks the tree and sends one stat per kept entry (in the
//! order Go's `filepath.Walk` visits them, parents before children), the daemon compares them
//! with what it already holds and asks only for the files that changed. Nothing is packed or
//! unpacked on either side, and a rebuild after a one-file change sends one file.
//!
//! Stats carry owner 0:0, as the Docker CLI sends them, so the same tree gives the same cache
//! keys on every machine.

mod walk;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bollard::grpc::build::fsutil::types::Stat;

use super::dockerignore::{IgnoreRules, InvalidPattern};

/// The name BuildKit's Dockerfile frontend asks for the context under.
pub(crate) const CONTEXT_DIR: &str = "context";
/// The name it asks for the directory holding the Dockerfile under.
pub(crate) const DOCKERFILE_DIR: &str = "dockerfile";

/// Go's `os.FileMode` bits, which the file sync protocol carries.
mod go_mode {
    pub(super) const DIR: u32 = 1 << 31;
    pub(super) const SYMLINK: u32 = 1 << 27;
    pub(super) const SETUID: u32 = 1 << 23;
    pub(super) const SETGID: u32 = 1 << 22;
    pub(super) const STICKY: u32 = 1 << 20;
}

/// A context directory with its ignore rules, checked and ready to serve.
#[derive(Debug)]
pub(crate) struct BuildContext {
    root: PathBuf,
    rules: Arc<IgnoreRules>,
    /// Paths sent whatever the ignore file says: the Dockerfile and the ignore file itself.
    always: Arc<BTreeSet<String>>,
    /// The Dockerfile's path inside the context, `/`-separated.
    dockerfile: String,
}

/// What went wrong preparing the context, before anything was sent.
#[derive(Debug)]
pub(crate) enum ContextError {
    ContextDirMissing,
    DockerfileMissing,
    DockerfileOutside,
    IgnoreUnreadable(PathBuf, io::Error),
    IgnoreInvalid(PathBuf, InvalidPattern),
}

/// Totals of what the daemon asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ContextSummary {
    pub(crate) files: u64,
    pub(crate) bytes: u64,
}

/// A failure while walking or reading the context, with the path it concerns.
#[derive(Debug)]
pub(crate) struct WalkError {
    pub(crate) path: PathBuf,
    pub(crate) source: io::Error,
}

impl WalkError {
    /// A failure of the transfer itself rather than of one file.
    pub(crate) fn transfer(kind: io::ErrorKind, message: impl Into<String>) -> WalkError {
        WalkError {
            path: PathBuf::from("build context"),
            source: io::Error::new(kind, message.into()),
        }
    }

    fn at(path: &Path) -> impl FnOnce(io::Error) -> WalkError + '_ {
        move |source| WalkError {
            path: path.to_owned(),
            source,
        }
    }
}

/// One directory the session serves, with the filter its owner set.
#[derive(Debug, Clone)]
pub(crate) struct SyncedDir {
    pub(crate) root: PathBuf,
    /// The owner's exclusions (the context's ignore file), which win over the daemon's unless
    /// it asks to override them.
    excludes: Option<Arc<IgnoreRules>>,
    always: Arc<BTreeSet<String>>,
}

/// What the daemon asked for in one pull: the request's own patterns.
#[derive(Debug, Default)]
pub(crate) struct PullFilter {
    /// fsutil include patterns (Go `filepath.Match` per path, with its parent directories).
    pub(crate) include: Vec<String>,
    /// `.dockerignore`-style exclusions.
    pub(crate) exclude: Vec<String>,
    /// Paths wanted with whatever their symlinks point at.
    pub(crate) follow: Vec<String>,
    /// The daemon's exclusions replace the owner's.
    pub(crate) override_excludes: bool,
}

/// One entry to send: its stat, and where to read a file's bytes.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) stat: Stat,
    pub(crate) path: PathBuf,
}

impl Entry {
    /// Whether the daemon may ask for this entry's bytes.
    pub(crate) fn is_file(&self) -> bool {
        self.stat.mode & (go_mode::DIR | go_mode::SYMLINK) == 0
    }
}

impl BuildContext {
    /// Checks the context directory and the Dockerfile, and reads the ignore file: the
    /// Dockerfile's own `<Dockerfile>.dockerignore` when there is one (BuildKit's rule), else
    /// `.dockerignore` at the context root.
    pub(crate) fn prepare(context_dir: &Path, dockerfile: &Path) -> Result<Self, ContextError> {
        if !context_dir.is_dir() {
            return Err(ContextError::ContextDirMissing);
        }
        let dockerfile_rel =
            relative_slash_path(dockerfile).ok_or(ContextError::DockerfileOutside)?;
        if !context_dir.join(&dockerfile_rel).is_file() {
            return Err(ContextError::DockerfileMissing);
        }
        let specific = format!("{dockerfile_rel}.dockerignore");
        let ignore_rel = if context_dir.join(&specific).is_file() {
            Some(specific)
        } else if context_dir.join(".dockerignore").is_file() {
            Some(".dockerignore".to_owned())
        } else {
            None
        };
        let rules = match &ignore_rel {
            Some(rel) => {
                let path = context_dir.join(rel);
                // Inside the context, a regular file of at most 1 MiB: a symlink out of the
                // checkout is refused, so no line of an outside file is ever quoted.
                let text =
                    crate::pipeline::paths::read_inside(context_dir, rel).map_err(|problem| {
                        let reason = problem.message("ignore file", rel, "the build context");
                        ContextError::IgnoreUnreadable(path.clone(), std::io::Error::other(reason))
                    })?;
                IgnoreRules::parse(&text)
                    .map_err(|error| ContextError::IgnoreInvalid(path, error))?
            }
            None => IgnoreRules::default(),
        };
        let mut always = BTreeSet::new();
        always.insert(dockerfile_rel.clone());
        if let Some(rel) = ignore_rel {
            always.insert(rel);
        }
        Ok(BuildContext {
            root: context_dir.to_owned(),
            rules: Arc::new(rules),
            always: Arc::new(always),
            dockerfile: dockerfile_rel,
        })
    }

    /// The Dockerfile's path inside the context.
    pub(crate) fn dockerfile(&self) -> &str {
        &self.dockerfile
    }

    /// The Dockerfile's file name, which the daemon looks up in [`DOCKERFILE_DIR`].
    pub(crate) fn dockerfile_name(&self) -> &str {
        self.dockerfile
            .rsplit_once('/')
            .map_or(self.dockerfile.as_str(), |(_, name)| name)
    }

    /// The directory served under `name` ([`CONTEXT_DIR`] or [`DOCKERFILE_DIR`]).
    pub(crate) fn synced_dir(&self, name: &str) -> Option<SyncedDir> {
        match name {
            CONTEXT_DIR => Some(SyncedDir {
                root: self.root.clone(),
                excludes: Some(Arc::clone(&self.rules)),
                always: Arc::clone(&self.always),
            }),
            DOCKERFILE_DIR => {
                let dir = self
                    .dockerfile
                    .rsplit_once('/')
                    .map_or(self.root.clone(), |(dir, _)| self.root.join(dir));
                Some(SyncedDir {
                    root: dir,
                    excludes: None,
                    always: Arc::default(),
                })
            }
            _ => None,
        }
    }

    /// The paths a build of the whole context would send, in order (for tests).
    #[cfg(test)]
    pub(crate) fn paths(&self) -> Vec<String> {
        let dir = self.synced_dir(CONTEXT_DIR).expect("context dir");
        dir.walk(&PullFilter::default())
            .expect("context is readable")
            .into_iter()
            .map(|entry| entry.stat.path)
            .collect()
    }
}

/// `path` as a clean `/`-separated relative path, or `None` when it leaves its directory.
fn relative_slash_path(path: &Path) -> Option<String> {
    use std::path::Component;
    let mut parts: Vec<&str> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    }
}
