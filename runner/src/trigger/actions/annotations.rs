//! Pipeline errors as a command prints them: the snippets people read (`file:line:col`, the
//! line, a caret) and, in a GitHub Actions job, `::error file=…` annotations that GitHub shows
//! on the file. Pure functions of the errors and a [`DiagnosticFormat`]; the command decides the
//! format from the environment it read.

use crate::pipeline::diagnostic::Diagnostics;
use crate::plan::PlanError;
use crate::report::{CommandToken, diagnostic_annotation, workflow_command};
use std::path::{Component, Path, PathBuf};

/// How annotations name files: GitHub places an annotation by its path in the repository, so a
/// path inside the job's workspace is made relative to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnnotationPaths {
    /// `GITHUB_WORKSPACE`: where the repository is checked out.
    pub workspace: Option<PathBuf>,
    /// The folder relative paths start from: the command's working directory.
    pub current_dir: PathBuf,
}

impl AnnotationPaths {
    /// A file's path as annotations need it: relative to the workspace when inside it (with
    /// `/`), else as given.
    pub fn of(&self, path: &Path) -> String {
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.current_dir.join(path)
        };
        let absolute = normalize(&absolute);
        if let Some(workspace) = &self.workspace
            && let Ok(relative) = absolute.strip_prefix(normalize(workspace))
        {
            return relative
                .components()
                .map(|part| part.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
        }
        path.display().to_string()
    }
}

/// `a/./b/../c` → `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// How pipeline diagnostics are printed.
#[derive(Debug, Clone)]
pub enum DiagnosticFormat {
    /// The snippets alone, coloured for terminals.
    Snippets { color: bool },
    /// In a GitHub Actions job: one annotation per diagnostic on its file, then the snippets.
    /// The snippets quote the pipeline file, so they are printed with workflow commands stopped
    /// by `token`.
    Annotated {
        color: bool,
        paths: AnnotationPaths,
        token: CommandToken,
    },
    /// In a GitHub Actions job whose command prints its errors in a machine-readable form
    /// (`validate --output json`): the annotations alone.
    Annotations { paths: AnnotationPaths },
}

/// Pipeline diagnostics as text for standard error, in `format`; empty when there is nothing
/// to print.
pub fn render_diagnostics(diagnostics: &Diagnostics, format: &DiagnosticFormat) -> String {
    match format {
        DiagnosticFormat::Snippets { color } => diagnostics.render(*color),
        DiagnosticFormat::Annotated {
            color,
            paths,
            token,
        } => {
            let rendered = diagnostics.render(*color);
            let annotations = annotations(diagnostics, paths);
            if annotations.is_empty() {
                return rendered;
            }
            let mut text = lines(&annotations);
            text.push_str(&token.stop_line());
            text.push('\n');
            text.push_str(&rendered);
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&token.resume_line());
            text.push('\n');
            text
        }
        DiagnosticFormat::Annotations { paths } => lines(&annotations(diagnostics, paths)),
    }
}

fn annotations(diagnostics: &Diagnostics, paths: &AnnotationPaths) -> Vec<String> {
    diagnostics
        .0
        .iter()
        .map(|diagnostic| diagnostic_annotation(diagnostic, &paths.of(&diagnostic.source.path)))
        .collect()
}

/// Each line followed by a newline; empty for no lines.
fn lines(lines: &[String]) -> String {
    lines.iter().map(|line| format!("{line}\n")).collect()
}

/// The annotation of a pipeline that cannot be planned for this trigger, on its file (no
/// line: the problem is the combination of file and trigger).
pub fn plan_error_annotation(file: &Path, error: &PlanError, paths: &AnnotationPaths) -> String {
    workflow_command(
        "error",
        &[
            ("file", &paths.of(file)),
            ("title", "envelope-runner: cannot plan the run"),
        ],
        &error.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::diagnostic::{Diagnostic, SourceFile};
    use crate::pipeline::yaml::Position;

    #[test]
    fn annotation_paths_are_relative_to_the_workspace() {
        let paths = AnnotationPaths {
            workspace: Some("/home/runner/work/deploy/deploy".into()),
            current_dir: "/home/runner/work/deploy/deploy/app".into(),
        };
        assert_eq!(
            paths.of(Path::new("pipelines/api.yaml")),
            "app/pipelines/api.yaml"
        );
        assert_eq!(
            paths.of(Path::new("../pipelines/api.yaml")),
            "pipelines/api.yaml"
        );
        assert_eq!(
            paths.of(Path::new("/elsewhere/api.yaml")),
            "/elsewhere/api.yaml"
        );
        let outside = AnnotationPaths {
            workspace: None,
            ..paths
        };
        assert_eq!(
            outside.of(Path::new("pipelines/api.yaml")),
            "pipelines/api.yaml"
        );
    }

    fn diagnostics() -> Diagnostics {
        let source = SourceFile::new("pipelines/api.yaml", "stages:\n  - biuld: {}\n");
        let position = Position { line: 2, column: 5 };
        Diagnostics(vec![
            Diagnostic::error(&source, position, "unknown stage kind `biuld`")
                .with_help("use `build`"),
        ])
    }

    #[test]
    fn snippets_alone_outside_actions() {
        let diagnostics = diagnostics();
        let text = render_diagnostics(&diagnostics, &DiagnosticFormat::Snippets { color: false });
        assert_eq!(text, diagnostics.render(false));
        assert!(text.contains(" --> pipelines/api.yaml:2:5"), "{text}");
        assert!(!text.contains("::"), "{text}");
    }

    #[test]
    fn in_actions_the_annotations_come_first_and_the_snippets_cannot_issue_commands() {
        let diagnostics = diagnostics();
        let paths = AnnotationPaths {
            workspace: Some("/work/repo".into()),
            current_dir: "/work/repo/deploy".into(),
        };
        let token = CommandToken::random();
        let annotation = "::error file=deploy/pipelines/api.yaml,line=2,col=5,\
                          title=envelope-runner%3A invalid pipeline::\
                          unknown stage kind `biuld`%0Ahelp: use `build`";
        let text = render_diagnostics(
            &diagnostics,
            &DiagnosticFormat::Annotated {
                color: false,
                paths: paths.clone(),
                token: token.clone(),
            },
        );
        let mut snippets = diagnostics.render(false);
        if !snippets.ends_with('\n') {
            snippets.push('\n');
        }
        assert_eq!(
            text,
            format!(
                "{annotation}\n{}\n{snippets}{}\n",
                token.stop_line(),
                token.resume_line()
            )
        );
        assert_eq!(
            render_diagnostics(&diagnostics, &DiagnosticFormat::Annotations { paths }),
            format!("{annotation}\n")
        );
    }
}
