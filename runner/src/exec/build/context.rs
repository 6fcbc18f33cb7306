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

use std::collections::BTreeSet;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
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

impl SyncedDir {
    /// Every entry a pull with `filter` gets, in the order the daemon checks: Go's
    /// `filepath.Walk` (names sorted byte-wise inside each directory, a directory before its
    /// contents), with the parents of anything sent sent first.
    pub(crate) fn walk(&self, filter: &PullFilter) -> Result<Vec<Entry>, WalkError> {
        let excludes = match (&self.excludes, filter.override_excludes) {
            (Some(own), false) => Some(Arc::clone(own)),
            _ if filter.exclude.is_empty() => None,
            _ => Some(Arc::new(
                IgnoreRules::parse(&filter.exclude.join("\n")).map_err(|error| WalkError {
                    path: self.root.clone(),
                    source: io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("the daemon sent an exclude pattern it cannot use: {error}"),
                    ),
                })?,
            )),
        };
        let mut include = filter.include.clone();
        include.extend(self.follow_links(&filter.follow));
        include.sort();
        include.dedup();
        let walker = Walker {
            excludes: excludes.as_deref(),
            always: &self.always,
            include: include
                .iter()
                .map(|pattern| IncludePattern::new(pattern))
                .collect(),
        };
        let mut out = Vec::new();
        let mut pending = Vec::new();
        walker.walk_dir(
            &self.root,
            "",
            !walker.include.is_empty(),
            &mut pending,
            &mut out,
        )?;
        Ok(out)
    }

    /// `paths` with, for each symlink among them (inside this directory), what it points at.
    fn follow_links(&self, paths: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for path in paths {
            let Some(mut rel) = relative_slash_path(Path::new(path)) else {
                continue;
            };
            // A chain of links, cut short: a loop must not hang the build.
            for _ in 0..16 {
                out.push(rel.clone());
                let full = self.root.join(&rel);
                let Ok(target) = fs::read_link(&full) else {
                    break;
                };
                let resolved = if target.is_absolute() {
                    target
                        .strip_prefix(&self.root)
                        .ok()
                        .and_then(relative_slash_path)
                } else {
                    let base = Path::new(&rel).parent().unwrap_or(Path::new(""));
                    relative_slash_path(&base.join(target))
                };
                match resolved {
                    Some(next) => rel = next,
                    None => break,
                }
            }
        }
        out
    }
}

/// One include pattern, split into its `/`-separated parts.
struct IncludePattern {
    whole: IgnoreRules,
    /// The pattern cut to its first `n + 1` parts, to tell whether a directory at depth `n`
    /// may lead to a match.
    prefixes: Vec<IgnoreRules>,
}

