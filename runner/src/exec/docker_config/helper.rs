//! Running a Docker credential helper: `docker-credential-<name> get`, the registry on stdin,
//! `{"ServerURL", "Username", "Secret"}` as JSON on stdout, as the Docker CLI runs it. A helper
//! that does not know the registry says `credentials not found` and exits 1.

use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::secret::Secret;

/// How long a helper may take (one that asks a cloud for a token may be slow, never this slow).
const HELPER_TIMEOUT: Duration = Duration::from_secs(60);

/// What helpers print when they hold nothing for the registry (docker-credential-helpers'
/// `ErrCredentialsNotFound`).
const NOT_FOUND: &str = "credentials not found";

/// Longest piece of a helper's own message quoted in an error.
const MESSAGE_LIMIT: usize = 300;

#[derive(Debug)]
pub(super) enum HelperError {
    /// `docker-credential-<name>` is not on PATH.
    Missing,
    /// It ran and failed, or printed something else than credentials; why, in words.
    Failed(String),
}

#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Asks `docker-credential-<name>` for `server`'s user and secret; `None` when it has none.
pub(super) async fn get(name: &str, server: &str) -> Result<Option<(String, Secret)>, HelperError> {
    let program = format!("docker-credential-{name}");
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => HelperError::Missing,
            _ => HelperError::Failed(format!("it could not be started: {error}")),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading its input is judged by its exit status below.
        let _ = stdin.write_all(server.as_bytes()).await;
    }
    let output = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            HelperError::Failed(format!(
                "it gave no answer within {}s",
                HELPER_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|error| HelperError::Failed(format!("it could not be run: {error}")))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let message = [stdout.trim(), stderr.trim()]
            .into_iter()
            .filter(|text| !text.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        if message.to_ascii_lowercase().contains(NOT_FOUND) {
            return Ok(None);
        }
        return Err(HelperError::Failed(format!(
            "it exited with {} ({})",
            output.status,
            shorten(&message)
        )));
    }
    // The answer holds the secret: never quote it.
    let answer: Answer = serde_json::from_str(stdout.trim()).map_err(|error| {
        HelperError::Failed(format!(
            "its answer is not the JSON credentials a helper prints ({})",
            json_problem(&error)
        ))
    })?;
    if answer.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some((answer.username, Secret::new(answer.secret))))
}

/// What is wrong with an answer, without echoing any of it (it may hold the secret).
fn json_problem(error: &serde_json::Error) -> &'static str {
    match error.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "unexpected fields",
        serde_json::error::Category::Eof => "cut short",
    }
}

fn shorten(message: &str) -> String {
    if message.is_empty() {
        return "it printed nothing".to_owned();
    }
    match message.char_indices().nth(MESSAGE_LIMIT) {
        Some((end, _)) => format!("{}…", &message[..end]),
        None => message.to_owned(),
    }
}
