//! Files and folders a pipeline names (buildspecs, Dockerfiles, build contexts, secret files,
//! the defaults file): where they may be, what they may be, and how much of them is read.
//!
//! A path a pipeline writes is relative and stays inside its root (the project for buildspecs
//! and secret files, the checkout for `context`, the build context for `dockerfile`): no
//! absolute path, no `..`, no symlink that leads out. It names a regular file (or a folder where
//! a folder is meant), never a FIFO, socket or device. A file is read only when it holds at
//! most [`MAX_FILE_BYTES`], checked on the opened file before any byte is read. Text must be
//! UTF-8; the first bad byte is reported by line and column. Messages name paths, never a
//! file's content.

use crate::pipeline::CompiledPipeline;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

/// The largest file a pipeline may point at: 1 MiB.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// What a path must name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    File,
    Folder,
}

/// Why a path a pipeline names is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathProblem {
    Empty,
    Absolute,
    /// A `..` component.
    GoesUp,
    /// It (or a symlink on the way) leads outside the root; where it resolves to.
    Outside(PathBuf),
    Missing,
    /// Not a regular file: `a FIFO`, `a character device`, `a folder`…
    NotAFile(&'static str),
    NotAFolder(&'static str),
    /// Its size in bytes, over [`MAX_FILE_BYTES`].
    TooLarge(u64),
    /// The first byte that is not UTF-8, at a 1-based line and column (in characters). `text`
    /// is the file decoded lossily, for showing the line (only files inside the root get here).
    NotUtf8 {
        line: usize,
        column: usize,
        byte: u8,
        text: String,
    },
    /// An I/O error, described without the file's content.
    Unreadable(String),
}

impl PathProblem {
    /// One line for people: `what` names the key (`buildspec`, `dockerfile`…), `written` is the
    /// path as the pipeline wrote it and `root` names the folder it must stay in.
    pub fn message(&self, what: &str, written: &str, root: &str) -> String {
        match self {
            PathProblem::Empty => format!("{what} is an empty path"),
            PathProblem::Absolute => {
                format!("{what} `{written}` is an absolute path; it must be relative to {root}")
            }
            PathProblem::GoesUp => {
                format!("{what} `{written}` goes up with `..`; it must stay inside {root}")
            }
            PathProblem::Outside(resolved) => format!(
                "{what} `{written}` leads outside {root} (it resolves to {})",
                resolved.display()
            ),
            PathProblem::Missing => format!("no {what} at `{written}`"),
            PathProblem::NotAFile(kind) => {
                format!("{what} `{written}` is {kind}, not a regular file")
            }
            PathProblem::NotAFolder(kind) => format!("{what} `{written}` is {kind}, not a folder"),
            PathProblem::TooLarge(size) => format!(
                "{what} `{written}` is {size} bytes; files a pipeline names may hold at most 1 MiB ({MAX_FILE_BYTES} bytes)"
            ),
            PathProblem::NotUtf8 {
                line, column, byte, ..
            } => format!(
                "{what} `{written}` is not UTF-8: byte 0x{byte:02X} at line {line}, column {column}"
            ),
            PathProblem::Unreadable(reason) => format!("cannot read {what} `{written}`: {reason}"),
        }
    }

    /// What to do about it.
    pub fn help(&self, root: &str) -> String {
        match self {
            PathProblem::Empty | PathProblem::Absolute | PathProblem::GoesUp => {
                format!("write a path relative to {root} that stays inside it")
            }
            PathProblem::Outside(_) => {
                format!("move the file inside {root}; a symlink may only point inside {root}")
            }
            PathProblem::Missing => format!("paths are relative to {root}; check the name"),
            PathProblem::NotAFile(_) => "point at a regular file".into(),
            PathProblem::NotAFolder(_) => "point at a folder".into(),
            PathProblem::TooLarge(_) => {
                "point at the file you mean; it cannot be this large".into()
            }
            PathProblem::NotUtf8 { .. } => "save the file as UTF-8".into(),
            PathProblem::Unreadable(_) => "check the file's permissions".into(),
        }
    }
}

/// The checks on the text alone: not empty, relative, no `..`.
pub fn check_written(written: &str) -> Result<(), PathProblem> {
    if written.trim().is_empty() {
        return Err(PathProblem::Empty);
    }
    if written.contains('\0') {
        return Err(PathProblem::Unreadable("the path holds a NUL byte".into()));
    }
    let path = Path::new(written);
    if path.is_absolute() {
        return Err(PathProblem::Absolute);
    }
    if path.components().any(|part| part == Component::ParentDir) {
        return Err(PathProblem::GoesUp);
    }
    Ok(())
}

/// Where `written` leads under `root`, when that is inside `root` (symlinks followed) and is
/// what `expect` says.
pub fn resolve(root: &Path, written: &str, expect: Expect) -> Result<PathBuf, PathProblem> {
    check_written(written)?;
    let root = fs::canonicalize(root).map_err(|error| unreadable(&error))?;
    let resolved = match fs::canonicalize(root.join(written)) {
        Ok(resolved) => resolved,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(PathProblem::Missing);
        }
        Err(error) => return Err(unreadable(&error)),
    };
    if !resolved.starts_with(&root) {
        return Err(PathProblem::Outside(resolved));
    }
    let metadata = fs::metadata(&resolved).map_err(|error| unreadable(&error))?;
    match expect {
        Expect::File if !metadata.is_file() => Err(PathProblem::NotAFile(kind_of(&metadata))),
        Expect::Folder if !metadata.is_dir() => Err(PathProblem::NotAFolder(kind_of(&metadata))),
        _ => Ok(resolved),
    }
}

