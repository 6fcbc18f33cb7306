//! ECR access: registry credentials from GetAuthorizationToken, kept in memory until shortly
//! before they expire, and the repository a push needs (created when missing, if asked to).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecr::operation::describe_repositories::DescribeRepositoriesError;
use aws_sdk_ecr::types::ImageTagMutability;
use base64::Engine as _;
use chrono::{DateTime, Utc};

use super::RegistryCredentials;
use crate::aws_error::{AwsFailure, AwsFailureKind};
use crate::secret::Secret;

/// Where "now" comes from; tests pass a clock they can move.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Credentials are fetched again this long before they expire, so that a push that starts
/// with them does not see them expire midway.
pub const REFRESH_BEFORE_EXPIRY: chrono::Duration = chrono::Duration::minutes(15);

/// ECR tokens last 12 hours; if ECR ever names no expiry, assume much less.
const ASSUMED_LIFETIME: chrono::Duration = chrono::Duration::hours(1);

/// Registry credentials for ECR, from GetAuthorizationToken, cached in memory.
///
/// ECR's token opens every registry the caller's AWS identity may use (its own account's
/// and any other that grants it access), so one `EcrAuth` serves them all. `credentials()`
/// returns the cached token while it is valid for more than [`REFRESH_BEFORE_EXPIRY`] and
/// fetches a new one otherwise; concurrent callers share one fetch.
pub struct EcrAuth {
    client: aws_sdk_ecr::Client,
    cache: TokenCache,
    token_requests: AtomicU64,
}

impl EcrAuth {
    pub fn new(client: aws_sdk_ecr::Client) -> Self {
        EcrAuth {
            client,
            cache: TokenCache::new(Arc::new(Utc::now), REFRESH_BEFORE_EXPIRY),
            token_requests: AtomicU64::new(0),
        }
    }

    /// Reads the time from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.cache.clock = clock;
        self
    }

    /// Registry credentials, from the cache while they are fresh, else from
    /// GetAuthorizationToken.
    pub async fn credentials(&self) -> Result<RegistryCredentials, EcrError> {
        self.cache.get_or_refresh(|| self.fetch()).await
    }

    /// Forgets the cached credentials, e.g. after a registry refused them.
    pub async fn invalidate(&self) {
        self.cache.clear().await;
    }

    /// How many GetAuthorizationToken calls this `EcrAuth` made.
    pub fn token_requests(&self) -> u64 {
        self.token_requests.load(Ordering::Relaxed)
    }

    async fn fetch(&self) -> Result<RegistryCredentials, EcrError> {
        self.token_requests.fetch_add(1, Ordering::Relaxed);
        let output = self
            .client
            .get_authorization_token()
            .send()
            .await
            .map_err(|error| {
                from_sdk("get a registry token", "ecr:GetAuthorizationToken", error)
            })?;
        let data = output
            .authorization_data()
            .first()
            .ok_or(EcrError::MalformedToken {
                reason: "the answer holds no authorization data",
            })?;
        let now = (self.cache.clock)();
        let expires_at = data
            .expires_at()
            .and_then(|at| DateTime::<Utc>::from_timestamp(at.secs(), at.subsec_nanos()))
            .unwrap_or(now + ASSUMED_LIFETIME);
        credentials_from_token(
            data.authorization_token().unwrap_or_default(),
            data.proxy_endpoint().unwrap_or_default(),
            expires_at,
        )
    }
}

/// Decodes ECR's `base64(user:password)` token into credentials for `proxy_endpoint`
/// (`https://123456789012.dkr.ecr.eu-west-2.amazonaws.com`; stored without the scheme).
pub(crate) fn credentials_from_token(
    token: &str,
    proxy_endpoint: &str,
    expires_at: DateTime<Utc>,
) -> Result<RegistryCredentials, EcrError> {
    let malformed = |reason| EcrError::MalformedToken { reason };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .map_err(|_| malformed("the token is not base64"))?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed("the token is not text"))?;
    let (username, password) = decoded
        .split_once(':')
        .ok_or(malformed("the token is not `user:password`"))?;
    if username.is_empty() || password.is_empty() {
        return Err(malformed("the token has an empty user or password"));
    }
    let server = proxy_endpoint
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    Ok(RegistryCredentials {
        server,
        username: username.to_string(),
        password: Secret::new(password),
        expires_at: Some(expires_at),
    })
}

