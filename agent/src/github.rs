//! The GitHub REST calls the agent makes: list a repository's releases with a conditional
//! request, so that an unchanged list costs a `304 Not Modified` and no rate limit.
//!
//! octocrab carries the requests (base URL, token, timeouts, TLS); the raw `_get_with_headers`
//! is used because the typed API hides the status, the `ETag` and the rate limit headers.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use envelope_runner::error_chain;
use envelope_runner::secret::Secret;
use http_body_util::{BodyExt, Limited};
use octocrab::Octocrab;
use octocrab::service::middleware::retry::RetryConfig;

use crate::rate_limit::RateLimit;
use crate::release::Release;

/// Releases fetched per poll; more than this many published between two polls of one
/// repository would leave the oldest unseen (the webhook catches those).
pub const RELEASES_PER_PAGE: u32 = 20;
/// A releases page larger than this is not read.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// A client for one GitHub API base URL and token.
#[derive(Clone)]
pub struct GithubClient {
    octocrab: Octocrab,
    api_url: String,
}

/// What one conditional listing returned.
#[derive(Debug)]
pub struct Polled {
    pub status: u16,
    pub rate: RateLimit,
    pub outcome: Result<Listing, GithubError>,
}

/// A successful listing.
#[derive(Debug, Clone, PartialEq)]
pub enum Listing {
    /// The `ETag` still matches: nothing changed since the last listing.
    NotModified,
    /// The releases, newest first, and the `ETag` to send next time.
    Changed {
        etag: Option<String>,
        releases: Vec<Release>,
    },
}

/// Why GitHub could not be asked or its answer not used. Messages say what to check.
#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    #[error("cannot set up the GitHub client for {api_url}: {detail}")]
    Client { api_url: String, detail: String },
    #[error("cannot reach GitHub at {api_url} to list releases of {repository}: {detail}")]
    Transport {
        api_url: String,
        repository: String,
        detail: String,
    },
    #[error("GitHub answered {status} listing releases of {repository}: {message}; {hint}")]
    Status {
        repository: String,
        status: u16,
        message: String,
        hint: &'static str,
    },
    #[error("GitHub's list of releases of {repository} could not be read: {detail}")]
    Body { repository: String, detail: String },
}

impl GithubClient {
    /// A client for `api_url` (https://api.github.com, a GitHub Enterprise `/api/v3`, or a test
    /// server), authenticated with `token` when given.
    pub fn new(api_url: &str, token: Option<&Secret>) -> Result<Self, GithubError> {
        let client_error = |detail: String| GithubError::Client {
            api_url: api_url.to_owned(),
            detail,
        };
        let mut builder = Octocrab::builder()
            .base_uri(api_url)
            .map_err(|error| client_error(error.to_string()))?
            // A failed poll is retried by the next poll; rate limits are handled by the poller,
            // which keeps polling other repositories' schedules instead of sleeping in a retry.
            .add_retry_config(RetryConfig::None)
            .set_connect_timeout(Some(Duration::from_secs(10)))
            .set_read_timeout(Some(Duration::from_secs(30)));
        if let Some(token) = token {
            builder = builder.personal_token(token.expose().to_owned());
        }
        let octocrab = builder
            .build()
            .map_err(|error| client_error(error.to_string()))?;
        Ok(GithubClient {
            octocrab,
            api_url: api_url.to_owned(),
        })
    }

    /// `GET /repos/{repository}/releases`, conditional on `etag` when one is known.
    pub async fn list_releases(&self, repository: &str, etag: Option<&str>) -> Polled {
        let path = format!("/repos/{repository}/releases?per_page={RELEASES_PER_PAGE}");
        // octocrab sends its User-Agent and X-GitHub-Api-Version itself.
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.github+json"),
        );
        if let Some(etag) = etag
            && let Ok(value) = HeaderValue::from_str(etag)
        {
            headers.insert(header::IF_NONE_MATCH, value);
        }
        let response = match self.octocrab._get_with_headers(path, Some(headers)).await {
            Ok(response) => response,
            Err(error) => {
                return Polled {
                    status: 0,
                    rate: RateLimit::default(),
                    outcome: Err(GithubError::Transport {
                        api_url: self.api_url.clone(),
                        repository: repository.to_owned(),
                        detail: error_chain(&error),
                    }),
                };
            }
        };
        let status = response.status();
        let rate = RateLimit::from_headers(response.headers());
        let new_etag = response
            .headers()
            .get(header::ETAG)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        if status == StatusCode::NOT_MODIFIED {
            return Polled {
                status: status.as_u16(),
                rate,
                outcome: Ok(Listing::NotModified),
            };
        }
        let body = match Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(error) => {
                return Polled {
                    status: status.as_u16(),
                    rate,
                    outcome: Err(GithubError::Body {
                        repository: repository.to_owned(),
                        detail: error.to_string(),
                    }),
                };
            }
        };
        let outcome = if status.is_success() {
            serde_json::from_slice::<Vec<Release>>(&body)
                .map(|releases| Listing::Changed {
                    etag: new_etag,
                    releases,
                })
                .map_err(|error| GithubError::Body {
                    repository: repository.to_owned(),
                    detail: error.to_string(),
                })
        } else {
            Err(GithubError::Status {
                repository: repository.to_owned(),
                status: status.as_u16(),
                message: github_message(&body),
                hint: hint_for(status.as_u16()),
            })
        };
        Polled {
            status: status.as_u16(),
            rate,
            outcome,
        }
    }
}

/// The `message` of a GitHub error body, or the start of the body.
fn github_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|json| json.get("message")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                "no message".to_owned()
            } else {
                text.chars().take(200).collect()
            }
        })
}

fn hint_for(status: u16) -> &'static str {
    match status {
        401 => "the token was refused: check the variable named by github.token_env",
        403 | 429 => {
            "the token may lack access, or a rate limit applies; polling pauses as GitHub asks"
        }
        404 => {
            "the repository does not exist or the token cannot read it: check the name and the token's repository access"
        }
        500..=599 => "GitHub had a problem; the next poll tries again",
        _ => "the next poll tries again",
    }
}