/// Read a text file `written` names under `root`, after every check.
pub fn read_inside(root: &Path, written: &str) -> Result<String, PathProblem> {
    let resolved = resolve(root, written, Expect::File)?;
    read_text(&resolved)
}

/// Read a regular text file of at most [`MAX_FILE_BYTES`]. It is opened without blocking (a
/// FIFO would wait for a writer) and its type and size come from the opened file, so nothing
/// is read from a device, a FIFO or an oversized file.
pub fn read_text(path: &Path) -> Result<String, PathProblem> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let descriptor = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(descriptor) => descriptor,
        Err(errno) if errno == rustix::io::Errno::NOENT => return Err(PathProblem::Missing),
        Err(errno) => return Err(unreadable(&std::io::Error::from(errno))),
    };
    let file = File::from(descriptor);
    let metadata = file.metadata().map_err(|error| unreadable(&error))?;
    if !metadata.is_file() {
        return Err(PathProblem::NotAFile(kind_of(&metadata)));
    }
    if metadata.len() > MAX_FILE_BYTES {
        return Err(PathProblem::TooLarge(metadata.len()));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| unreadable(&error))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        // It grew while it was read.
        return Err(PathProblem::TooLarge(bytes.len() as u64));
    }
    decode(bytes)
}

/// Run-time checks of a build stage's `context` (a folder of the checkout) and `dockerfile` (a
/// file of at most [`MAX_FILE_BYTES`] in the context), in the checkout a run made. The error
/// starts with the `file:line:col` of the key in the pipeline.
pub fn check_build_inputs(
    compiled: &CompiledPipeline,
    stage: &str,
    checkout: &Path,
    context: &str,
    dockerfile: &str,
) -> Result<(), String> {
    let refuse = |key: &str, written: &str, root: &str, problem: PathProblem| {
        format!(
            "{}: {}; {}",
            stage_key_location(compiled, stage, &[key]),
            problem.message(key, written, root),
            problem.help(root)
        )
    };
    let context_dir = resolve(checkout, context, Expect::Folder)
        .map_err(|problem| refuse("context", context, "the repository", problem))?;
    let file = resolve(&context_dir, dockerfile, Expect::File)
        .map_err(|problem| refuse("dockerfile", dockerfile, "the build context", problem))?;
    match fs::metadata(&file) {
        Ok(metadata) if metadata.len() > MAX_FILE_BYTES => Err(refuse(
            "dockerfile",
            dockerfile,
            "the build context",
            PathProblem::TooLarge(metadata.len()),
        )),
        _ => Ok(()),
    }
}

