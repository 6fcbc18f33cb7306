//! Where an Actions session writes: the stream the runner reads workflow commands from
//! ([`CommandStream`], standard error in a job) and the job's files ([`JobFile`]: step outputs,
//! step summary), each appended to when there is something to write.

use super::ActionsEnvironment;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The stream workflow commands go to. Clones share it, so the run's reporter and the session
/// write to one stream in order (the runner keeps one stop switch for all output; see
/// `report::github`).
#[derive(Clone)]
pub struct CommandStream(Arc<Mutex<dyn Write + Send>>);

impl CommandStream {
    /// Standard error, where every workflow command of the process goes.
    pub fn stderr() -> Self {
        CommandStream::new(std::io::stderr())
    }

    pub fn new(out: impl Write + Send + 'static) -> Self {
        CommandStream(Arc::new(Mutex::new(out)))
    }

    /// Write lines (each given without its newline) in one write; nothing for no lines.
    pub fn write_lines(&self, lines: &[String]) {
        if lines.is_empty() {
            return;
        }
        let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
        let _ = self.write_all_now(text.as_bytes());
    }

    fn write_all_now(&self, bytes: &[u8]) -> std::io::Result<()> {
        // A panic while writing elsewhere must not silence the job's commands.
        let mut out = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        out.write_all(bytes)?;
        out.flush()
    }
}

impl Write for CommandStream {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.write_all_now(bytes).map(|()| bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .flush()
    }
}

/// A file the job reads after the step, appended to (other steps write to it as well).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFile {
    path: PathBuf,
}

impl JobFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JobFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append `text`, creating the file when the job has not.
    pub fn append(&self, text: &str) -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        file.write_all(text.as_bytes())
    }
}

/// Everything an Actions session writes to.
#[derive(Clone)]
pub struct JobWriters {
    /// Workflow commands: masks, the stop switch, groups, annotations.
    pub commands: CommandStream,
    /// `$GITHUB_OUTPUT`, when the job has one.
    pub step_outputs: Option<JobFile>,
    /// `$GITHUB_STEP_SUMMARY`, when the job has one.
    pub step_summary: Option<JobFile>,
}

impl JobWriters {
    /// What a job gives a step: standard error and the files its environment names.
    pub fn of_job(environment: &ActionsEnvironment) -> Self {
        JobWriters {
            commands: CommandStream::stderr(),
            step_outputs: environment.output_file.clone().map(JobFile::new),
            step_summary: environment.summary_file.clone().map(JobFile::new),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_files_are_appended_to() {
        let folder = tempfile::tempdir().expect("a temporary folder");
        let file = JobFile::new(folder.path().join("output"));
        file.append("a=1\n").expect("created");
        file.append("b=2\n").expect("appended");
        assert_eq!(
            std::fs::read_to_string(file.path()).expect("written"),
            "a=1\nb=2\n"
        );
        let missing = JobFile::new(folder.path().join("no/such/folder/output"));
        assert!(missing.append("x").is_err());
    }
}
