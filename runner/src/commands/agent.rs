//! `agent`: hand over to the `envelope-agent` program.

use crate::exit_codes;
use std::path::PathBuf;

/// `agent`: become the `envelope-agent` program found next to this executable (or on the
/// PATH). The agent is a crate of its own that depends on this one, so it cannot be linked in;
/// the process is replaced, so SIGTERM reaches the agent directly.
pub(super) fn agent(args: &[std::ffi::OsString]) -> i32 {
    let name = format!("envelope-agent{}", std::env::consts::EXE_SUFFIX);
    let program = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(&name)))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from(&name));
    let mut command = std::process::Command::new(&program);
    command.args(args);
    #[cfg(unix)]
    let error = std::os::unix::process::CommandExt::exec(&mut command);
    #[cfg(not(unix))]
    let error = match command.status() {
        Ok(status) => return status.code().unwrap_or(exit_codes::ENVIRONMENT),
        Err(error) => error,
    };
    eprintln!(
        "error: cannot start {}: {error}; install envelope-agent next to envelope-runner (the release archive and the image ship both)",
        program.display()
    );
    exit_codes::ENVIRONMENT
}
