//! A release whose tag holds shell syntax (a valid git ref) is refused: polled or delivered by
//! webhook, it starts no run, runs nothing, and the agent says why in one escaped log line.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::fake_github::{FakeGithub, ReleaseSpec};
use crate::support::*;
use crate::webhook::{deliver, release_event, sign};

/// Everything the agent logs, to read back.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> Logs {
        let logs = Logs::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init()
            .expect("this test process logs to its own buffer");
        logs
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_tag_with_shell_syntax_starts_no_run_and_is_logged() {
    let logs = Logs::capture();
    let project = Project::new();
    let github = FakeGithub::start().await;
    github.add_repository(REPOSITORY);
    let marker = std::env::temp_dir().join(format!(
        "pwned-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    ));
    let tag = format!("v1$(touch${{IFS}}{})", marker.display());
    // A valid git ref: the tag exists in the repository the run would check out.
    project.tag(&tag);
    let store = TestStore::Sqlite(project.sqlite_url());
    let agent = start_agent(settings(&project, &github, "agent-1"), &store).await;

    let release = github.publish(REPOSITORY, ReleaseSpec::published(&tag));
    let shown = format!("release `{tag}` of {REPOSITORY} cannot start pipeline `{PIPELINE}`");
    let line = wait_for(
        "the agent to log the refused release",
        Duration::from_secs(20),
        || async {
            logs.text()
                .lines()
                .find(|line| line.contains(&shown))
                .map(str::to_owned)
        },
    )
    .await;
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains(&format!(
            "the release tag `{tag}` (${{release.tag}}) cannot be used: character 3 is `$`"
        )),
        "{line}"
    );
    assert!(line.contains("Nothing was run"), "{line}");

    // Delivered by webhook, the same tag is answered 422 with the reason.
    let body = release_event(REPOSITORY, 9_999, &tag, "published");
    let answer = deliver(&agent, "release", Some(&sign(WEBHOOK_SECRET, &body)), &body).await;
    assert_eq!(answer.status, 422, "{}", answer.body);
    assert!(answer.body.contains("cannot be used"), "{}", answer.body);

    // Later polls change nothing: no run, nothing ran.
    let polled = polls(&agent);
    wait_for("three more polls", Duration::from_secs(20), || async {
        (polls(&agent) >= polled + 3).then_some(())
    })
    .await;
    assert!(
        runs_for_release(agent.store().as_ref(), release)
            .await
            .is_empty(),
        "a run was started"
    );
    assert!(
        agent
            .store()
            .list_runs(None, 10, None)
            .await
            .unwrap()
            .is_empty(),
        "a run was started"
    );
    assert!(!marker.exists(), "the release tag ran as a command");
    agent.shutdown().await;
}
