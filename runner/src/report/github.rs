//! GitHub Actions rendering: workflow commands (log groups, annotations, masks), step outputs
//! and the Markdown job summary.
//!
//! # Untrusted output
//!
//! The Actions runner treats any output line that starts (after leading spaces) with `::name::`,
//! or that contains `##[name]` anywhere, as a workflow command. Build output, buildspec command
//! output, migration task logs and error messages are written by other people's code, so a
//! line such as `::add-mask::`, `::set-output ...` or `##[endgroup]` could otherwise forge our
//! commands. Prefixing lines cannot catch `##[` in the middle of a line without rewriting the
//! output, so this reporter uses the runner's own switch instead: `::stop-commands::<token>`
//! turns command processing off until a line `::<token>::` arrives. The token is random per
//! process, so output cannot guess it. Commands stay stopped whenever anything but this
//! reporter's own commands is written; each batch of its own commands is bracketed by
//! `::<token>::` … `::stop-commands::<token>`.
//!
//! The runner keeps one stop switch for both standard output and standard error but reads the
//! two pipes on separate threads, so every workflow command in Actions mode (and every line it
//! guards) goes to one stream, standard error, like the other reporters. Standard output stays
//! free for machine-readable output (`plan --output json`, `validate --output json`).

use crate::event::Event;
use crate::pipeline::diagnostic::{Diagnostic, Severity};
use crate::report::{Reporter, describe};
use crate::run::StageKind;
use crate::run::{ApprovalRecord, RunRecord, RunStatus, StageStatus, TriggerKind};
use std::collections::BTreeMap;
use std::io::Write;

/// Escape the data (message) part of a workflow command exactly as `@actions/core` does:
/// `%` → `%25`, CR → `%0D`, LF → `%0A`.
pub fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escape a workflow command property value exactly as `@actions/core` does: the data escapes
/// plus `:` → `%3A` and `,` → `%2C`.
pub fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

/// One workflow command line without its newline: `::name key=value,key=value::data`.
/// Properties with empty values are left out, as `@actions/core` does.
pub fn workflow_command(name: &str, properties: &[(&str, &str)], data: &str) -> String {
    let properties: Vec<String> = properties
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(key, value)| format!("{key}={}", escape_property(value)))
        .collect();
    if properties.is_empty() {
        format!("::{name}::{}", escape_data(data))
    } else {
        format!("::{name} {}::{}", properties.join(","), escape_data(data))
    }
}

/// The random token that stops and resumes workflow command processing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandToken(String);

impl CommandToken {
    /// A fresh token: 128 random bits, unguessable by the output it guards.
    pub fn random() -> Self {
        CommandToken(format!("envelope-{:032x}", rand::random::<u128>()))
    }

    /// `::stop-commands::<token>`: the runner ignores workflow commands from here on.
    pub fn stop_line(&self) -> String {
        format!("::stop-commands::{}", self.0)
    }

