//! `completions` and `man`: the command line describing itself, generated from the `cli`
//! types so they cannot drift from what the parser accepts.

use crate::cli::Cli;
use crate::{bootstrap, exit_codes};
use clap::CommandFactory;
use std::io::Write;
use std::path::Path;

/// `completions SHELL`: the completion script for `shell` on `stdout`.
pub(super) fn completions(shell: clap_complete::Shell, stdout: &mut dyn Write) -> i32 {
    let mut command = Cli::command();
    // Generated into memory first: clap_complete panics when its writer fails.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "envelope-runner", &mut script);
    bootstrap::write_output(stdout, &script)
}

/// `man [--dir DIR]`: envelope-runner(1) on `stdout`, or that page and one page per command
/// (`envelope-runner-run.1`, …) written into `dir`.
pub(super) fn man(dir: Option<&Path>, stdout: &mut dyn Write) -> i32 {
    let command = Cli::command();
    let Some(dir) = dir else {
        let mut page = Vec::new();
        return match clap_mangen::Man::new(command).render(&mut page) {
            Ok(()) => bootstrap::write_output(stdout, &page),
            Err(error) => {
                eprintln!("error: cannot render the manual page: {error}");
                exit_codes::ENVIRONMENT
            }
        };
    };
    match write_pages(command, dir) {
        Ok(count) => {
            let _ = writeln!(stdout, "wrote {count} manual pages into {}", dir.display());
            exit_codes::OK
        }
        Err(error) => {
            eprintln!(
                "error: cannot write manual pages into {}: {error}",
                dir.display()
            );
            exit_codes::ENVIRONMENT
        }
    }
}

/// The top-level page and one page per visible subcommand; returns how many were written.
fn write_pages(command: clap::Command, dir: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let command = command.disable_help_subcommand(true);
    let mut count = 0;
    let mut page = |name: String, command: clap::Command| -> std::io::Result<()> {
        let mut file = std::fs::File::create(dir.join(format!("{name}.1")))?;
        clap_mangen::Man::new(command.display_name(&name).bin_name(&name)).render(&mut file)?;
        count += 1;
        Ok(())
    };
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        page(format!("envelope-runner-{}", sub.get_name()), sub.clone())?;
    }
    page("envelope-runner".to_owned(), command)?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument and option of every command says what it is for.
    #[test]
    fn every_argument_has_help_text() {
        let mut missing = Vec::new();
        let command = Cli::command();
        let mut commands = vec![(String::from("envelope-runner"), &command)];
        while let Some((path, command)) = commands.pop() {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                commands.push((format!("{path} {}", sub.get_name()), sub));
            }
        }
        assert!(missing.is_empty(), "arguments without help: {missing:#?}");
    }

    #[test]
    fn bash_completion_names_every_command_and_is_valid_shell() {
        let mut script = Vec::new();
        assert_eq!(
            completions(clap_complete::Shell::Bash, &mut script),
            exit_codes::OK
        );
        let script = String::from_utf8(script).unwrap();
        for command in ["validate", "plan", "run", "approve", "rollback", "history"] {
            assert!(script.contains(command), "{command} missing");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("envelope-runner.bash");
        std::fs::write(&file, &script).unwrap();
        let syntax = std::process::Command::new("bash")
            .arg("-n")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            syntax.status.success(),
            "{}",
            String::from_utf8_lossy(&syntax.stderr)
        );
    }

    #[test]
    fn man_pages_are_written_for_every_command() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        assert_eq!(man(Some(dir.path()), &mut out), exit_codes::OK);
        let run = std::fs::read_to_string(dir.path().join("envelope-runner-run.1")).unwrap();
        assert!(run.contains(".TH envelope-runner-run 1"), "{run}");
        assert!(run.contains("\\-\\-local"), "{run}");
        let top = std::fs::read_to_string(dir.path().join("envelope-runner.1")).unwrap();
        assert!(top.contains("Exit codes"), "{top}");
        assert!(!dir.path().join("envelope-runner-help.1").exists());
    }
}
