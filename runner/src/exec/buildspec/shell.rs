//! The long-lived shell the commands run in: starting it in its own process group, sending it
//! lines, reading its output up to each sentinel, and restarting it when a command ends it.

use super::BuildspecError;
use super::protocol::{End, forward, parse_environment, shell_quote, take_line};
use super::variables::is_variable_name;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio::process::{Child, ChildStdin};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ShellKind {
    Bash,
    Sh,
}

impl ShellKind {
    pub(super) fn from_setting(setting: Option<&str>) -> Result<ShellKind, BuildspecError> {
        match setting {
            None | Some("bash" | "/bin/bash") => Ok(ShellKind::Bash),
            Some("sh" | "/bin/sh") => Ok(ShellKind::Sh),
            Some(other) => Err(BuildspecError::UnsupportedShell {
                shell: other.to_string(),
            }),
        }
    }

    /// The descriptor sentinels are written to. bash takes any number, so one that scripts
    /// do not use (the `exec 9>lockfile; flock 9` idiom is common); dash takes only 0–9.
    fn sentinel_fd(self) -> u32 {
        match self {
            ShellKind::Bash => 217,
            ShellKind::Sh => 9,
        }
    }

    fn program(self) -> &'static str {
        match self {
            ShellKind::Bash => "bash",
            ShellKind::Sh => "/bin/sh",
        }
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CommandEnd {
    /// It finished with this status and the shell goes on.
    Exited(i32),
    /// It ended the shell (`exit`, `set -e`, a signal).
    EndedShell {
        exit_code: Option<i32>,
        signal: Option<i32>,
    },
}

/// Kills a process group when dropped, so nothing a buildspec started outlives the build or a
/// cancelled run.
struct ProcessGroup(Option<rustix::process::Pid>);

impl ProcessGroup {
    fn kill(&self) {
        if let Some(group) = self.0 {
            // ESRCH (already gone) is fine.
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One running shell. Field order matters: the group is killed before the child is dropped.
struct ShellProcess {
    group: ProcessGroup,
    child: Child,
    stdin: ChildStdin,
    output: BufReader<pipe::Receiver>,
    /// Has not read the preamble yet (sent with the first line).
    fresh: bool,
}

/// The shell the commands run in, restarted with the old one's state if a command ends it.
pub(super) struct Session {
    kind: ShellKind,
    /// Plumbing files: command scripts, environment dumps. Its path contains `marker`.
    scratch: tempfile::TempDir,
    /// `scratch` as text, for shell lines.
    scratch_path: String,
    marker: String,
    /// Environment and directory for a new shell when the last one left no dump.
    fallback_env: Vec<(OsString, OsString)>,
    fallback_dir: PathBuf,
    process: Option<ShellProcess>,
    commands_run: u64,
    buffer: Vec<u8>,
}

/// How long to collect output after a shell died without its exit trap.
const DRAIN_AFTER_DEATH: Duration = Duration::from_millis(500);

impl Session {
    pub(super) fn start(
        kind: ShellKind,
        source_dir: &Path,
        env: Vec<(OsString, OsString)>,
    ) -> Result<Session, BuildspecError> {
        let marker = format!("envelope{:032x}", rand::random::<u128>());
        let scratch = tempfile::Builder::new()
            .prefix(&format!("{marker}-"))
            .tempdir()
            .map_err(|source| BuildspecError::ScratchDir { source })?;
        let Some(scratch_path) = scratch.path().to_str().map(str::to_string) else {
            return Err(BuildspecError::ScratchDir {
                source: std::io::Error::other(format!(
                    "the temporary directory {} is not a UTF-8 path; set TMPDIR",
                    scratch.path().display()
                )),
            });
        };
        let mut session = Session {
            kind,
            scratch,
            scratch_path,
            marker,
            fallback_env: env,
            fallback_dir: source_dir.to_path_buf(),
            process: None,
            commands_run: 0,
            buffer: Vec::new(),
        };
        let scratch_path = &session.scratch_path;
        let marker = &session.marker;
        let env_program = ["/usr/bin/env", "/bin/env"]
            .into_iter()
            .find(|path| Path::new(path).exists())
            .unwrap_or("env");
        // A spare descriptor keeps the original output pipe, so sentinels arrive even after a
        // command runs `exec >/dev/null`; if a command closed it, stdout has to do.
        let fd = kind.sentinel_fd();
        let preamble = format!(
            "exec {fd}>&1\n\
             {marker}_say() {{ {{ printf '{marker}:%s:%s\\n' \"$1\" \"$2\" >&{fd}; }} 2>/dev/null || printf '{marker}:%s:%s\\n' \"$1\" \"$2\"; }}\n\
             {marker}_done() {{ {marker}_say done \"$1\"; }}\n\
             {marker}_exit() {{ {env_program} -0 > {exit_env} 2>/dev/null; pwd > {exit_dir} 2>/dev/null; {marker}_say exit \"$1\"; }}\n\
             {marker}_environment() {{ {env_program} -0 > {environment}; }}\n\
             trap '{marker}_exit $?' EXIT\n",
            exit_env = shell_quote(&format!("{scratch_path}/exit-env")),
            exit_dir = shell_quote(&format!("{scratch_path}/exit-dir")),
            environment = shell_quote(&format!("{scratch_path}/environment")),
        );
        std::fs::write(session.scratch.path().join("preamble.sh"), preamble)
            .map_err(|source| BuildspecError::ScratchDir { source })?;
        session.spawn()?;
        Ok(session)
    }

    /// Start a shell: the first one, or a new one after a command ended the last.
    fn spawn(&mut self) -> Result<(), BuildspecError> {
        let exit_env = self.scratch.path().join("exit-env");
        let exit_dir = self.scratch.path().join("exit-dir");
        if let Ok(dump) = std::fs::read(&exit_env) {
            self.fallback_env = parse_environment(&dump);
        }
        if let Ok(dir) = std::fs::read(&exit_dir) {
            let dir = PathBuf::from(OsStr::from_bytes(dir.trim_ascii_end()));
            if dir.is_dir() {
                self.fallback_dir = dir;
            }
        }
        let _ = std::fs::remove_file(&exit_env);
        let _ = std::fs::remove_file(&exit_dir);

        let shell = self.kind.program();
        let start_error = |source| BuildspecError::ShellStart { shell, source };
        let (reader, writer) = std::io::pipe().map_err(start_error)?;
        let mut command = tokio::process::Command::new(shell);
        command
            .env_clear()
            .envs(self.fallback_env.iter().map(|(name, value)| (name, value)))
            .current_dir(&self.fallback_dir)
            .stdin(Stdio::piped())
            .stdout(writer.try_clone().map_err(start_error)?)
            .stderr(writer)
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(start_error)?;
        // The command holds our copies of the pipe's write end; without dropping it the
        // output would never reach end of file.
        drop(command);
        let group = ProcessGroup(
            child
                .id()
                .and_then(|pid| rustix::process::Pid::from_raw(pid as i32)),
        );
        let stdin = child.stdin.take().expect("stdin is piped");
        let output = pipe::Receiver::from_owned_fd(OwnedFd::from(reader)).map_err(start_error)?;
        self.process = Some(ShellProcess {
            group,
            child,
            stdin,
            output: BufReader::new(output),
            fresh: true,
        });
        self.buffer.clear();
        Ok(())
    }

    /// Run a buildspec command in the shell.
    pub(super) async fn run_command(
        &mut self,
        command: &str,
        lines: &mut (dyn FnMut(String) + Send),
    ) -> Result<CommandEnd, BuildspecError> {
        self.commands_run += 1;
        let file = self
            .scratch
            .path()
            .join(format!("command-{}.sh", self.commands_run));
        let mut script = command.to_string();
        if !script.ends_with('\n') {
            script.push('\n');
        }
        std::fs::write(&file, script).map_err(|source| BuildspecError::ScratchDir { source })?;
        let line = format!(". {} </dev/null", shell_quote(&file.to_string_lossy()));
        self.execute(&line, lines).await
    }

    /// The shell's exported variables, by name.
    pub(super) async fn environment(&mut self) -> Result<BTreeMap<String, String>, BuildspecError> {
        let file = self.scratch.path().join("environment");
        let _ = std::fs::remove_file(&file);
        let line = format!("{}_environment", self.marker);
        let mut errors = Vec::new();
        let end = self.execute(&line, &mut |line| errors.push(line)).await?;
        let dump = match (end, std::fs::read(&file)) {
            (CommandEnd::Exited(0), Ok(dump)) => dump,
            _ => {
                return Err(BuildspecError::Shell {
                    action: "saving its environment for the image build",
                    source: std::io::Error::other(format!(
                        "`env -0` did not work: {}",
                        errors.join(" ")
                    )),
                });
            }
        };
        Ok(parse_environment(&dump)
            .into_iter()
            .filter_map(|(name, value)| {
                let name = name.into_string().ok()?;
                is_variable_name(&name).then(|| (name, value.to_string_lossy().into_owned()))
            })
            .collect())
    }

    /// The values of these shell variables (exported or not) that are set.
    pub(super) async fn capture(
        &mut self,
        names: &[String],
    ) -> Result<BTreeMap<String, String>, BuildspecError> {
        if names.is_empty() {
            return Ok(BTreeMap::new());
        }
        let dir = self.scratch.path().join("captured");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).map_err(|source| BuildspecError::ScratchDir { source })?;
        let mut line = String::new();
        for name in names {
            debug_assert!(is_variable_name(name));
            let file = shell_quote(&dir.join(name).to_string_lossy());
            line.push_str(&format!(
                "if [ -n \"${{{name}+set}}\" ]; then printf '%s' \"${name}\" > {file}; fi; "
            ));
        }
        line.push(':');
        self.execute(&line, &mut |_| {}).await?;
        let mut captured = BTreeMap::new();
        for name in names {
            if let Ok(value) = std::fs::read(dir.join(name)) {
                captured.insert(name.clone(), String::from_utf8_lossy(&value).into_owned());
            }
        }
        Ok(captured)
    }

    /// Send a line (a sourced command, or one of our own) to the shell and report its output
    /// until its sentinel.
    pub(super) async fn execute(
        &mut self,
        line: &str,
        lines: &mut (dyn FnMut(String) + Send),
    ) -> Result<CommandEnd, BuildspecError> {
        if self.process.is_none() {
            self.spawn()?;
        }
        let process = self.process.as_mut().expect("a shell is running");
        let mut text = String::new();
        if std::mem::take(&mut process.fresh) {
            let preamble = self.scratch.path().join("preamble.sh");
            text.push_str(&format!(". {}\n", shell_quote(&preamble.to_string_lossy())));
        }
        text.push_str(&format!("{line}; {}_done $?\n", self.marker));
        // A shell that already ended cannot take the line; its end is read below.
        let _ = process.stdin.write_all(text.as_bytes()).await;
        let _ = process.stdin.flush().await;
        loop {
            tokio::select! {
                biased;
                read = process.output.read_until(b'\n', &mut self.buffer) => {
                    let read = read.map_err(|source| BuildspecError::Shell {
                        action: "reading its output",
                        source,
                    })?;
                    if read == 0 {
                        // Every writer is gone, so the shell has ended.
                        let status = process.child.wait().await.ok();
                        return Ok(self.ended(None, status));
                    }
                    let text = take_line(&mut self.buffer);
                    if let Some(end) = forward(&text, &self.marker, &self.scratch_path, lines) {
                        if !end.shell_exited {
                            return Ok(CommandEnd::Exited(end.status));
                        }
                        // Kill the group before reaping the shell, while its id is still
                        // reserved: background processes go with it.
                        process.group.kill();
                        let wait_status = process.child.wait().await.ok();
                        return Ok(self.ended(Some(end.status), wait_status));
                    }
                }
                status = process.child.wait() => {
                    // Ended without its exit trap (a signal, or a command replaced the trap):
                    // collect what it printed, then carry on without it.
                    let status = status.ok();
                    let mut trap_status = None;
                    let deadline = tokio::time::sleep(DRAIN_AFTER_DEATH);
                    tokio::pin!(deadline);
                    loop {
                        tokio::select! {
                            read = process.output.read_until(b'\n', &mut self.buffer) => {
                                match read {
                                    Ok(0) | Err(_) => break,
                                    Ok(_) => {}
                                }
                                let text = take_line(&mut self.buffer);
                                let end = forward(&text, &self.marker, &self.scratch_path, lines);
                                if let Some(End { shell_exited: true, status }) = end {
                                    trap_status = Some(status);
                                }
                            }
                            () = &mut deadline => break,
                        }
                    }
                    if !self.buffer.is_empty() {
                        let text = take_line(&mut self.buffer);
                        lines(text);
                    }
                    process.group.kill();
                    return Ok(self.ended(trap_status, status));
                }
            }
        }
    }

    /// The shell is gone; the next line starts a new one.
    fn ended(&mut self, trap_status: Option<i32>, wait_status: Option<ExitStatus>) -> CommandEnd {
        use std::os::unix::process::ExitStatusExt;
        self.process = None;
        self.buffer.clear();
        match trap_status {
            Some(code) => CommandEnd::EndedShell {
                exit_code: Some(code),
                signal: None,
            },
            None => CommandEnd::EndedShell {
                exit_code: wait_status.and_then(|status| status.code()),
                signal: wait_status.and_then(|status| status.signal()),
            },
        }
    }

    /// Kill the shell and whatever it left running in the background (the end of a CodeBuild
    /// build ends its container too).
    pub(super) async fn shutdown(mut self) {
        if let Some(mut process) = self.process.take() {
            process.group.kill();
            let _ = process.child.wait().await;
        }
    }
}