/// Credentials kept until shortly before they expire.
pub(crate) struct TokenCache {
    cached: tokio::sync::Mutex<Option<RegistryCredentials>>,
    clock: Clock,
    refresh_before_expiry: chrono::Duration,
}

impl TokenCache {
    pub(crate) fn new(clock: Clock, refresh_before_expiry: chrono::Duration) -> Self {
        TokenCache {
            cached: tokio::sync::Mutex::new(None),
            clock,
            refresh_before_expiry,
        }
    }

    /// The cached credentials if still fresh, else the result of `fetch` (cached when it
    /// succeeds). The lock is held across the fetch so that concurrent callers make one call.
    pub(crate) async fn get_or_refresh<F, Fut, E>(&self, fetch: F) -> Result<RegistryCredentials, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<RegistryCredentials, E>>,
    {
        let mut cached = self.cached.lock().await;
        let now = (self.clock)();
        if let Some(credentials) = cached.as_ref()
            && is_fresh(credentials, now, self.refresh_before_expiry)
        {
            return Ok(credentials.clone());
        }
        let fresh = fetch().await?;
        *cached = Some(fresh.clone());
        Ok(fresh)
    }

    pub(crate) async fn clear(&self) {
        *self.cached.lock().await = None;
    }
}

/// Whether credentials can still be used at `now`: no expiry, or an expiry more than
/// `margin` away.
pub(crate) fn is_fresh(
    credentials: &RegistryCredentials,
    now: DateTime<Utc>,
    margin: chrono::Duration,
) -> bool {
    credentials
        .expires_at
        .is_none_or(|expires_at| now + margin < expires_at)
}

/// Whether ECR may overwrite a tag with another image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TagMutability {
    /// A tag can be moved to a new image (ECR's default).
    #[default]
    Mutable,
    /// A tag, once pushed, always names the same image.
    Immutable,
}

impl TagMutability {
    fn to_ecr(self) -> ImageTagMutability {
        match self {
            TagMutability::Mutable => ImageTagMutability::Mutable,
            TagMutability::Immutable => ImageTagMutability::Immutable,
        }
    }

    fn from_ecr(value: &ImageTagMutability) -> Option<Self> {
        match value {
            ImageTagMutability::Mutable | ImageTagMutability::MutableWithExclusion => {
                Some(TagMutability::Mutable)
            }
            ImageTagMutability::Immutable | ImageTagMutability::ImmutableWithExclusion => {
                Some(TagMutability::Immutable)
            }
            _ => None,
        }
    }
}

/// What [`ensure_repository`] does about a missing repository.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepositoryOptions {
    /// Another account's registry (12-digit id) instead of the caller's own.
    pub registry_id: Option<String>,
    /// Create the repository when it does not exist (opt-in).
    pub create_if_missing: bool,
    /// Tag mutability of a repository created here (an existing one is left as it is).
    pub tag_mutability: TagMutability,
}

/// An ECR repository a push can go to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcrRepository {
    pub name: String,
    /// `123456789012.dkr.ecr.eu-west-2.amazonaws.com/name`.
    pub uri: String,
    pub registry_id: String,
    /// `None` when ECR reports a setting this version does not know.
    pub tag_mutability: Option<TagMutability>,
    /// Whether this call created it.
    pub created: bool,
}

