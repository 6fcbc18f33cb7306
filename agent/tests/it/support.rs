//! What the agent tests share: a project with a real git repository (served as file://) and a
//! pipeline, agent settings aimed at the fake GitHub, stores (SQLite, or a DynamoDB table in
//! the test environment's emulator), a small HTTP client with cookies, and waiting.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use envelope_agent::Agent;
use envelope_agent::config::{Credentials, Settings, WatchedRepository};
use envelope_runner::run::{RunId, RunStatus, TriggerKind};
use envelope_runner::secret::Secret;
use envelope_runner::store::{self, DynamoDbStore, RunSummary, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fake_github::FakeGithub;

/// The repository the tests watch on the fake GitHub.
pub const REPOSITORY: &str = "acme/app";
pub const PIPELINE: &str = "app";
/// GitHub's documented webhook example secret.
pub const WEBHOOK_SECRET: &str = "It's a Secret to Everybody";
pub const ALICE_TOKEN: &str = "alice-approver-token-0123456789abcdef";
pub const BOB_TOKEN: &str = "bob-approver-token-9876543210fedcba";
pub const METRICS_TOKEN: &str = "prometheus-scrape-token";

/// A project folder: `app/` is a git repository with tagged commits, `pipelines/app.yaml`
/// builds from it (as a file:// URL) and waits at an approval gate.
pub struct Project {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    repository: git2::Repository,
}

impl Project {
    pub fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let app = root.join("app");
        std::fs::create_dir_all(&app).unwrap();
        let repository = git2::Repository::init(&app).unwrap();
        std::fs::write(app.join("README.md"), "the app\n").unwrap();
        {
            let mut index = repository.index().unwrap();
            index.add_path(Path::new("README.md")).unwrap();
            index.write().unwrap();
            let tree = repository.find_tree(index.write_tree().unwrap()).unwrap();
            let signature = git2::Signature::now("Test", "test@example.com").unwrap();
            repository
                .commit(Some("HEAD"), &signature, &signature, "first", &tree, &[])
                .unwrap();
        }
        std::fs::create_dir_all(root.join("pipelines")).unwrap();
        std::fs::write(
            root.join("pipelines").join(format!("{PIPELINE}.yaml")),
            format!(
                "description: the test app\nsource:\n  repository: file://{}\n  tags: [\"v*\"]\nstages:\n  - approval:\n      timeout: 1h\n",
                app.display()
            ),
        )
        .unwrap();
        Project {
            _dir: dir,
            root,
            repository,
        }
    }

    /// Tag the current commit (a release's tag must exist for its run to check it out).
    pub fn tag(&self, name: &str) {
        let head = self.repository.head().unwrap().peel_to_commit().unwrap();
        self.repository
            .tag_lightweight(name, head.as_object(), false)
            .unwrap();
    }

    pub fn sqlite_url(&self) -> String {
        format!("sqlite:{}", self.root.join("state.db").display())
    }
}

/// Settings of an agent named `agent_id` watching [`REPOSITORY`] on `github`, polling every
/// 200 ms, on any free port.
pub fn settings(project: &Project, github: &FakeGithub, agent_id: &str) -> Settings {
    let mut settings = Settings::new(
        &project.root,
        vec![WatchedRepository {
            repository: REPOSITORY.into(),
            pipeline: PIPELINE.into(),
            environment: None,
            tags: None,
            include_prereleases: false,
            approvers: None,
        }],
    );
    settings.store = project.sqlite_url();
    settings.agent_id = Some(agent_id.into());
    settings.listen = "127.0.0.1:0".parse().unwrap();
    settings.github.api_url = github.url.clone();
    settings.github.poll_interval = Duration::from_millis(200);
    settings.github.max_requests_per_hour = 1_000_000;
    settings.approval_poll = Duration::from_millis(200);
    settings.shutdown_grace = Duration::from_secs(2);
    settings.cache_dir = Some(project.root.join("cache"));
    settings
}

pub fn credentials() -> Credentials {
    Credentials {
        github_token: Some(Secret::new("ghp_fake_token_for_tests")),
        webhook_secret: Some(Secret::new(WEBHOOK_SECRET)),
        approvers: vec![
            ("alice".into(), Secret::new(ALICE_TOKEN)),
            ("bob".into(), Secret::new(BOB_TOKEN)),
        ],
        metrics_token: Some(Secret::new(METRICS_TOKEN)),
    }
}

