//! A recorded-shape fake of GitHub's releases API (the one fake this project allows): release
//! JSON as GitHub sends it, weak `ETag`s with `If-None-Match` answered by `304`, and the
//! `x-ratelimit-*` headers, with a rate limit that 304s do not spend, as on GitHub. It records
//! every request it sees. Used by the integration tests and, through `examples/fake_github.rs`,
//! by `scripts/bench-agent` and the agents drill (which publish releases with
//! `POST /_publish/{owner}/{repo}/{tag}`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// GitHub's hourly limit for a token.
pub const LIMIT: u64 = 5000;

/// One request the fake answered.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub repository: String,
    pub if_none_match: Option<String>,
    pub authorization: Option<String>,
    pub status: u16,
}

/// A release to publish.
#[derive(Debug, Clone)]
pub struct ReleaseSpec {
    pub tag: String,
    pub draft: bool,
    pub prerelease: bool,
    pub published_at: DateTime<Utc>,
    /// The GitHub login of who published it.
    pub author: String,
}

impl ReleaseSpec {
    pub fn published(tag: &str) -> Self {
        ReleaseSpec {
            tag: tag.to_owned(),
            draft: false,
            prerelease: false,
            published_at: Utc::now(),
            author: "release-bot".to_owned(),
        }
    }
}

#[derive(Default)]
struct FakeState {
    /// Releases by repository, oldest first.
    repositories: BTreeMap<String, Vec<Value>>,
    requests: Vec<Seen>,
    next_id: u64,
    remaining: u64,
    reset: i64,
}