    /// `::<token>::`: the runner processes workflow commands again.
    pub fn resume_line(&self) -> String {
        format!("::{}::", self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Renders a run for the GitHub Actions log: one collapsible group per stage, failures as
/// `::error` annotations, notices and approval waits as `::notice` annotations, everything
/// else as plain lines with workflow commands stopped.
///
/// Protocol: create it after writing `token.stop_line()` to the same stream. It leaves
/// commands stopped when it finishes, so what the caller prints after the run is guarded as
/// well; the caller writes `token.resume_line()` when it is done.
pub struct GithubActionsReporter<W: Write + Send> {
    out: W,
    token: CommandToken,
    /// Whether the runner currently ignores workflow commands.
    stopped: bool,
    /// The stage whose group is open.
    group: Option<String>,
}

impl<W: Write + Send> GithubActionsReporter<W> {
    /// A reporter writing to `out`, where commands were stopped with `token`.
    pub fn new(out: W, token: CommandToken) -> Self {
        GithubActionsReporter {
            out,
            token,
            stopped: true,
            group: None,
        }
    }

    /// The writer, for tests.
    pub fn into_inner(self) -> W {
        self.out
    }

    /// Write text that may hold anything: commands are stopped first.
    fn untrusted(&mut self, text: &str) {
        let mut buffer = String::new();
        if !self.stopped {
            buffer.push_str(&self.token.stop_line());
            buffer.push('\n');
            self.stopped = true;
        }
        buffer.push_str(text);
        buffer.push('\n');
        let _ = self.out.write_all(buffer.as_bytes());
    }

    /// Write our own workflow commands (already escaped): commands are resumed first. They are
    /// stopped again lazily, before the next untrusted line, to keep the log short.
    fn commands(&mut self, lines: &[String]) {
        if lines.is_empty() {
            return;
        }
        let mut buffer = String::new();
        if self.stopped {
            buffer.push_str(&self.token.resume_line());
            buffer.push('\n');
            self.stopped = false;
        }
        for line in lines {
            buffer.push_str(line);
            buffer.push('\n');
        }
        let _ = self.out.write_all(buffer.as_bytes());
    }

    fn end_group(&mut self) -> Option<String> {
        self.group
            .take()
            .map(|_| workflow_command("endgroup", &[], ""))
    }
}

impl<W: Write + Send> Reporter for GithubActionsReporter<W> {
    fn event(&mut self, event: &Event) {
        match event {
            Event::StageStarted { stage, .. } => {
                let mut lines: Vec<String> = self.end_group().into_iter().collect();
                lines.push(workflow_command("group", &[], stage));
                self.group = Some(stage.clone());
                self.commands(&lines);
            }
            Event::StageFinished {
                stage,
                status,
                error,
                ..
            } => {
                if let Some(text) = describe(event) {
                    self.untrusted(&text);
                }
                let mut lines: Vec<String> = self.end_group().into_iter().collect();
                if *status == StageStatus::Failed {
                    let title = format!("Stage {stage} failed");
                    let message = error.as_deref().unwrap_or("the stage failed");
                    lines.push(workflow_command("error", &[("title", &title)], message));
                }
                self.commands(&lines);
            }
            Event::AwaitingApproval { stage, run } => {
                if let Some(text) = describe(event) {
                    self.untrusted(&text);
                }
                let message = format!(
                    "Run {run} is waiting at `{stage}`: `envelope-runner approve {run}` (or --reject), then `envelope-runner resume {run}`"
                );
                self.commands(&[workflow_command(
                    "notice",
                    &[("title", "Waiting for approval")],
                    &message,
                )]);
            }
            Event::Notice { stage, message } => {
                let title = stage
                    .as_deref()
                    .map(|stage| format!("envelope-runner: {stage}"))
                    .unwrap_or_else(|| "envelope-runner".into());
                self.commands(&[workflow_command("notice", &[("title", &title)], message)]);
            }
            Event::Warning { stage, message } => {
                let title = stage
                    .as_deref()
                    .map(|stage| format!("envelope-runner: {stage}"))
                    .unwrap_or_else(|| "envelope-runner".into());
                self.commands(&[workflow_command("warning", &[("title", &title)], message)]);
            }
            other => {
                if let Some(text) = describe(other) {
                    self.untrusted(&text);
                }
            }
        }
    }

    fn finish(&mut self) {
        let lines: Vec<String> = self.end_group().into_iter().collect();
        self.commands(&lines);
        if !self.stopped {
            let stop = self.token.stop_line();
            let _ = writeln!(self.out, "{stop}");
            self.stopped = true;
        }
        let _ = self.out.flush();
    }
}

/// The `::error` (or `::warning`) annotation of a pipeline diagnostic, placed at `file` (the
/// path as GitHub should see it: relative to the repository root).
pub fn diagnostic_annotation(diagnostic: &Diagnostic, file: &str) -> String {
    let (name, title) = match diagnostic.severity {
        Severity::Error => ("error", "envelope-runner: invalid pipeline"),
        Severity::Warning => ("warning", "envelope-runner: pipeline warning"),
    };
    let mut message = diagnostic.message.clone();
    if let Some(label) = &diagnostic.label {
        message.push_str(&format!(" ({label})"));
    }
    if let Some(help) = &diagnostic.help {
        message.push_str(&format!("\nhelp: {help}"));
    }
    let (line, column) = if diagnostic.position.is_known() {
        (
            diagnostic.position.line.to_string(),
            diagnostic.position.column.to_string(),
        )
    } else {
        (String::new(), String::new())
    };
    workflow_command(
        name,
        &[
            ("file", file),
            ("line", &line),
            ("col", &column),
            ("title", title),
        ],
        &message,
    )
}

/// One entry of `$GITHUB_OUTPUT`, newline included: `name=value` for a one-line value, the
/// heredoc form `name<<DELIMITER` … `DELIMITER` with a random delimiter otherwise.
pub fn output_entry(name: &str, value: &str) -> String {
    if !value.contains(['\n', '\r']) {
        return format!("{name}={value}\n");
    }
    let delimiter = loop {
        let candidate = format!("ghadelimiter_{:032x}", rand::random::<u128>());
        if !value.contains(&candidate) {
            break candidate;
        }
    };
    format!("{name}<<{delimiter}\n{value}\n{delimiter}\n")
}

/// The step outputs of a run: `run-id`, `status`, `image` and `image-digest` of the first push
/// (and `image-<build>` / `image-digest-<build>` of every push of a build not named `build`),
/// and `task-definition-<service>` for every service a deploy registered a task definition for.
pub fn run_outputs(record: &RunRecord) -> Vec<(String, String)> {
    let mut outputs = vec![
        ("run-id".to_owned(), record.id.0.clone()),
        ("status".to_owned(), record.status.as_str().to_owned()),
    ];
    let pushes: Vec<_> = record
        .stages
        .iter()
        .filter(|stage| stage.kind == StageKind::Push && stage.status == StageStatus::Succeeded)
        .collect();
    for (index, stage) in pushes.iter().enumerate() {
        let build = stage
            .name
            .strip_suffix("-push")
            .unwrap_or("build")
            .to_owned();
        let mut suffixes = Vec::new();
        if index == 0 {
            suffixes.push(String::new());
        }
        if build != "build" {
            suffixes.push(format!("-{}", output_name(&build)));
        }
        for suffix in suffixes {
            if let Some(image) = &stage.outputs.image {
                outputs.push((format!("image{suffix}"), image.clone()));
            }
            if let Some(digest) = &stage.outputs.digest {
                outputs.push((format!("image-digest{suffix}"), digest.clone()));
            }
        }
    }
    for stage in record
        .stages
        .iter()
        .filter(|stage| stage.kind == StageKind::Deploy)
    {
        for (service, arn) in &stage.outputs.task_definitions {
            outputs.push((
                format!("task-definition-{}", output_name(service)),
                arn.clone(),
            ));
        }
    }
    outputs
}

/// Output names may hold letters, digits, `-` and `_`.
fn output_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Links the job summary shows; each is left out when unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SummaryLinks {
    /// This workflow run.
    pub workflow_run: Option<String>,
    /// The built commit.
    pub commit: Option<String>,
    /// The release page of the tag.
    pub release: Option<String>,
}

/// The Markdown job summary of a run, from its record in the store. `approvals` holds the
/// decisions recorded at approval gates by stage name (rejections are not stage outputs).
/// Nothing in a record is secret; stage error messages are still passed through `redact`.
pub fn job_summary(
    record: &RunRecord,
    approvals: &BTreeMap<String, ApprovalRecord>,
    links: &SummaryLinks,
    redact: &dyn Fn(&str) -> String,
) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "## {} envelope-runner: `{}` {}\n\n",
        run_status_mark(record.status),
        record.pipeline,
        record.status.as_str()
    ));
    out.push_str("| | |\n|---|---|\n");
    out.push_str(&format!("| Pipeline | `{}` |\n", record.pipeline));
    out.push_str(&format!("| Run | `{}` |\n", record.id));
    match &record.trigger.tag {
        Some(tag) => out.push_str(&format!("| Release | `{}` |\n", code_text(tag))),
        None => out.push_str(&format!(
            "| Ref | `{}` |\n",
            code_text(&record.trigger.git_ref)
        )),
    }
    let sha = record
        .stages
        .iter()
        .find_map(|stage| stage.outputs.sha.clone())
        .or_else(|| record.context.get("sha").cloned())
        .or_else(|| record.trigger.sha.clone());
    if let Some(sha) = &sha {
        out.push_str(&format!("| Commit | `{}` |\n", code_text(sha)));
    }
    out.push_str(&format!(
        "| Started | {} by {} |\n",
        record.created_at,
        markdown_text(&trigger_text(&record.trigger.kind))
    ));
    if let Some(finished) = &record.finished_at {
        out.push_str(&format!("| Finished | {finished} |\n"));
    }