/// Makes sure the repository `name` (the path after the registry host, e.g. `envelope/api`)
/// exists: describes it, and creates it when missing if `options.create_if_missing`.
/// ECR, unlike a plain registry, never creates a repository on push.
pub async fn ensure_repository(
    client: &aws_sdk_ecr::Client,
    name: &str,
    options: &RepositoryOptions,
) -> Result<EcrRepository, EcrError> {
    if let Some(existing) = describe_repository(client, name, options).await? {
        return Ok(existing);
    }
    if !options.create_if_missing {
        return Err(EcrError::RepositoryMissing {
            name: name.to_string(),
            registry_id: options.registry_id.clone(),
        });
    }
    let created = client
        .create_repository()
        .repository_name(name)
        .set_registry_id(options.registry_id.clone())
        .image_tag_mutability(options.tag_mutability.to_ecr())
        .send()
        .await;
    match created {
        Ok(output) => {
            let repository = output.repository().ok_or_else(|| EcrError::Service {
                operation: "create a repository",
                code: "EmptyAnswer".to_string(),
                message: format!("CreateRepository for `{name}` returned no repository"),
            })?;
            Ok(repository_from(repository, name, true))
        }
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_repository_already_exists_exception()) =>
        {
            // Another run created it between our describe and create.
            describe_repository(client, name, options)
                .await?
                .ok_or(EcrError::RepositoryMissing {
                    name: name.to_string(),
                    registry_id: options.registry_id.clone(),
                })
        }
        Err(error) => Err(from_sdk(
            "create a repository",
            "ecr:CreateRepository",
            error,
        )),
    }
}

async fn describe_repository(
    client: &aws_sdk_ecr::Client,
    name: &str,
    options: &RepositoryOptions,
) -> Result<Option<EcrRepository>, EcrError> {
    let described = client
        .describe_repositories()
        .repository_names(name)
        .set_registry_id(options.registry_id.clone())
        .send()
        .await;
    match described {
        Ok(output) => Ok(output
            .repositories()
            .iter()
            .find(|r| r.repository_name() == Some(name))
            .map(|r| repository_from(r, name, false))),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(DescribeRepositoriesError::is_repository_not_found_exception) =>
        {
            Ok(None)
        }
        Err(error) => Err(from_sdk(
            "look up a repository",
            "ecr:DescribeRepositories",
            error,
        )),
    }
}

fn repository_from(
    repository: &aws_sdk_ecr::types::Repository,
    name: &str,
    created: bool,
) -> EcrRepository {
    EcrRepository {
        name: repository.repository_name().unwrap_or(name).to_string(),
        uri: repository.repository_uri().unwrap_or_default().to_string(),
        registry_id: repository.registry_id().unwrap_or_default().to_string(),
        tag_mutability: repository
            .image_tag_mutability()
            .and_then(TagMutability::from_ecr),
        created,
    }
}

/// The account and region of an ECR registry host
/// (`123456789012.dkr.ecr.eu-west-2.amazonaws.com`), or `None` for any other host.
pub fn parse_ecr_host(host: &str) -> Option<EcrHost> {
    let host = host.split(':').next()?;
    let mut parts = host.split('.');
    let account_id = parts.next()?;
    let dkr = parts.next()?;
    let ecr = parts.next()?;
    let region = parts.next()?;
    let rest: Vec<&str> = parts.collect();
    let valid = account_id.len() == 12
        && account_id.bytes().all(|b| b.is_ascii_digit())
        && dkr == "dkr"
        && (ecr == "ecr" || ecr == "ecr-fips")
        && !region.is_empty()
        && (rest == ["amazonaws", "com"] || rest == ["amazonaws", "com", "cn"]);
    valid.then(|| EcrHost {
        account_id: account_id.to_string(),
        region: region.to_string(),
    })
}

/// An ECR registry host's account and region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcrHost {
    pub account_id: String,
    pub region: String,
}

/// A failed ECR call, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum EcrError {
    #[error(
        "cannot reach ECR to {operation}: {detail}\n  hint: check the network and AWS_REGION \
         (and AWS_ENDPOINT_URL for an emulator or a VPC endpoint)"
    )]
    Unreachable {
        operation: &'static str,
        detail: String,
    },

    #[error(
        "AWS refused to {operation} ({code}): {message}\n  hint: check the AWS credentials and \
         that they allow {permission}"
    )]
    AccessDenied {
        operation: &'static str,
        permission: &'static str,
        code: String,
        message: String,
    },

    #[error(
        "the ECR repository `{name}` does not exist{}\n  hint: create it (`aws ecr \
         create-repository --repository-name {name}`), or let the push create it when missing",
        registry_id.as_deref().map(|id| format!(" in registry {id}")).unwrap_or_default()
    )]
    RepositoryMissing {
        name: String,
        registry_id: Option<String>,
    },

    /// Missing, expired or refused credentials: one line that says what to do.
    #[error("cannot {operation} ({permission}): {detail}")]
    Credentials {
        operation: &'static str,
        permission: &'static str,
        detail: String,
    },

    #[error("ECR returned an authorization token that cannot be used: {reason}")]
    MalformedToken { reason: &'static str },

    #[error("ECR could not {operation} ({code}): {message}")]
    Service {
        operation: &'static str,
        code: String,
        message: String,
    },
}