/// The fake server; stops when dropped.
pub struct FakeGithub {
    pub url: String,
    pub address: SocketAddr,
    state: Arc<Mutex<FakeState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGithub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeGithub {
    pub async fn start() -> FakeGithub {
        FakeGithub::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(address: SocketAddr) -> FakeGithub {
        let state = Arc::new(Mutex::new(FakeState {
            next_id: 1_000,
            remaining: LIMIT,
            reset: Utc::now().timestamp() + 3600,
            ..FakeState::default()
        }));
        let router = Router::new()
            .route("/repos/{owner}/{repo}/releases", get(list_releases))
            .route("/_stats", get(stats))
            .route("/_publish/{owner}/{repo}/{tag}", post(publish_release))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(address).await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        FakeGithub {
            url: format!("http://{address}"),
            address,
            state,
            task,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut FakeState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    /// A repository with no releases yet.
    pub fn add_repository(&self, repository: &str) {
        self.with(|state| {
            state.repositories.entry(repository.to_owned()).or_default();
        });
    }

    /// Publish a release; returns its id.
    pub fn publish(&self, repository: &str, spec: ReleaseSpec) -> u64 {
        self.with(|state| {
            state.next_id += 1;
            let id = state.next_id;
            let release = release_json(repository, id, &spec);
            state
                .repositories
                .entry(repository.to_owned())
                .or_default()
                .push(release);
            id
        })
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.with(|state| state.requests.clone())
    }

    pub fn request_count(&self) -> usize {
        self.with(|state| state.requests.len())
    }

    /// Allow `remaining` more full answers until `reset` (Unix seconds); 304s are free.
    pub fn set_rate_limit(&self, remaining: u64, reset: i64) {
        self.with(|state| {
            state.remaining = remaining;
            state.reset = reset;
        });
    }
}

/// A release as GitHub's REST API returns it.
fn release_json(repository: &str, id: u64, spec: &ReleaseSpec) -> Value {
    let at = spec.published_at.to_rfc3339_opts(SecondsFormat::Secs, true);
    let api = format!("https://api.github.com/repos/{repository}/releases/{id}");
    json!({
        "url": api,
        "assets_url": format!("{api}/assets"),
        "upload_url": format!("https://uploads.github.com/repos/{repository}/releases/{id}/assets{{?name,label}}"),
        "html_url": format!("https://github.com/{repository}/releases/tag/{}", spec.tag),
        "id": id,
        "author": {
            "login": spec.author, "id": 41898282, "node_id": "MDQ6VXNlcjQxODk4Mjgy",
            "type": "User", "site_admin": false,
            "url": format!("https://api.github.com/users/{}", spec.author),
            "html_url": format!("https://github.com/{}", spec.author)
        },
        "node_id": format!("RE_kwDO{id:08}"),
        "tag_name": spec.tag,
        "target_commitish": "main",
        "name": spec.tag,
        "draft": spec.draft,
        "immutable": false,
        "prerelease": spec.prerelease,
        "created_at": at,
        "updated_at": at,
        "published_at": if spec.draft { Value::Null } else { Value::String(at.clone()) },
        "assets": [],
        "tarball_url": format!("https://api.github.com/repos/{repository}/tarball/{}", spec.tag),
        "zipball_url": format!("https://api.github.com/repos/{repository}/zipball/{}", spec.tag),
        "body": format!("Release {}", spec.tag)
    })
}

/// `POST /_publish/{owner}/{repo}/{tag}`: publish a release now (for a fake run as a separate
/// process); answers `{"id": …, "published_at": …}`.
async fn publish_release(
    State(state): State<Arc<Mutex<FakeState>>>,
    Path((owner, repo, tag)): Path<(String, String, String)>,
) -> Response {
    let repository = format!("{owner}/{repo}");
    let spec = ReleaseSpec::published(&tag);
    let mut state = state.lock().unwrap();
    state.next_id += 1;
    let id = state.next_id;
    let release = release_json(&repository, id, &spec);
    state
        .repositories
        .entry(repository)
        .or_default()
        .push(release);
    axum::Json(json!({
        "id": id,
        "published_at": spec.published_at.to_rfc3339_opts(SecondsFormat::Millis, true),
    }))
    .into_response()
}

/// `GET /_stats`: requests answered so far, by status (for `scripts/bench-agent`).
async fn stats(State(state): State<Arc<Mutex<FakeState>>>) -> Response {
    let state = state.lock().unwrap();
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    for seen in &state.requests {
        *by_status.entry(seen.status.to_string()).or_default() += 1;
    }
    axum::Json(json!({
        "requests": state.requests.len(),
        "by_status": by_status,
        "repositories": state.repositories.len(),
    }))
    .into_response()
}

fn rate_headers(headers: &mut HeaderMap, remaining: u64, reset: i64) {
    let mut set = |name: &'static str, value: String| {
        headers.insert(name, HeaderValue::from_str(&value).unwrap());
    };
    set("x-ratelimit-limit", LIMIT.to_string());
    set("x-ratelimit-remaining", remaining.to_string());
    set(
        "x-ratelimit-used",
        (LIMIT - remaining.min(LIMIT)).to_string(),
    );
    set("x-ratelimit-reset", reset.to_string());
    set("x-ratelimit-resource", "core".to_owned());
}

async fn list_releases(
    State(state): State<Arc<Mutex<FakeState>>>,
    Path((owner, repo)): Path<(String, String)>,
    request_headers: HeaderMap,
) -> Response {
    let repository = format!("{owner}/{repo}");
    let if_none_match = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let authorization = request_headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut state = state.lock().unwrap();
    let now = Utc::now().timestamp();
    if state.remaining == 0 && now >= state.reset {
        state.remaining = LIMIT;
        state.reset = now + 3600;
    }
    let (status, mut response) = if state.remaining == 0 {
        (
            StatusCode::FORBIDDEN,
            axum::Json(json!({
                "message": "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for help, please include the request ID.",
                "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
                "status": "403"
            }))
            .into_response(),
        )
    } else if let Some(releases) = state.repositories.get(&repository) {
        let newest_first: Vec<&Value> = releases.iter().rev().collect();
        let body = serde_json::to_vec(&newest_first).unwrap();
        let etag = format!("W/\"{}\"", hex::encode(Sha256::digest(&body)));
        let mut response = if if_none_match.as_deref() == Some(etag.as_str()) {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            state.remaining -= 1;
            (
                [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                body,
            )
                .into_response()
        };
        response
            .headers_mut()
            .insert(header::ETAG, HeaderValue::from_str(&etag).unwrap());
        (response.status(), response)
    } else {
        state.remaining = state.remaining.saturating_sub(1);
        (
            StatusCode::NOT_FOUND,
            (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest/releases/releases#list-releases", "status": "404"})),
            )
                .into_response(),
        )
    };
    let (remaining, reset) = (state.remaining, state.reset);
    rate_headers(response.headers_mut(), remaining, reset);
    state.requests.push(Seen {
        at: Instant::now(),
        repository,
        if_none_match,
        authorization,
        status: status.as_u16(),
    });
    *response.status_mut() = status;
    response
}