/// Where the runs of a test are kept.
pub enum TestStore {
    Sqlite(String),
    DynamoDb(DynamoTable),
}

impl TestStore {
    /// A new connection to the store (each agent gets its own, as separate processes would).
    pub async fn open(&self) -> Arc<dyn Store> {
        match self {
            TestStore::Sqlite(url) => store::open(url).await.unwrap(),
            TestStore::DynamoDb(table) => Arc::new(
                DynamoDbStore::open(table.client.clone(), &table.name)
                    .await
                    .unwrap(),
            ),
        }
    }

    pub async fn cleanup(self) {
        if let TestStore::DynamoDb(table) = self {
            let _ = table
                .client
                .delete_table()
                .table_name(&table.name)
                .send()
                .await;
        }
    }
}

/// A store table in the test environment's AWS emulator.
pub struct DynamoTable {
    pub name: String,
    client: aws_sdk_dynamodb::Client,
}

impl DynamoTable {
    /// A new table, or `None` (with a note) when the emulator does not answer and
    /// ENVELOPE_TEST_REQUIRE_DOCKER is unset. With it set, `scripts/test-env up` starts it.
    pub async fn create(test: &str) -> Option<DynamoTable> {
        let required = std::env::var_os("ENVELOPE_TEST_REQUIRE_DOCKER").is_some();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-env");
        if required {
            let up = Command::new(&script).arg("up").output().unwrap();
            assert!(
                up.status.success(),
                "scripts/test-env up failed:\n{}",
                String::from_utf8_lossy(&up.stderr)
            );
        }
        let output = Command::new(&script).arg("env").output().ok()?;
        let vars: BTreeMap<String, String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.trim().strip_prefix("export "))
            .filter_map(|assignment| assignment.split_once('='))
            .map(|(name, value)| (name.to_owned(), value.trim_matches('"').to_owned()))
            .collect();
        let var = |name: &str| vars.get(name).cloned().unwrap_or_default();
        let sdk_config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(var("AWS_REGION")))
            .endpoint_url(var("AWS_ENDPOINT_URL"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                var("AWS_ACCESS_KEY_ID"),
                var("AWS_SECRET_ACCESS_KEY"),
                None,
                None,
                "envelope-test-env",
            ))
            .load()
            .await;
        let client =
            aws_sdk_dynamodb::Client::from_conf(store::dynamodb_client_config(&sdk_config));
        let probe = tokio::time::timeout(
            Duration::from_secs(10),
            client.list_tables().limit(1).send(),
        )
        .await;
        if !matches!(probe, Ok(Ok(_))) {
            assert!(
                !required,
                "the AWS emulator does not answer although ENVELOPE_TEST_REQUIRE_DOCKER is set"
            );
            eprintln!(
                "skipping {test}: the AWS emulator does not answer (scripts/test-env up starts it)"
            );
            return None;
        }
        let name = format!(
            "agent-{test}-{}",
            RunId::new().0.chars().rev().take(8).collect::<String>()
        )
        .replace('_', "-");
        DynamoDbStore::create_table_if_missing(&client, &name)
            .await
            .unwrap();
        Some(DynamoTable { name, client })
    }
}