    out.push_str("\n### Stages\n\n| Stage | Status | Duration |\n|---|---|---|\n");
    for stage in &record.stages {
        let duration = match (&stage.started_at, &stage.finished_at) {
            (Some(started), Some(finished)) => seconds_between(started, finished)
                .map(format_duration)
                .unwrap_or_else(|| "–".into()),
            _ => "–".into(),
        };
        out.push_str(&format!(
            "| `{}` | {} {} | {duration} |\n",
            stage.name,
            stage_status_mark(stage.status),
            stage.status.as_str()
        ));
    }

    let warnings: Vec<(&str, &String)> = record
        .stages
        .iter()
        .flat_map(|stage| {
            stage
                .outputs
                .warnings
                .iter()
                .map(|w| (stage.name.as_str(), w))
        })
        .collect();
    if !warnings.is_empty() {
        out.push_str("\n### Warnings\n\n");
        for (stage, warning) in warnings {
            out.push_str(&format!(
                "- :warning: `{stage}`: {}\n",
                markdown_text(&redact(warning))
            ));
        }
    }

    let images: Vec<_> = record
        .stages
        .iter()
        .filter(|stage| stage.kind == StageKind::Push)
        .filter_map(|stage| stage.outputs.image.as_ref().map(|image| (stage, image)))
        .collect();
    if !images.is_empty() {
        out.push_str("\n### Image\n\n");
        for (stage, image) in images {
            out.push_str(&format!("- `{}`", code_text(image)));
            if let Some(digest) = &stage.outputs.digest {
                out.push_str(&format!(" (digest `{}`)", code_text(digest)));
            }
            out.push('\n');
        }
    }

