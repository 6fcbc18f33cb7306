//! The build context: the files under the context directory that `.dockerignore` keeps, as a
//! tar stream produced while it is being sent.
//!
//! The walk and the tar run on a blocking thread and hand 64 KiB chunks to the session's upload
//! service through a small channel, so the context is never held in memory whole. Entries are
//! written in name order with owner 0:0 (as the Docker CLI writes them), so the same tree gives
//! the same tar, and the daemon can fetch it again if it needs to.

use std::collections::BTreeSet;
use std::fs::{self, Metadata};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;

use super::dockerignore::{IgnoreRules, InvalidPattern};

/// How many chunks may wait between the tar writer and the HTTP body.
const CHANNEL_CHUNKS: usize = 8;
const CHUNK_BYTES: usize = 64 * 1024;

/// A context directory with its ignore rules, checked and ready to stream.
#[derive(Debug)]
pub(crate) struct BuildContext {
    root: PathBuf,
    rules: IgnoreRules,
    /// Paths sent whatever the ignore file says: the Dockerfile and the ignore file itself.
    always: BTreeSet<String>,
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

/// Totals of a streamed context.
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
                let text = fs::read_to_string(&path)
                    .map_err(|error| ContextError::IgnoreUnreadable(path.clone(), error))?;
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
            rules,
            always,
            dockerfile: dockerfile_rel,
        })
    }

    /// The Dockerfile's path inside the context, as the daemon wants it.
    pub(crate) fn dockerfile(&self) -> &str {
        &self.dockerfile
    }

    /// Starts writing the tar on a blocking thread and returns it as a stream. Each call walks
    /// the tree anew. `done` learns how the walk ended before the stream does: on a failure the
    /// stream then ends with an error item, so the reader cannot take it for complete.
    pub(crate) fn stream(
        self: &Arc<Self>,
        done: impl FnOnce(Result<ContextSummary, WalkError>) + Send + 'static,
    ) -> impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
        let (sender, receiver) = mpsc::channel(CHANNEL_CHUNKS);
        let context = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let writer = ChannelWriter {
                sender: sender.clone(),
                buffer: Vec::with_capacity(CHUNK_BYTES),
            };
            let result = context.write_tar(writer);
            let failure = result.as_ref().err().map(|error| {
                io::Error::new(
                    error.source.kind(),
                    format!("{}: {}", error.path.display(), error.source),
                )
            });
            done(result);
            if let Some(failure) = failure {
                let _ = sender.blocking_send(Err(failure));
            }
        });
        futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        })
    }

    /// Writes the whole context as a tar into `out`.
    pub(crate) fn write_tar(&self, out: impl Write) -> Result<ContextSummary, WalkError> {
        let mut tar = tar::Builder::new(out);
        tar.follow_symlinks(false);
        let mut summary = ContextSummary::default();
        self.walk(&self.root, "", &mut tar, &mut summary)?;
        let mut out = tar.into_inner().map_err(|source| WalkError {
            path: self.root.clone(),
            source,
        })?;
        out.flush().map_err(|source| WalkError {
            path: self.root.clone(),
            source,
        })?;
        Ok(summary)
    }

    /// The paths a build would send, in tar order (for tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn paths(&self) -> Vec<String> {
        let mut bytes = Vec::new();
        self.write_tar(&mut bytes).expect("context is readable");
        let mut archive = tar::Archive::new(bytes.as_slice());
        archive
            .entries()
            .expect("tar")
            .map(|entry| {
                let entry = entry.expect("entry");
                entry.path().expect("path").to_string_lossy().into_owned()
            })
            .collect()
    }

    fn walk<W: Write>(
        &self,
        dir: &Path,
        rel: &str,
        tar: &mut tar::Builder<W>,
        summary: &mut ContextSummary,
    ) -> Result<(), WalkError> {
        let failed = |path: &Path| {
            let path = path.to_owned();
            move |source| WalkError { path, source }
        };
        let mut entries = fs::read_dir(dir)
            .map_err(failed(dir))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(failed(dir))?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name();
            // Patterns are matched against the name as text; the tar keeps the real bytes.
            let name = name.to_string_lossy();
            let in_tar = path.strip_prefix(&self.root).unwrap_or(&path).to_owned();
            let rel_path = if rel.is_empty() {
                name.into_owned()
            } else {
                format!("{rel}/{name}")
            };
            let metadata = fs::symlink_metadata(&path).map_err(failed(&path))?;
            let kept = self.always.contains(&rel_path) || !self.rules.excludes(&rel_path);
            if metadata.is_dir() {
                if kept {
                    append(tar, &metadata, &in_tar, &path, None).map_err(failed(&path))?;
                    self.walk(&path, &rel_path, tar, summary)?;
                } else if self.rules.has_exceptions() || self.has_always_below(&rel_path) {
                    // An exception may re-include something inside; the directory entry itself
                    // stays out, its kept children carry their paths.
                    self.walk(&path, &rel_path, tar, summary)?;
                }
            } else if kept {
                let file_type = metadata.file_type();
                if file_type.is_symlink() {
                    let target = fs::read_link(&path).map_err(failed(&path))?;
                    append(tar, &metadata, &in_tar, &path, Some(&target)).map_err(failed(&path))?;
                } else if file_type.is_file() {
                    append(tar, &metadata, &in_tar, &path, None).map_err(failed(&path))?;
                    summary.files += 1;
                    summary.bytes += metadata.len();
                }
                // Sockets, FIFOs and devices are not sent (reading a FIFO would block).
            }
        }
        Ok(())
    }

    fn has_always_below(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        self.always.iter().any(|path| path.starts_with(&prefix))
    }
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    metadata: &Metadata,
    in_tar: &Path,
    path: &Path,
    link_target: Option<&Path>,
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(metadata, tar::HeaderMode::Complete);
    header.set_uid(0);
    header.set_gid(0);
    header.set_username("")?;
    header.set_groupname("")?;
    if let Some(target) = link_target {
        header.set_size(0);
        tar.append_link(&mut header, in_tar, target)
    } else if metadata.is_dir() {
        header.set_size(0);
        tar.append_data(&mut header, in_tar, io::empty())
    } else {
        let file = fs::File::open(path)?;
        tar.append_data(&mut header, in_tar, file)
    }
}

