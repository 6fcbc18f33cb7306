//! The text exchanged with the shell: sorting the lines it prints (output, echoed plumbing,
//! sentinels) and forwarding the output among them, quoting for the lines sent to it, and parsing its `env -0` dumps.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

/// A line the shell printed, sorted.
#[derive(Debug, PartialEq, Eq)]
enum ShellLine {
    Output(String),
    /// Our own plumbing, echoed by `set -x` or `set -v`: not shown.
    Plumbing,
    /// The end of a command (`done`) or of the shell (`exit`), with output printed before it
    /// on the same line by a command whose output did not end in a newline.
    Sentinel {
        before: String,
        shell_exited: bool,
        status: i32,
    },
}

/// What the shell calls a command file in its error messages.
const COMMAND_FILE_NAME: &str = "buildspec command";

/// Sort a line. Every plumbing line and file name contains `marker`, random per run; command
/// files live in `scratch` (whose name contains the marker).
fn classify(line: &str, marker: &str, scratch: &str) -> ShellLine {
    // The shell names the command file in its errors (`…/command-3.sh: line 1: foo: command
    // not found`): those lines are the command's, so they are shown with a readable name.
    let line = name_command_files(line, scratch);
    let Some(at) = line.find(marker) else {
        return ShellLine::Output(line);
    };
    let rest = &line[at + marker.len()..];
    let parsed = if let Some(status) = rest.strip_prefix(":done:") {
        status.parse().ok().map(|status| (false, status))
    } else if let Some(status) = rest.strip_prefix(":exit:") {
        status.parse().ok().map(|status| (true, status))
    } else {
        None
    };
    match parsed {
        Some((shell_exited, status)) => ShellLine::Sentinel {
            before: line[..at].to_string(),
            shell_exited,
            status,
        },
        None => ShellLine::Plumbing,
    }
}

/// What a sentinel reports: the end of a command, or of the shell (`shell_exited`), with its
/// status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct End {
    pub(super) shell_exited: bool,
    pub(super) status: i32,
}

/// Sort a line and hand what it carries of a command's output to `lines` (with a sentinel, what
/// the command printed before it on the same line); the [`End`] a sentinel reports comes back.
pub(super) fn forward(
    line: &str,
    marker: &str,
    scratch: &str,
    lines: &mut dyn FnMut(String),
) -> Option<End> {
    match classify(line, marker, scratch) {
        ShellLine::Output(output) => {
            lines(output);
            None
        }
        ShellLine::Plumbing => None,
        ShellLine::Sentinel {
            before,
            shell_exited,
            status,
        } => {
            if !before.is_empty() {
                lines(before);
            }
            Some(End {
                shell_exited,
                status,
            })
        }
    }
}

/// Replace `<scratch>/command-<n>.sh:` (an error message's prefix) with `buildspec command:`.
/// The path alone, as `set -x` shows it for the sourcing line, stays plumbing.
fn name_command_files(line: &str, scratch: &str) -> String {
    let prefix = format!("{scratch}/command-");
    let mut named = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find(&prefix) {
        let after = &rest[at + prefix.len()..];
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        match after[digits..].strip_prefix(".sh:") {
            Some(tail) if digits > 0 => {
                named.push_str(&rest[..at]);
                named.push_str(COMMAND_FILE_NAME);
                named.push(':');
                rest = tail;
            }
            _ => {
                named.push_str(&rest[..at + prefix.len()]);
                rest = after;
            }
        }
    }
    named.push_str(rest);
    named
}

/// Quote for the shell: `it's` → `'it'\''s'`.
pub(super) fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Parse `env -0` output.
pub(super) fn parse_environment(bytes: &[u8]) -> Vec<(OsString, OsString)> {
    bytes
        .split(|byte| *byte == 0)
        .filter_map(|entry| {
            let at = entry.iter().position(|byte| *byte == b'=')?;
            (at > 0).then(|| {
                (
                    OsString::from_vec(entry[..at].to_vec()),
                    OsString::from_vec(entry[at + 1..].to_vec()),
                )
            })
        })
        .collect()
}

/// The buffered line without its line ending, as text.
pub(super) fn take_line(buffer: &mut Vec<u8>) -> String {
    let mut bytes = std::mem::take(buffer);
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_shell_lines() {
        let marker = "envelope0123";
        let scratch = "/tmp/envelope0123-x";
        let output = |text: &str| ShellLine::Output(text.to_string());
        let sentinel = |before: &str, shell_exited, status| ShellLine::Sentinel {
            before: before.to_string(),
            shell_exited,
            status,
        };
        let cases = [
            ("hello", output("hello")),
            ("envelope0123:done:0", sentinel("", false, 0)),
            (
                "no newline at the endenvelope0123:done:127",
                sentinel("no newline at the end", false, 127),
            ),
            ("envelope0123:exit:3", sentinel("", true, 3)),
            // `set -x` echoes the plumbing: never a sentinel, never shown.
            ("+ printf 'envelope0123:done:%s\\n' 0", ShellLine::Plumbing),
            ("+ . /tmp/envelope0123-x/command-1.sh", ShellLine::Plumbing),
            ("+ envelope0123_done 0", ShellLine::Plumbing),
            // The shell's errors about a command are the command's output.
            (
                "/tmp/envelope0123-x/command-12.sh: line 1: nope: command not found",
                output("buildspec command: line 1: nope: command not found"),
            ),
            (
                "/tmp/envelope0123-x/command-2.sh: 3: Syntax error: Unterminated quoted string",
                output("buildspec command: 3: Syntax error: Unterminated quoted string"),
            ),
            ("/tmp/envelope0123-x/command-x.sh: odd", ShellLine::Plumbing),
        ];
        for (line, expected) in cases {
            assert_eq!(classify(line, marker, scratch), expected, "{line}");
        }
    }

    #[test]
    fn forwards_output_and_returns_the_end() {
        let (marker, scratch) = ("envelope0123", "/tmp/envelope0123-x");
        let end = |shell_exited, status| {
            Some(End {
                shell_exited,
                status,
            })
        };
        let cases: [(&str, &[&str], Option<End>); 5] = [
            ("hello", &["hello"], None),
            ("+ envelope0123_done 0", &[], None),
            ("envelope0123:done:0", &[], end(false, 0)),
            ("partialenvelope0123:done:2", &["partial"], end(false, 2)),
            ("envelope0123:exit:3", &[], end(true, 3)),
        ];
        for (line, shown, expected) in cases {
            let mut seen = Vec::new();
            let ended = forward(line, marker, scratch, &mut |text| seen.push(text));
            assert_eq!(seen, shown, "{line}");
            assert_eq!(ended, expected, "{line}");
        }
    }
}