impl EcrError {
    /// Whether the failure lies in the environment (network, credentials, AWS state) rather
    /// than in the pipeline: maps to [`crate::exit_codes::ENVIRONMENT`].
    pub fn is_environment(&self) -> bool {
        match self {
            EcrError::Unreachable { .. }
            | EcrError::AccessDenied { .. }
            | EcrError::Credentials { .. }
            | EcrError::RepositoryMissing { .. }
            | EcrError::MalformedToken { .. } => true,
            EcrError::Service { code, .. } => code != "InvalidParameterException",
        }
    }
}

fn from_sdk<E, R>(
    operation: &'static str,
    permission: &'static str,
    error: SdkError<E, R>,
) -> EcrError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let read = AwsFailure::during(&error, &crate::timeouts::call_name(permission));
    match read.kind {
        _ if read.is_credentials() => EcrError::Credentials {
            operation,
            permission,
            detail: read.to_string(),
        },
        AwsFailureKind::AccessDenied => EcrError::AccessDenied {
            operation,
            permission,
            code: read.code.clone().unwrap_or_default(),
            message: error.message().unwrap_or_default().to_string(),
        },
        AwsFailureKind::Unreachable => EcrError::Unreachable {
            operation,
            detail: read.to_string(),
        },
        _ => EcrError::Service {
            operation,
            code: read
                .code
                .clone()
                .unwrap_or_else(|| "RequestFailed".to_string()),
            message: match &error {
                SdkError::ServiceError(_) => error.message().unwrap_or_default().to_string(),
                _ => read.to_string(),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn credentials(password: &str, expires_at: DateTime<Utc>) -> RegistryCredentials {
        RegistryCredentials {
            server: "123456789012.dkr.ecr.eu-west-2.amazonaws.com".to_string(),
            username: "AWS".to_string(),
            password: Secret::new(password),
            expires_at: Some(expires_at),
        }
    }

    #[test]
    fn tokens_decode_into_credentials() {
        let token = base64::engine::general_purpose::STANDARD.encode("AWS:eyJwYXlsb2FkIjoi");
        let expires_at = at("2026-11-26T20:00:00Z");
        let parsed = credentials_from_token(
            &token,
            "https://123456789012.dkr.ecr.eu-west-2.amazonaws.com",
            expires_at,
        )
        .unwrap();
        assert_eq!(
            parsed.server,
            "123456789012.dkr.ecr.eu-west-2.amazonaws.com"
        );
        assert_eq!(parsed.username, "AWS");
        assert_eq!(parsed.password.expose(), "eyJwYXlsb2FkIjoi");
        assert_eq!(parsed.expires_at, Some(expires_at));
        assert!(!format!("{parsed:?}").contains("eyJwYXlsb2FkIjoi"));
    }

    #[test]
    fn malformed_tokens_are_refused_without_showing_them() {
        let engine = base64::engine::general_purpose::STANDARD;
        for token in [
            "not base64 !!".to_string(),
            engine.encode("no-colon-here"),
            engine.encode("AWS:"),
            engine.encode(":password"),
        ] {
            let error = credentials_from_token(&token, "https://x", Utc::now()).unwrap_err();
            assert!(matches!(error, EcrError::MalformedToken { .. }), "{token}");
            assert!(!error.to_string().contains(&token));
        }
    }

    #[test]
    fn freshness_keeps_a_margin_before_expiry() {
        let expires_at = at("2026-11-26T20:00:00Z");
        let creds = credentials("p", expires_at);
        let margin = chrono::Duration::minutes(15);
        let cases = [
            ("2026-11-26T08:00:00Z", true),
            ("2026-11-26T19:44:59Z", true),
            ("2026-11-26T19:45:00Z", false),
            ("2026-11-26T20:00:00Z", false),
            ("2026-11-27T08:00:00Z", false),
        ];
        for (now, fresh) in cases {
            assert_eq!(is_fresh(&creds, at(now), margin), fresh, "{now}");
        }
        let static_credentials = RegistryCredentials {
            expires_at: None,
            ..creds
        };
        assert!(is_fresh(
            &static_credentials,
            at("2099-01-01T00:00:00Z"),
            margin
        ));
    }

    #[tokio::test]
    async fn the_cache_refreshes_only_when_the_token_is_about_to_expire() {
        let now = Arc::new(Mutex::new(at("2026-11-26T08:00:00Z")));
        let clock: Clock = {
            let now = now.clone();
            Arc::new(move || *now.lock().unwrap())
        };
        let cache = TokenCache::new(clock, REFRESH_BEFORE_EXPIRY);
        let fetches = AtomicUsize::new(0);
        let (fetches_ref, now_ref) = (&fetches, &now);
        // Each fetch hands out a token that lasts 12 hours from the (injected) current time.
        let fetch = move || async move {
            let (fetches, now) = (fetches_ref, now_ref);
            let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
            let issued = *now.lock().unwrap();
            Ok::<_, EcrError>(credentials(
                &format!("token-{n}"),
                issued + chrono::Duration::hours(12),
            ))
        };

        let first = cache.get_or_refresh(fetch).await.unwrap();
        assert_eq!(first.password.expose(), "token-1");

        // An hour later the token is cached.
        *now.lock().unwrap() = at("2026-11-26T09:00:00Z");
        let again = cache.get_or_refresh(fetch).await.unwrap();
        assert_eq!(again.password.expose(), "token-1");
        assert_eq!(fetches.load(Ordering::SeqCst), 1);

        // Ten minutes before expiry it is refreshed.
        *now.lock().unwrap() = at("2026-11-26T19:50:00Z");
        let refreshed = cache.get_or_refresh(fetch).await.unwrap();
        assert_eq!(refreshed.password.expose(), "token-2");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);

        // After expiry of the second token, again.
        *now.lock().unwrap() = at("2026-11-27T09:00:00Z");
        let expired = cache.get_or_refresh(fetch).await.unwrap();
        assert_eq!(expired.password.expose(), "token-3");

        // A cleared cache fetches at once.
        cache.clear().await;
        let cleared = cache.get_or_refresh(fetch).await.unwrap();
        assert_eq!(cleared.password.expose(), "token-4");
    }

    #[tokio::test]
    async fn a_failed_refresh_is_not_cached() {
        let cache = TokenCache::new(Arc::new(Utc::now), REFRESH_BEFORE_EXPIRY);
        let failed = cache
            .get_or_refresh(|| async {
                Err::<RegistryCredentials, _>(EcrError::MalformedToken { reason: "test" })
            })
            .await;
        assert!(failed.is_err());
        let ok = cache
            .get_or_refresh(|| async {
                Ok::<_, EcrError>(credentials(
                    "later",
                    Utc::now() + chrono::Duration::hours(12),
                ))
            })
            .await
            .unwrap();
        assert_eq!(ok.password.expose(), "later");
    }

    #[test]
    fn ecr_hosts_are_recognised() {
        let cases = [
            (
                "123456789012.dkr.ecr.eu-west-2.amazonaws.com",
                Some(("123456789012", "eu-west-2")),
            ),
            (
                "000000000000.dkr.ecr.us-east-1.amazonaws.com:443",
                Some(("000000000000", "us-east-1")),
            ),
            (
                "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
                Some(("123456789012", "cn-north-1")),
            ),
            ("127.0.0.1:4566", None),
            ("12345.dkr.ecr.eu-west-2.amazonaws.com", None),
            ("public.ecr.aws", None),
        ];
        for (host, expected) in cases {
            let parsed = parse_ecr_host(host);
            assert_eq!(
                parsed
                    .as_ref()
                    .map(|h| (h.account_id.as_str(), h.region.as_str())),
                expected,
                "{host}"
            );
        }
    }
}