impl IncludePattern {
    fn new(pattern: &str) -> Self {
        let parts: Vec<&str> = pattern.split('/').filter(|part| !part.is_empty()).collect();
        let parse = |text: &str| IgnoreRules::parse(text).unwrap_or_default();
        IncludePattern {
            whole: parse(pattern),
            prefixes: (1..parts.len())
                .map(|count| parse(&parts[..count].join("/")))
                .collect(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Inclusion {
    Out,
    /// A directory on the way to something included.
    OnTheWay,
    In,
}

struct Walker<'a> {
    excludes: Option<&'a IgnoreRules>,
    always: &'a BTreeSet<String>,
    include: Vec<IncludePattern>,
}

impl Walker<'_> {
    fn inclusion(&self, rel: &str, is_dir: bool) -> Inclusion {
        let depth = rel.matches('/').count();
        let mut result = Inclusion::Out;
        for pattern in &self.include {
            // `excludes` is "matches the path or one of its parents": a path inside an
            // included directory is included.
            if pattern.whole.excludes(rel) {
                return Inclusion::In;
            }
            if is_dir
                && let Some(prefix) = pattern.prefixes.get(depth)
                && prefix.excludes(rel)
            {
                result = Inclusion::OnTheWay;
            }
        }
        result
    }

    fn excluded(&self, rel: &str) -> bool {
        !self.always.contains(rel) && self.excludes.is_some_and(|rules| rules.excludes(rel))
    }

    /// Whether an excluded directory may still hold something that is sent.
    fn may_hold_kept(&self, rel: &str) -> bool {
        let prefix = format!("{rel}/");
        self.excludes.is_some_and(IgnoreRules::has_exceptions)
            || self.always.iter().any(|path| path.starts_with(&prefix))
    }

    /// Walks `dir`; `filtering` says whether include patterns still apply below it. Entries
    /// that are not sent themselves but lead to something that is wait in `pending` until
    /// then.
    fn walk_dir(
        &self,
        dir: &Path,
        rel: &str,
        filtering: bool,
        pending: &mut Vec<Entry>,
        out: &mut Vec<Entry>,
    ) -> Result<(), WalkError> {
        let mut entries = fs::read_dir(dir)
            .map_err(WalkError::at(dir))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(WalkError::at(dir))?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name();
            let rel_path = match rel {
                "" => name.to_string_lossy().into_owned(),
                _ => format!("{rel}/{}", name.to_string_lossy()),
            };
            if name.to_str().is_none() {
                // Patterns match the name as text; an ignored one is never sent.
                if self.excluded(&rel_path) {
                    continue;
                }
                return Err(WalkError {
                    path,
                    source: io::Error::new(
                        io::ErrorKind::InvalidData,
                        "its name is not UTF-8, which BuildKit's file sync cannot carry \
                         (rename it)",
                    ),
                });
            }
            let metadata = fs::symlink_metadata(&path).map_err(WalkError::at(&path))?;
            let file_type = metadata.file_type();
            if file_type.is_fifo()
                || file_type.is_socket()
                || file_type.is_block_device()
                || file_type.is_char_device()
            {
                // Not sent (reading a FIFO would block), as the Docker CLI leaves them out.
                continue;
            }
            let inclusion = if filtering {
                self.inclusion(&rel_path, metadata.is_dir())
            } else {
                Inclusion::In
            };
            if inclusion == Inclusion::Out {
                continue;
            }
            let excluded = self.excluded(&rel_path);
            let kept = !excluded && inclusion == Inclusion::In;
            if metadata.is_dir() {
                if excluded && !self.may_hold_kept(&rel_path) {
                    continue;
                }
                let entry = Entry {
                    stat: stat_of(&rel_path, &path, &metadata)?,
                    path: path.clone(),
                };
                let depth = pending.len();
                if kept {
                    out.append(pending);
                    out.push(entry);
                } else {
                    pending.push(entry);
                }
                let below_filtering = filtering && inclusion != Inclusion::In;
                self.walk_dir(&path, &rel_path, below_filtering, pending, out)?;
                pending.truncate(depth);
            } else if kept {
                let stat = stat_of(&rel_path, &path, &metadata)?;
                out.append(pending);
                out.push(Entry { stat, path });
            }
        }
        Ok(())
    }
}

/// The stat fsutil would send for `path`, with owner 0:0 as the Docker CLI sends it.
fn stat_of(rel: &str, path: &Path, metadata: &Metadata) -> Result<Stat, WalkError> {
    let raw = metadata.mode();
    let mut mode = raw & 0o777;
    if raw & 0o4000 != 0 {
        mode |= go_mode::SETUID;
    }
    if raw & 0o2000 != 0 {
        mode |= go_mode::SETGID;
    }
    if raw & 0o1000 != 0 {
        mode |= go_mode::STICKY;
    }
    let file_type = metadata.file_type();
    let mut stat = Stat {
        path: rel.to_owned(),
        mod_time: metadata
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(metadata.mtime_nsec()),
        ..Stat::default()
    };
    if file_type.is_dir() {
        mode |= go_mode::DIR;
    } else {
        stat.size = i64::try_from(metadata.len()).unwrap_or(i64::MAX);
        if file_type.is_symlink() {
            mode |= go_mode::SYMLINK;
            let target = fs::read_link(path).map_err(WalkError::at(path))?;
            stat.linkname = target
                .to_str()
                .ok_or_else(|| WalkError {
                    path: path.to_owned(),
                    source: io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the symlink's target is not UTF-8, which BuildKit's file sync cannot \
                         carry",
                    ),
                })?
                .to_owned();
        }
    }
    stat.mode = mode;
    Ok(stat)
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

#[cfg(test)]
mod tests {
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
        std::os::unix::fs::symlink("Dockerfile.real", dir.path().join("Dockerfile"))
            .expect("symlink");
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
}