/// Read a build secret's `file:` (relative to the project), after every check.
pub fn read_secret_file(
    compiled: &CompiledPipeline,
    stage: &str,
    id: &str,
    written: &str,
) -> Result<String, String> {
    read_inside(&compiled.project_root, written).map_err(|problem| {
        let index = compiled
            .pipeline
            .stages
            .iter()
            .find(|candidate| candidate.name() == stage)
            .and_then(|candidate| match candidate {
                crate::pipeline::model::Stage::Build(build) => {
                    build.secrets.iter().position(|secret| secret.id == id)
                }
                _ => None,
            })
            .unwrap_or(0);
        format!(
            "{}: build secret `{id}`: {}; {}",
            stage_key_location(compiled, stage, &["secrets", &index.to_string(), "file"]),
            problem.message("secret file", written, "the project"),
            problem.help("the project")
        )
    })
}

/// `file:line:col` of a key under a stage (a number is a list index).
fn stage_key_location(compiled: &CompiledPipeline, stage: &str, keys: &[&str]) -> String {
    use crate::pipeline::yaml::PathSegment;
    let index = compiled
        .pipeline
        .stages
        .iter()
        .position(|candidate| candidate.name() == stage)
        .unwrap_or(0);
    let kind = compiled
        .pipeline
        .stages
        .get(index)
        .map_or("build", |s| s.kind().as_str());
    let mut path = vec![
        PathSegment::Key("stages".into()),
        PathSegment::Index(index),
        PathSegment::Key(kind.into()),
    ];
    for key in keys {
        path.push(match key.parse::<usize>() {
            Ok(index) => PathSegment::Index(index),
            Err(_) => PathSegment::Key((*key).into()),
        });
    }
    let position = compiled.position_of(&path);
    format!(
        "{}:{}:{}",
        compiled.file.path.display(),
        position.line,
        position.column
    )
}

/// UTF-8 text, or where the first bad byte is.
pub fn decode(bytes: Vec<u8>) -> Result<String, PathProblem> {
    String::from_utf8(bytes).map_err(|error| {
        let bytes = error.as_bytes();
        let valid = error.utf8_error().valid_up_to();
        let before = std::str::from_utf8(&bytes[..valid]).expect("the prefix is valid");
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        PathProblem::NotUtf8 {
            line,
            column,
            byte: bytes[valid],
            text: String::from_utf8_lossy(bytes).into_owned(),
        }
    })
}

fn unreadable(error: &std::io::Error) -> PathProblem {
    // The kind, not the error's own text, so that nothing but a reason is ever shown.
    PathProblem::Unreadable(match error.kind() {
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::NotADirectory => "a part of the path is not a folder".into(),
        _ => error.to_string(),
    })
}