    let deployed: Vec<(&str, &String, &String)> = record
        .stages
        .iter()
        .filter(|stage| stage.kind == StageKind::Deploy)
        .flat_map(|stage| {
            stage
                .outputs
                .task_definitions
                .iter()
                .map(move |(service, arn)| (stage.name.as_str(), service, arn))
        })
        .collect();
    if !deployed.is_empty() {
        out.push_str(
            "\n### Deployed services\n\n| Service | Task definition | Stage |\n|---|---|---|\n",
        );
        for (stage, service, arn) in deployed {
            out.push_str(&format!(
                "| `{}` | `{}` | `{stage}` |\n",
                code_text(service),
                code_text(arn)
            ));
        }
    }

    // Gates that were reached: decided, or waiting for a decision.
    let mut decisions = Vec::new();
    for gate in record
        .stages
        .iter()
        .filter(|stage| stage.kind == StageKind::Approval)
    {
        match approvals.get(&gate.name).or(gate.outputs.approval.as_ref()) {
            Some(decision) => {
                let mut line = format!(
                    "- `{}`: {} by **{}** at {}",
                    gate.name,
                    if decision.approved {
                        "approved"
                    } else {
                        "rejected"
                    },
                    markdown_text(&decision.by),
                    markdown_text(&decision.at)
                );
                if let Some(comment) = &decision.comment {
                    line.push_str(&format!(": {}", markdown_text(comment)));
                }
                decisions.push(line);
            }
            None if gate.status == StageStatus::Waiting => decisions.push(format!(
                "- `{}`: waiting. Approve with `envelope-runner approve {}`, then `envelope-runner resume {}`",
                gate.name, record.id, record.id
            )),
            None => {}
        }
    }
    if !decisions.is_empty() {
        out.push_str(&format!("\n### Approval\n\n{}\n", decisions.join("\n")));
    }

    for stage in record.stages.iter().filter(|stage| stage.error.is_some()) {
        let error = redact(stage.error.as_deref().unwrap_or_default());
        let fence = "`".repeat(longest_backtick_run(&error).max(2) + 1);
        out.push_str(&format!(
            "\n### Stage `{}` failed\n\n{fence}text\n{error}\n{fence}\n",
            stage.name
        ));
    }

