//! The walk over a synced directory: every entry a pull sends, in the order Go's
//! `filepath.Walk` visits them, after the ignore rules and the daemon's include patterns, with
//! the stat fsutil sends for each.

use std::collections::BTreeSet;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;

use bollard::grpc::build::fsutil::types::Stat;

use super::{Entry, PullFilter, SyncedDir, WalkError, go_mode, relative_slash_path};
use crate::exec::build::dockerignore::IgnoreRules;

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
