//! `validate` (check pipeline files and their buildspecs) and `schema` (print the JSON Schema
//! of the files `validate` checks). No network, no store.

use super::Context;
use super::shared::report_diagnostics;
use crate::cli::{OutputFormat, SchemaKind};
use crate::exit_codes;
use crate::pipeline::{self, diagnostic::Diagnostics};
use std::io::Write;
use std::path::PathBuf;

pub(super) fn validate(
    context: &Context,
    files: &[PathBuf],
    output: OutputFormat,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    let project = context.project.as_path();
    let files = if files.is_empty() {
        pipeline::list_pipelines(project)
    } else {
        files.to_vec()
    };
    if files.is_empty() {
        let _ = writeln!(
            stderr,
            "error: no pipeline files in {}/{}: pass files, or run from the project root (or --project DIR)",
            project.display(),
            pipeline::PIPELINES_DIR
        );
        return exit_codes::INVALID_INPUT;
    }
    let mut all = Diagnostics::default();
    let mut results = Vec::new();
    for file in &files {
        match pipeline::load(file) {
            Ok(compiled) => {
                results.push(serde_json::json!({
                    "file": file.display().to_string(),
                    "pipeline": compiled.name,
                    "ok": true,
                    "buildspecs": compiled.buildspecs.keys().collect::<Vec<_>>(),
                }));
                if output == OutputFormat::Text {
                    let buildspecs = if compiled.buildspecs.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (buildspecs: {})",
                            compiled
                                .buildspecs
                                .keys()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    };
                    let _ = writeln!(
                        stdout,
                        "ok  {} → pipeline `{}`{buildspecs}",
                        file.display(),
                        compiled.name
                    );
                }
            }
            Err(diagnostics) => {
                results.push(serde_json::json!({
                    "file": file.display().to_string(),
                    "ok": false,
                    "errors": diagnostics.0.iter().map(|d| serde_json::json!({
                        "file": d.source.path.display().to_string(),
                        "line": d.position.line,
                        "column": d.position.column,
                        "message": d.message,
                        "label": d.label,
                        "help": d.help,
                    })).collect::<Vec<_>>(),
                }));
                all.extend(diagnostics);
            }
        }
    }
    if output == OutputFormat::Json {
        let _ = writeln!(
            stdout,
            "{}",
            serde_json::to_string_pretty(&results).unwrap_or_default()
        );
    }
    if all.has_errors() {
        // JSON output carries the errors; in GitHub Actions they are annotated all the same.
        let format = match (output, &context.job) {
            (OutputFormat::Text, _) => Some(context.diagnostics()),
            (OutputFormat::Json, Some(job)) => Some(job.annotations()),
            (OutputFormat::Json, None) => None,
        };
        if let Some(format) = format {
            report_diagnostics(&all, &format, stderr);
        }
        exit_codes::INVALID_INPUT
    } else {
        exit_codes::OK
    }
}

/// `schema`: print the JSON Schema of one kind of file.
pub(super) fn schema(kind: SchemaKind, stdout: &mut dyn Write) -> i32 {
    let schema = match kind {
        SchemaKind::Pipeline => pipeline::schema(),
        SchemaKind::Defaults => pipeline::defaults_schema(),
        SchemaKind::Buildspec => crate::buildspec::schema(),
    };
    let _ = writeln!(
        stdout,
        "{}",
        serde_json::to_string_pretty(&schema).unwrap_or_default()
    );
    exit_codes::OK
}
