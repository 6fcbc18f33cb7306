//! Errors in pipeline and buildspec files, located and rendered for people.
//!
//! A `Diagnostic` names the file, line and column, shows the offending line with a caret, says
//! what is wrong and, where we can tell, what to do about it. Rendering uses annotate-snippets
//! (the renderer rustc and cargo use), plain for logs and snapshots, coloured for terminals.

use crate::pipeline::yaml::Position;
use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// A source file: its path as the user named it and its text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: Arc<str>,
}

impl SourceFile {
    pub fn new(path: impl Into<PathBuf>, text: impl Into<Arc<str>>) -> Self {
        SourceFile {
            path: path.into(),
            text: text.into(),
        }
    }

    /// Byte range in the text of a 1-based line and column, `length` characters long (at
    /// least one, clipped to the end of the line).
    fn byte_range(&self, position: Position, length: usize) -> std::ops::Range<usize> {
        let mut offset = 0;
        for (index, line) in self.text.split_inclusive('\n').enumerate() {
            if index + 1 == position.line {
                let content = line.trim_end_matches(['\n', '\r']);
                let start = content
                    .char_indices()
                    .nth(position.column.saturating_sub(1))
                    .map(|(byte, _)| byte)
                    .unwrap_or(content.len());
                let end = content[start..]
                    .char_indices()
                    .nth(length.max(1))
                    .map(|(byte, _)| start + byte)
                    .unwrap_or(content.len());
                return offset + start..offset + end.max(start);
            }
            offset += line.len();
        }
        let end = self.text.len();
        end..end
    }

    /// The length of the token that starts at a position: a quoted string, or a run of
    /// characters up to the next delimiter.
    fn token_length(&self, position: Position) -> usize {
        let Some(line) = self.text.lines().nth(position.line.saturating_sub(1)) else {
            return 1;
        };
        let rest: String = line
            .chars()
            .skip(position.column.saturating_sub(1))
            .collect();
        let mut chars = rest.chars();
        match chars.next() {
            Some(quote @ ('"' | '\'')) => rest[1..]
                .find(quote)
                .map(|end| end + 2)
                .unwrap_or(rest.chars().count()),
            Some(_) => rest
                .find([':', ',', ']', '}', '#'])
                .unwrap_or(rest.len())
                .max(1)
                .min(rest.trim_end().len().max(1)),
            None => 1,
        }
    }
}

/// What a diagnostic is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One located problem in a file.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub severity: Severity,
    pub source: SourceFile,
    pub position: Position,
    /// Characters to underline; `None` underlines the token at the position.
    pub length: Option<usize>,
    pub message: String,
    pub label: Option<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(source: &SourceFile, position: Position, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            source: source.clone(),
            position,
            length: None,
            message: message.into(),
            label: None,
            help: None,
        }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_length(mut self, length: usize) -> Self {
        self.length = Some(length);
        self
    }

    /// `path:line:col`, as editors and CI annotations expect.
    pub fn location(&self) -> String {
        format!(
            "{}:{}:{}",
            self.source.path.display(),
            self.position.line,
            self.position.column
        )
    }

    /// Render with a source excerpt and caret; `color` for terminals.
    pub fn render(&self, color: bool) -> String {
        let level = match self.severity {
            Severity::Error => Level::ERROR,
            Severity::Warning => Level::WARNING,
        };
        let path = self.source.path.display().to_string();
        let mut report = Vec::new();
        if self.position.is_known() {
            let length = self
                .length
                .unwrap_or_else(|| self.source.token_length(self.position));
            let range = self.source.byte_range(self.position, length);
            let annotation = AnnotationKind::Primary
                .span(range)
                .label(self.label.as_deref());
            report.push(
                level.primary_title(&self.message).element(
                    Snippet::source(&*self.source.text)
                        .path(&path)
                        .line_start(1)
                        .fold(true)
                        .annotation(annotation),
                ),
            );
        } else {
            report.push(
                level
                    .primary_title(&self.message)
                    .element(annotate_snippets::Origin::path(&path)),
            );
        }
        if let Some(help) = &self.help {
            report.push(Group::with_title(Level::HELP.secondary_title(help)));
        }
        let renderer = if color {
            Renderer::styled()
        } else {
            Renderer::plain()
        };
        renderer.render(&report)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location(), self.message)
    }
}

/// All problems found in one or more files, in file order.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.0.push(diagnostic);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.severity == Severity::Error)
    }

    /// Sort by file, line and column so output is stable and reads top to bottom.
    pub fn sort(&mut self) {
        self.0.sort_by(|a, b| {
            (&a.source.path, a.position.line, a.position.column).cmp(&(
                &b.source.path,
                b.position.line,
                b.position.column,
            ))
        });
    }

    pub fn render(&self, color: bool) -> String {
        let mut out = String::new();
        for diagnostic in &self.0 {
            out.push_str(&diagnostic.render(color));
            out.push_str("\n\n");
        }
        let errors = self
            .0
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        if errors > 0 {
            out.push_str(&format!(
                "{errors} error{} found\n",
                if errors == 1 { "" } else { "s" }
            ));
        }
        out
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for diagnostic in &self.0 {
            writeln!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Names as a help text lists them: "`a`, `b`, `c`".
pub fn quoted_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names
        .into_iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The closest candidate to `word`, if it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(word, candidate), candidate))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_misses_only() {
        let keys = ["image", "dockerfile", "context", "tags"];
        assert_eq!(suggest("imgae", keys), Some("image"));
        assert_eq!(suggest("dockerflie", keys), Some("dockerfile"));
        assert_eq!(suggest("zzz", keys), None);
    }

    #[test]
    fn renders_location_line_and_caret() {
        let source = SourceFile::new("pipelines/api.yaml", "name: api\nimgae: x\n");
        let rendered = Diagnostic::error(&source, Position { line: 2, column: 1 }, "unknown key")
            .with_label("not a pipeline setting")
            .with_help("did you mean `image`?")
            .render(false);
        assert!(rendered.contains("pipelines/api.yaml:2:1"), "{rendered}");
        assert!(rendered.contains("imgae: x"), "{rendered}");
        assert!(rendered.contains("^^^^^"), "{rendered}");
    }
}
