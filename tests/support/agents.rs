//! `envelope-agent` as separate processes for drills: the fake GitHub (the agent's
//! `examples/fake_github`, the one allowed fake) as a process releases are published on, agents
//! started from a configuration with their JSON log in a file, and reading those logs back.
//! Every process is a [`KillOnDrop`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::env::{TestEnv, runner_binary};
use crate::support::http::{get, request};
use crate::support::process::KillOnDrop;

/// A binary cargo built next to `envelope-runner` (`examples/NAME` for an example).
fn built(relative: &str) -> PathBuf {
    let binary = runner_binary()
        .parent()
        .expect("the runner binary is in a folder")
        .join(relative);
    assert!(
        binary.is_file(),
        "{} is missing: `cargo build --workspace --all-targets` builds it",
        binary.display()
    );
    binary
}

/// The fake GitHub as a process serving `acme/app-000` … (one old release each).
pub struct FakeGithubProcess {
    pub url: String,
    _process: KillOnDrop,
}

impl FakeGithubProcess {
    pub async fn start(repositories: usize) -> FakeGithubProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let process = KillOnDrop::new(
            Command::new(built("examples/fake_github"))
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--repositories", &repositories.to_string()])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let github = FakeGithubProcess {
            url: format!("http://127.0.0.1:{port}"),
            _process: process,
        };
        for _ in 0..100 {
            if github.requests().await.is_some() {
                return github;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the fake GitHub did not answer on {}", github.url);
    }

    /// Requests for release lists answered so far.
    pub async fn requests(&self) -> Option<u64> {
        let (status, body) = get(&format!("{}/_stats", self.url)).await.ok()?;
        let stats: Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
        stats["requests"].as_u64()
    }

    /// Publishes release `tag` of `repository` now: its id and when it was published.
    pub async fn publish(&self, repository: &str, tag: &str) -> (u64, DateTime<Utc>) {
        let (status, body) = request(
            "POST",
            &format!("{}/_publish/{repository}/{tag}", self.url),
            &[],
            String::new(),
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        let published = answer["published_at"].as_str().unwrap();
        (
            answer["id"].as_u64().unwrap(),
            DateTime::parse_from_rfc3339(published).unwrap().into(),
        )
    }
}

/// An `envelope-agent` process writing its JSON log to `log`.
pub struct AgentProcess {
    pub id: String,
    pub log: PathBuf,
    process: Option<KillOnDrop>,
}

impl AgentProcess {
    /// Starts `envelope-agent --config CONFIG --log-format json` with the test environment's
    /// variables and `extra` ones.
    pub fn start(
        env: &TestEnv,
        id: &str,
        config: &Path,
        log: PathBuf,
        extra: &[(&str, &str)],
    ) -> AgentProcess {
        let stderr = std::fs::File::create(&log).unwrap();
        let process = Command::new(built("envelope-agent"))
            .envs(env.vars())
            .envs(extra.iter().copied())
            .env("ENVELOPE_LOG", "info")
            .args(["--config", &config.display().to_string()])
            .args(["--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        AgentProcess {
            id: id.to_owned(),
            log,
            process: Some(KillOnDrop::new(process)),
        }
    }

    /// SIGKILL, as when the machine dies: no shutdown, no lease let go.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill().unwrap();
            process.wait().unwrap();
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.process
            .as_mut()
            .is_some_and(|process| process.try_wait().unwrap().is_none())
    }

    /// Its log lines: time, run (if any) and message.
    pub fn lines(&self) -> Vec<LogLine> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter_map(|line| {
                Some(LogLine {
                    at: DateTime::parse_from_rfc3339(line["timestamp"].as_str()?)
                        .ok()?
                        .into(),
                    run: line["fields"]["run"].as_str().map(str::to_owned),
                    message: line["fields"]["message"].as_str()?.to_owned(),
                })
            })
            .collect()
    }
}

/// One line of an agent's JSON log.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub at: DateTime<Utc>,
    pub run: Option<String>,
    pub message: String,
}

/// The first time each run's log says `message` (a stage's `[deploy] started`), across
/// `agents`.
pub fn first_by_run(agents: &[AgentProcess], message: &str) -> BTreeMap<String, DateTime<Utc>> {
    let mut first: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    for agent in agents {
        for line in agent.lines() {
            if let Some(run) = line.run.filter(|_| line.message.starts_with(message)) {
                let at = first.entry(run).or_insert(line.at);
                *at = (*at).min(line.at);
            }
        }
    }
    first
}
