//! The Rust files the runner and the agent compile outside tests, found the way the compiler
//! finds them: from each crate root through its `mod name;` declarations. Files that only
//! `#[cfg(test)]` modules bring in are left out; a file under the source folders that is
//! neither reached nor test-only is reported, so a way of including code the scan does not
//! understand (a `#[path]` attribute, an `include!`) cannot hide calls from it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::rust_text::CodeText;

/// The crate roots of `envelope-runner` and `envelope-agent` (library and binary).
pub const CRATE_ROOTS: &[&str] = &[
    "runner/src/lib.rs",
    "runner/src/main.rs",
    "agent/src/lib.rs",
    "agent/src/main.rs",
];

/// The folders whose every `.rs` file must be reached from a root or be test-only.
const SOURCE_DIRS: &[&str] = &["runner/src", "agent/src"];

/// One compiled file: its path from the workspace root (with `/`) and its code.
#[derive(Clone)]
pub struct SourceFile {
    pub path: String,
    pub code: CodeText,
}

#[derive(Clone)]
pub struct Sources {
    pub files: Vec<SourceFile>,
}

impl Sources {
    /// Every file the crates compile outside tests, or what could not be followed.
    pub fn load(root: &Path) -> Result<Sources, Vec<String>> {
        let mut problems = Vec::new();
        let mut files: BTreeMap<String, CodeText> = BTreeMap::new();
        let mut test_only: BTreeSet<String> = BTreeSet::new();
        let mut pending: Vec<String> = CRATE_ROOTS.iter().map(|&p| p.to_owned()).collect();
        while let Some(path) = pending.pop() {
            if files.contains_key(&path) {
                continue;
            }
            let text = match std::fs::read_to_string(root.join(&path)) {
                Ok(text) => text,
                Err(error) => {
                    problems.push(format!("cannot read {path}: {error}"));
                    continue;
                }
            };
            let code = CodeText::new(&text);
            let dir = module_dir(&path);
            for name in &code.test_modules {
                test_only.insert(format!("{dir}{name}.rs"));
                test_only.insert(format!("{dir}{name}/"));
            }
            for name in &code.modules {
                match child_file(root, &dir, name) {
                    Some(child) => pending.push(child),
                    None => problems.push(format!(
                        "{path} declares `mod {name};` but neither {dir}{name}.rs nor {dir}{name}/mod.rs exists"
                    )),
                }
            }
            files.insert(path, code);
        }
        for dir in SOURCE_DIRS {
            for path in rust_files(root, dir) {
                let reached = files.contains_key(&path);
                let tests = test_only
                    .iter()
                    .any(|test| path == *test || (test.ends_with('/') && path.starts_with(test)));
                if !reached && !tests {
                    problems.push(format!(
                        "{path} is neither reached through `mod` declarations from {} nor test-only: teach tests/iam_policy/sources.rs how it is compiled, so its AWS calls are checked",
                        CRATE_ROOTS.join(", ")
                    ));
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Sources {
            files: files
                .into_iter()
                .map(|(path, code)| SourceFile { path, code })
                .collect(),
        })
    }

    /// These sources with `path` holding `text` instead (added when it is new).
    pub fn with_file(mut self, path: &str, text: &str) -> Sources {
        self.files.retain(|file| file.path != path);
        self.files.push(SourceFile {
            path: path.to_owned(),
            code: CodeText::new(text),
        });
        self
    }
}

/// The folder a file's `mod name;` declarations look in: next to `lib.rs`, `main.rs` and
/// `mod.rs`, else in the folder named after the file.
fn module_dir(path: &str) -> String {
    let (parent, file) = path.rsplit_once('/').unwrap_or(("", path));
    match file {
        "lib.rs" | "main.rs" | "mod.rs" => format!("{parent}/"),
        _ => format!("{parent}/{}/", file.trim_end_matches(".rs")),
    }
}

fn child_file(root: &Path, dir: &str, name: &str) -> Option<String> {
    [format!("{dir}{name}.rs"), format!("{dir}{name}/mod.rs")]
        .into_iter()
        .find(|candidate| root.join(candidate).is_file())
}

/// Every `.rs` file under `dir`, as paths from the workspace root.
fn rust_files(root: &Path, dir: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(&dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = format!("{dir}/{name}");
            if entry.path().is_dir() {
                pending.push(path);
            } else if name.ends_with(".rs") {
                found.push(path);
            }
        }
    }
    found
}