/// `dockerfile` as a clean `/`-separated path inside the context, or `None` when it leaves it.
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

/// Hands the tar to the async side in chunks.
struct ChannelWriter {
    sender: mpsc::Sender<Result<Bytes, io::Error>>,
    buffer: Vec<u8>,
}

impl ChannelWriter {
    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK_BYTES));
        self.sender
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the build stopped reading the context",
                )
            })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK_BYTES {
            self.send_buffer()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
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
        assert_eq!(
            context.paths(),
            [
                ".dockerignore",
                "docker/app.Dockerfile",
                "docker/app.Dockerfile.dockerignore",
                "src",
                "src/main.rs"
            ]
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
    fn tar_entries_are_owned_by_root_and_keep_modes_and_links() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tree(&[("Dockerfile", "FROM scratch\n"), ("run.sh", "#!/bin/sh\n")]);
        fs::set_permissions(dir.path().join("run.sh"), fs::Permissions::from_mode(0o755))
            .expect("chmod");
        std::os::unix::fs::symlink("run.sh", dir.path().join("link")).expect("symlink");
        let context = BuildContext::prepare(dir.path(), Path::new("Dockerfile")).expect("ok");
        let mut bytes = Vec::new();
        let summary = context.write_tar(&mut bytes).expect("tar");
        assert_eq!(summary.files, 2);
        let mut archive = tar::Archive::new(bytes.as_slice());
        for entry in archive.entries().expect("entries") {
            let entry = entry.expect("entry");
            let header = entry.header();
            assert_eq!(header.uid().expect("uid"), 0);
            assert_eq!(header.gid().expect("gid"), 0);
            let path = entry.path().expect("path").to_string_lossy().into_owned();
            match path.as_str() {
                "run.sh" => assert_eq!(header.mode().expect("mode") & 0o777, 0o755),
                "link" => {
                    assert_eq!(header.entry_type(), tar::EntryType::Symlink);
                    assert_eq!(
                        entry.link_name().expect("link").expect("target").to_str(),
                        Some("run.sh")
                    );
                }
                _ => {}
            }
        }
    }

    #[test]
    fn a_name_that_is_not_utf8_is_sent_as_it_is() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tree(&[
            ("Dockerfile", "FROM scratch\n"),
            (".dockerignore", "*.tmp\n"),
        ]);
        let odd = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
        fs::write(dir.path().join(odd), "x").expect("write");
        fs::write(
            dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9.tmp")),
            "x",
        )
        .expect("write");
        let context = BuildContext::prepare(dir.path(), Path::new("Dockerfile")).expect("ok");
        let mut bytes = Vec::new();
        context.write_tar(&mut bytes).expect("tar");
        let mut archive = tar::Archive::new(bytes.as_slice());
        let names: Vec<Vec<u8>> = archive
            .entries()
            .expect("entries")
            .map(|entry| entry.expect("entry").path_bytes().into_owned())
            .collect();
        assert_eq!(
            names,
            [&b".dockerignore"[..], b"Dockerfile", b"caf\xe9.txt"],
            "the .tmp one is ignored, the other keeps its bytes"
        );
    }

    #[tokio::test]
    async fn streams_in_chunks_with_the_same_bytes() {
        use futures_util::StreamExt;
        let big = "x".repeat(300 * 1024);
        let dir = tree(&[("Dockerfile", "FROM scratch\n"), ("big", &big)]);
        let context =
            Arc::new(BuildContext::prepare(dir.path(), Path::new("Dockerfile")).expect("ok"));
        let mut expected = Vec::new();
        context.write_tar(&mut expected).expect("tar");
        for _ in 0..2 {
            let (done, outcome) = tokio::sync::oneshot::channel();
            let stream = context.stream(move |result| {
                let _ = done.send(result);
            });
            let chunks: Vec<Bytes> = stream.map(|chunk| chunk.expect("chunk")).collect().await;
            assert!(chunks.len() > 1, "sent as several chunks");
            assert_eq!(chunks.concat(), expected, "the same bytes every time");
            let summary = outcome.await.expect("reported").expect("walk");
            assert_eq!(summary.files, 2);
        }
    }
}