/// Log lines of the agents under test, when ENVELOPE_LOG says which (`ENVELOPE_LOG=info`).
pub fn init_logs() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("ENVELOPE_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

/// Start an agent on `store`, and wait for its first poll: releases published from then on are
/// news to it (those published before it first watched are history).
pub async fn start_agent(settings: Settings, store: &TestStore) -> Agent {
    init_logs();
    let agent = Agent::start_with_store(settings, credentials(), store.open().await)
        .await
        .unwrap();
    wait_for(
        "the agent's first poll",
        Duration::from_secs(20),
        || async { (polls(&agent) > 0).then_some(()) },
    )
    .await;
    agent
}

/// Polls the agent has made, from its metrics.
pub fn polls(agent: &Agent) -> u64 {
    agent
        .metrics()
        .render(&Default::default())
        .lines()
        .filter(|line| line.starts_with("envelope_agent_polls_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Wait until `check` returns `Some`, or fail after `limit` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs started for `release_id` of [`REPOSITORY`].
pub async fn runs_for_release(store: &dyn Store, release_id: u64) -> Vec<RunSummary> {
    let mut found = Vec::new();
    for summary in store.list_runs(None, 100, None).await.unwrap() {
        let record = store.get_run(&summary.id).await.unwrap().unwrap();
        if matches!(
            &record.trigger.kind,
            TriggerKind::Release { repository, release_id: id, .. }
                if repository == REPOSITORY && *id == release_id
        ) {
            found.push(summary);
        }
    }
    found
}

/// Wait until the run of `release_id` has `status`; returns it.
pub async fn wait_for_status(
    store: &dyn Store,
    release_id: u64,
    status: RunStatus,
    limit: Duration,
) -> RunSummary {
    wait_for(
        &format!("the run of release {release_id} to be {status:?}"),
        limit,
        || async {
            runs_for_release(store, release_id)
                .await
                .into_iter()
                .find(|run| run.status == status)
        },
    )
    .await
}

/// An HTTP response as the tests look at it.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The value of the hidden input `name` in the page.
    pub fn hidden_input(&self, name: &str) -> Option<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker)? + marker.len();
        let end = self.body[start..].find('"')?;
        Some(self.body[start..start + end].to_owned())
    }
}

/// One HTTP/1.1 request over a fresh connection.
pub async fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    http_from(None, address, method, path, headers, body).await
}

/// [`http`] from the local address `source` (another client: any of 127.0.0.0/8 on Linux).
pub async fn http_from(
    source: Option<std::net::IpAddr>,
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut stream = match source {
        None => tokio::net::TcpStream::connect(address).await.unwrap(),
        Some(source) => {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::new(source, 0)).unwrap();
            socket.connect(address).await.unwrap()
        }
    };
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a complete HTTP response");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    if headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked")
    }) {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = line_end + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
}

/// A browser-like client: keeps cookies between requests.
pub struct Browser {
    pub address: SocketAddr,
    source: Option<std::net::IpAddr>,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    pub fn new(address: SocketAddr) -> Self {
        Browser {
            address,
            source: None,
            cookies: BTreeMap::new(),
        }
    }

    /// A browser on another machine: its requests come from `source`.
    pub fn from(source: std::net::IpAddr, address: SocketAddr) -> Self {
        Browser {
            source: Some(source),
            ..Browser::new(address)
        }
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(String::as_str)
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep_cookies(&mut self, response: &HttpResponse) {
        for set in response.headers_named("set-cookie") {
            let pair = set.split(';').next().unwrap_or("");
            if let Some((name, value)) = pair.split_once('=') {
                if value.is_empty() || set.contains("Max-Age=0") {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_owned(), value.to_owned());
                }
            }
        }
    }

    pub async fn get(&mut self, path: &str) -> HttpResponse {
        let cookie = self.cookie_header();
        let response = http_from(
            self.source,
            self.address,
            "GET",
            path,
            &[("Cookie", &cookie)],
            b"",
        )
        .await;
        self.keep_cookies(&response);
        response
    }

    /// Post a form (`application/x-www-form-urlencoded`).
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> HttpResponse {
        let body = fields
            .iter()
            .map(|(name, value)| format!("{}={}", form_escape(name), form_escape(value)))
            .collect::<Vec<_>>()
            .join("&");
        let cookie = self.cookie_header();
        let response = http_from(
            self.source,
            self.address,
            "POST",
            path,
            &[
                ("Cookie", &cookie),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            body.as_bytes(),
        )
        .await;
        self.keep_cookies(&response);
        response
    }

    /// Sign in with `token`; returns the response to the form's post.
    pub async fn sign_in(&mut self, token: &str) -> HttpResponse {
        let form = self.get("/login").await;
        assert_eq!(form.status, 200, "{}", form.body);
        let csrf = form
            .hidden_input("csrf")
            .expect("the sign-in form has a CSRF token");
        self.post(
            "/login",
            &[("token", token), ("csrf", &csrf), ("next", "/")],
        )
        .await
    }
}

fn form_escape(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}
