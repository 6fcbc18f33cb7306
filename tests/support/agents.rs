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
use crate::git_fixture::WorkRepo;
use crate::support::ecs::images;
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

/// A bare git repository (and its `file://` URL) whose one commit builds on the ECS app's
/// image, tagged `tags`.
pub fn app_repository(env: &TestEnv, tags: &[&str]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let repo = WorkRepo::init(dir.path().join("work")).unwrap();
    repo.commit_file(
        "Dockerfile",
        &format!("FROM {}\n", images(env).v1),
        "drill app",
    )
    .unwrap();
    for tag in tags {
        repo.tag(tag).unwrap();
    }
    let bare = dir.path().join("app.git");
    repo.publish(&bare).unwrap();
    (dir, format!("file://{}", bare.display()))
}

/// Pipeline `drill-N`'s file: it builds from `url`, pushes tags of its own
/// (`<cluster>-drill-N-<release tag>`: images of two pipelines, or of two tests, pushed under
/// one tag at the same time would race, and the runner fails the push that lost) and deploys
/// service `drill-dN` of `cluster`; with `verify`, the deploy then checks that URL every second
/// for two minutes.
pub fn drill_pipeline(
    env: &TestEnv,
    url: &str,
    cluster: &str,
    index: usize,
    verify: Option<&str>,
) -> String {
    let image = images(env).repository.split_once('/').unwrap().1.to_owned();
    let verify = verify
        .map(|url| {
            format!("\n      verify:\n        - url: {url}\n          timeout: 2m\n          interval: 1s")
        })
        .unwrap_or_default();
    format!(
        r#"source:
  repository: {url}
  tags: ["v*"]
aws:
  region: {region}
  registry: {registry}
stages:
  - build:
      image: {image}
      tags: ["{cluster}-drill-{index}-${{release.tag}}"]
  - deploy:
      cluster: {cluster}
      services: [drill-d{index}]
      timeout: 2m{verify}
"#,
        region = env.region(),
        registry = env.registry(),
    )
}

/// What the agents of a drill share: their folder, the project, the store, the fake GitHub
/// and a short lease.
pub struct AgentConfig<'a> {
    pub dir: &'a Path,
    pub project: &'a Path,
    pub store: &'a str,
    pub github: &'a str,
    pub lease_ttl_seconds: u64,
}

impl AgentConfig<'_> {
    /// Writes agent `id`'s configuration (watching each `(repository, pipeline)`, up to three
    /// runs at once, polling every second) to `DIR/ID.yaml`, and returns its path.
    pub fn write(&self, id: &str, watched: &[(String, String)]) -> PathBuf {
        let mut text = format!(
            "project: {}\nstore: {}\nagent_id: {id}\nlisten: 127.0.0.1:0\ncache_dir: {}\nconcurrency: 3\napproval_poll: 1s\nlease_ttl: {}s\nshutdown_grace: 2s\ngithub:\n  api_url: {}\n  poll_interval: 1s\n  max_requests_per_hour: 1000000\nrepositories:\n",
            self.project.display(),
            self.store,
            self.dir.join(format!("cache-{id}")).display(),
            self.lease_ttl_seconds,
            self.github,
        );
        for (repository, pipeline) in watched {
            text.push_str(&format!(
                "  - {{ repository: {repository}, pipeline: {pipeline} }}\n"
            ));
        }
        let path = self.dir.join(format!("{id}.yaml"));
        std::fs::write(&path, text).unwrap();
        path
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

    /// SIGTERM, as a service manager stops it, and waits for it to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut process = self.process.take().expect("the agent runs");
        let status = Command::new("kill")
            .args(["-TERM", &process.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
        process.wait().unwrap()
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