    let links: Vec<String> = [
        ("Workflow run", &links.workflow_run),
        ("Commit", &links.commit),
        ("Release", &links.release),
    ]
    .into_iter()
    .filter_map(|(name, url)| url.as_ref().map(|url| format!("[{name}]({url})")))
    .collect();
    if !links.is_empty() {
        out.push_str(&format!("\n{}\n", links.join(" · ")));
    }
    out
}

fn trigger_text(kind: &TriggerKind) -> String {
    match kind {
        TriggerKind::Cli { user } => format!("{user} (command line)"),
        TriggerKind::Local { user } => format!("{user} (local build)"),
        TriggerKind::GithubActions { run_id, actor } => {
            format!("{actor} (GitHub Actions run {run_id})")
        }
        TriggerKind::Release {
            repository,
            release_id,
            ..
        } => format!("release {release_id} of {repository}"),
        TriggerKind::Rollback { from_run } => format!("rollback of run {from_run}"),
        TriggerKind::Promotion {
            from_run,
            from_pipeline,
        } => format!("promotion of run {from_run} ({from_pipeline})"),
    }
}

/// Seconds from one RFC 3339 time to another.
fn seconds_between(start: &str, end: &str) -> Option<i64> {
    let start = chrono::DateTime::parse_from_rfc3339(start).ok()?;
    let end = chrono::DateTime::parse_from_rfc3339(end).ok()?;
    Some((end - start).num_seconds().max(0))
}

fn format_duration(seconds: i64) -> String {
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m {:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h {:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

/// Text for inside a Markdown code span: backticks would end it, newlines and pipes would
/// break a table row.
fn code_text(text: &str) -> String {
    text.replace(['`', '\n', '\r'], " ").replace('|', "\\|")
}

/// Plain text that Markdown must show as written (names, comments, times).
fn markdown_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\r' => out.push(' '),
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' | '!' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

fn longest_backtick_run(text: &str) -> usize {
    text.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

fn run_status_mark(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Succeeded => "✅",
        RunStatus::Failed => "❌",
        RunStatus::Rejected => "⛔",
        RunStatus::Waiting => "⏸️",
        RunStatus::Queued | RunStatus::Running => "⏳",
        RunStatus::Cancelled | RunStatus::Superseded => "⏹️",
    }
}

fn stage_status_mark(status: StageStatus) -> &'static str {
    match status {
        StageStatus::Succeeded => "✅",
        StageStatus::Failed => "❌",
        StageStatus::Waiting => "⏸️",
        StageStatus::Running => "⏳",
        StageStatus::Pending => "·",
        StageStatus::Skipped => "⏭️",
        StageStatus::Cancelled => "⏹️",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_leave_out_empty_properties() {
        assert_eq!(
            workflow_command("error", &[("file", "a.yaml"), ("line", "")], "x"),
            "::error file=a.yaml::x"
        );
        assert_eq!(workflow_command("endgroup", &[], ""), "::endgroup::");
    }

    #[test]
    fn one_line_outputs_are_plain_and_multi_line_outputs_use_a_random_heredoc() {
        assert_eq!(output_entry("status", "waiting"), "status=waiting\n");
        let entry = output_entry("notes", "a\nb");
        let lines: Vec<&str> = entry.lines().collect();
        assert_eq!(lines.len(), 4, "{entry}");
        let delimiter = lines[0].strip_prefix("notes<<").unwrap();
        assert!(delimiter.starts_with("ghadelimiter_"), "{entry}");
        assert_eq!(lines[1..], ["a", "b", delimiter]);
        assert_ne!(
            output_entry("notes", "a\nb"),
            entry,
            "delimiters are random"
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(65), "1m 05s");
        assert_eq!(format_duration(3720), "1h 02m");
        assert_eq!(
            seconds_between("2026-01-01T10:00:00Z", "2026-01-01T10:01:05Z"),
            Some(65)
        );
    }

    #[test]
    fn markdown_text_cannot_format_or_break_tables() {
        assert_eq!(
            markdown_text("a|b *c* <img>\nd"),
            "a\\|b \\*c\\* \\<img\\> d"
        );
        assert_eq!(longest_backtick_run("a ``` b ` c"), 3);
    }
}