fn kind_of(metadata: &fs::Metadata) -> &'static str {
    let kind = metadata.file_type();
    if kind.is_dir() {
        "a folder"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_file() {
        "a file"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_written_paths() {
        let cases: &[(&str, Result<(), PathProblem>)] = &[
            ("buildspec.yml", Ok(())),
            ("buildspecs/api.yml", Ok(())),
            ("./buildspecs/api.yml", Ok(())),
            ("docker/app.Dockerfile", Ok(())),
            (".", Ok(())),
            ("a/./b", Ok(())),
            ("", Err(PathProblem::Empty)),
            ("  ", Err(PathProblem::Empty)),
            ("/etc/passwd", Err(PathProblem::Absolute)),
            ("/", Err(PathProblem::Absolute)),
            ("../buildspec.yml", Err(PathProblem::GoesUp)),
            ("buildspecs/../../x", Err(PathProblem::GoesUp)),
            ("a/../b", Err(PathProblem::GoesUp)),
            ("..", Err(PathProblem::GoesUp)),
            ("..hidden", Ok(())),
            ("a..b/c", Ok(())),
        ];
        for (written, expected) in cases {
            assert_eq!(&check_written(written), expected, "{written:?}");
        }
        assert!(matches!(
            check_written("a\0b"),
            Err(PathProblem::Unreadable(_))
        ));
    }

    #[test]
    fn finds_the_first_bad_byte() {
        let cases: &[(&[u8], usize, usize, u8)] = &[
            (b"\xff", 1, 1, 0xff),
            (b"abc\xfe", 1, 4, 0xfe),
            (b"one\ntwo\nthr\xc3", 3, 4, 0xc3),
            (b"\xc3\xa9\nx\xc3\xa9\xf0\x9f\x98\x80\x80", 2, 4, 0x80),
            (b"a\r\nb\xc0\xaf", 2, 2, 0xc0),
        ];
        for (bytes, line, column, byte) in cases {
            match decode(bytes.to_vec()) {
                Err(PathProblem::NotUtf8 {
                    line: l,
                    column: c,
                    byte: b,
                    ..
                }) => assert_eq!((l, c, b), (*line, *column, *byte), "{bytes:?}"),
                other => panic!("{bytes:?}: {other:?}"),
            }
        }
        assert_eq!(decode(b"fine\n".to_vec()), Ok("fine\n".into()));
    }

    #[test]
    fn messages_name_the_path_and_the_rule() {
        let cases = [
            (PathProblem::Absolute, "buildspec `/x` is an absolute path"),
            (PathProblem::GoesUp, "goes up with `..`"),
            (
                PathProblem::Outside(PathBuf::from("/dev/zero")),
                "leads outside the project (it resolves to /dev/zero)",
            ),
            (
                PathProblem::NotAFile("a FIFO"),
                "is a FIFO, not a regular file",
            ),
            (PathProblem::TooLarge(2 << 20), "is 2097152 bytes"),
            (PathProblem::Missing, "no buildspec at `/x`"),
        ];
        for (problem, expected) in cases {
            let message = problem.message("buildspec", "/x", "the project");
            assert!(message.contains(expected), "{message}");
            assert!(!problem.help("the project").is_empty());
        }
    }

    #[test]
    fn resolves_inside_the_root_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("sub/file.yml"), "a: 1\n").unwrap();
        fs::write(dir.path().join("outside.yml"), "secret\n").unwrap();
        std::os::unix::fs::symlink("sub/file.yml", root.join("inner-link")).unwrap();
        std::os::unix::fs::symlink("../outside.yml", root.join("outer-link")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("up")).unwrap();
        let cases: &[(&str, Expect, Result<(), &str>)] = &[
            ("sub/file.yml", Expect::File, Ok(())),
            ("inner-link", Expect::File, Ok(())),
            ("sub", Expect::Folder, Ok(())),
            (".", Expect::Folder, Ok(())),
            ("sub", Expect::File, Err("not a file")),
            ("sub/file.yml", Expect::Folder, Err("not a folder")),
            ("outer-link", Expect::File, Err("outside")),
            ("up/outside.yml", Expect::File, Err("outside")),
            ("nope.yml", Expect::File, Err("missing")),
        ];
        for (written, expect, expected) in cases {
            let got = resolve(&root, written, *expect)
                .map(|_| ())
                .map_err(|p| match p {
                    PathProblem::NotAFile(_) => "not a file",
                    PathProblem::NotAFolder(_) => "not a folder",
                    PathProblem::Outside(_) => "outside",
                    PathProblem::Missing => "missing",
                    other => panic!("{written}: {other:?}"),
                });
            assert_eq!(&got, expected, "{written}");
        }
        assert_eq!(read_inside(&root, "inner-link").unwrap(), "a: 1\n");
    }
}
