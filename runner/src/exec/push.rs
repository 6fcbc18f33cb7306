//! push stage: pushes the image the build stage left in the local Docker daemon to a registry
//! under every tag, records the digest the registry gave it, and checks with the registry
//! itself (oci-client) that every tag resolves to that digest.
//!
//! Layers the registry already has are skipped by the daemon, so a re-push of an unchanged
//! image uploads no layer bytes; [`PushOutput`] counts what was uploaded and skipped. A
//! registry endpoint override replaces the registry host of the repository when talking to the
//! registry (an emulator, a mirror, a VPC endpoint), while the digest reference handed to
//! later stages keeps the repository as the user wrote it.

mod copy;
pub mod ecr;
mod error;
mod reference;
mod retry;
mod stream;
mod verify;

use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{PushImageOptionsBuilder, TagImageOptionsBuilder};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;

pub use copy::{CopyError, CopyOutput, CopyRequest, copy};
pub use error::PushError;
pub(crate) use reference::check_tag;
pub use reference::{ReferenceError, RegistryEndpoint, Repository};
pub use stream::PushProgress;

use error::{FailureKind, classify, redact};

use stream::{DaemonMessage, LayerSizes, LayerTally, interpret};

use crate::exec::docker_config::IDENTITY_TOKEN_USER;
use crate::secret::Secret;

/// Credentials for one registry: a user and a password or token (ECR: user `AWS` and the
/// token from GetAuthorizationToken).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryCredentials {
    /// The registry host they are for, `host[:port]` without a scheme.
    pub server: String,
    pub username: String,
    pub password: Secret,
    /// When they stop working (`None`: they do not expire).
    pub expires_at: Option<DateTime<Utc>>,
}

/// What to push, where, and with which credentials.
#[derive(Clone, Debug)]
pub struct PushRequest {
    /// The local image: an id (`sha256:...`) or a reference the daemon knows.
    pub local_image: String,
    /// `registry-host/path` as users write it, without a tag.
    pub repository: String,
    /// Every tag to push; at least one.
    pub tags: Vec<String>,
    pub credentials: Option<RegistryCredentials>,
    /// `host:port` (or `http://` / `https://host:port`) contacted instead of the repository's
    /// registry host. Plain HTTP is only ever used for a host on this machine.
    pub endpoint_override: Option<String>,
}

/// What a push did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushOutput {
    /// The repository as the request wrote it.
    pub repository: String,
    /// `sha256:...`, the digest every tag resolves to.
    pub digest: String,
    /// `repository@sha256:...`: what every later stage uses, never a tag.
    pub image_ref: String,
    pub tags: Vec<String>,
    /// Layers uploaded (in any attempt, under any tag).
    pub layers_uploaded: usize,
    /// Layers the registry already had (skipped or mounted from another repository).
    pub layers_skipped: usize,
    /// Layer bytes the daemon read to upload, as it reports them (uncompressed tar bytes);
    /// 0 when every layer was already in the registry.
    pub bytes_uploaded: u64,
}

/// The daemon is considered stuck when its push stream says nothing for this long (it reports
/// progress at least every 1% or 512 KB of a layer).
const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Pushes `request.local_image` to `request.repository` under every tag through the Docker
/// daemon, then checks against the registry that each tag resolves to the pushed digest.
///
/// The daemon pushes by name, so the image is first tagged `<registry or override>/<path>:<tag>`
/// in the local daemon; those tags stay (removing the last tag of an untagged build would
/// delete the image).
///
/// Each tag is retried with exponential backoff and jitter when the failure is one that
/// another attempt can cure (a connection cut off midway, a 5xx, throttling); refused
/// credentials, an immutable tag or an unreachable registry fail at once.
pub async fn push(
    docker: &Docker,
    request: &PushRequest,
    progress: &(dyn Fn(PushProgress) + Send + Sync),
) -> Result<PushOutput, PushError> {
    let plan = Plan::new(request)?;
    let image_id = local_image_id(docker, &plan).await?;
    for tag in &plan.tags {
        let options = TagImageOptionsBuilder::new()
            .repo(&plan.target_repository)
            .tag(tag)
            .build();
        docker
            .tag_image(&image_id, Some(options))
            .await
            .map_err(|error| PushError::Docker {
                action: format!("tagging the image as {}:{tag}", plan.target_repository),
                detail: plan.redact(&error.to_string()),
            })?;
    }

    let layer_sizes = layer_sizes(docker, &image_id).await;
    let mut totals = Totals::default();
    let mut digest: Option<String> = None;
    for (index, tag) in plan.tags.iter().enumerate() {
        let first_tag = index == 0;
        let pushed = push_tag(
            docker,
            &plan,
            tag,
            first_tag,
            &layer_sizes,
            &mut totals,
            progress,
        )
        .await?;
        match &digest {
            Some(first) if *first != pushed => {
                return Err(PushError::DigestMismatch {
                    reference: format!("{}:{tag}", plan.repository),
                    expected: first.clone(),
                    actual: pushed,
                });
            }
            Some(_) => {}
            None => digest = Some(pushed.clone()),
        }
        progress(PushProgress::TagPushed {
            tag: tag.clone(),
            digest: pushed,
        });
    }
    let digest = digest.expect("a plan has at least one tag");

    verify_tags(&plan, &digest, progress).await?;

    Ok(PushOutput {
        repository: plan.repository.as_written().to_string(),
        image_ref: format!("{}@{digest}", plan.repository.as_written()),
        digest,
        tags: plan.tags.clone(),
        layers_uploaded: totals.uploaded,
        layers_skipped: totals.skipped,
        bytes_uploaded: totals.bytes,
    })
}

/// A validated request: where the daemon pushes and where the registry is asked.
struct Plan<'a> {
    request: &'a PushRequest,
    repository: Repository,
    endpoint: RegistryEndpoint,
    /// `endpoint/path`: the name the image is tagged and pushed under.
    target_repository: String,
    /// The repository path as the registry API names it.
    registry_path: String,
    tags: Vec<String>,
}

impl<'a> Plan<'a> {
    fn new(request: &'a PushRequest) -> Result<Self, PushError> {
        let repository = Repository::parse(&request.repository)?;
        let mut tags: Vec<String> = Vec::new();
        for tag in &request.tags {
            let tag = tag.trim();
            reference::check_tag(tag)?;
            if !tags.iter().any(|t| t == tag) {
                tags.push(tag.to_string());
            }
        }
        if tags.is_empty() {
            return Err(PushError::NoTags {
                repository: repository.as_written().to_string(),
            });
        }
        let endpoint =
            RegistryEndpoint::resolve(request.endpoint_override.as_deref(), repository.registry())?;
        let target_repository = if request.endpoint_override.is_some() {
            format!("{}/{}", endpoint.host(), repository.path())
        } else {
            repository.as_written().to_string()
        };
        // Docker Hub's single-name repositories live under `library/`.
        let registry_path = if repository.registry() == "docker.io"
            && request.endpoint_override.is_none()
            && !repository.path().contains('/')
        {
            format!("library/{}", repository.path())
        } else {
            repository.path().to_string()
        };
        Ok(Plan {
            request,
            repository,
            endpoint,
            target_repository,
            registry_path,
            tags,
        })
    }

    fn credentials(&self) -> Option<&RegistryCredentials> {
        self.request.credentials.as_ref()
    }

    /// What the daemon is given: a user and password, or an identity token (the Docker CLI's
    /// `identitytoken`, given with the user [`IDENTITY_TOKEN_USER`]).
    fn docker_credentials(&self) -> Option<DockerCredentials> {
        self.credentials().map(|credentials| {
            let serveraddress = Some(self.endpoint.host().to_string());
            if credentials.username == IDENTITY_TOKEN_USER {
                return DockerCredentials {
                    identitytoken: Some(credentials.password.expose().to_string()),
                    serveraddress,
                    ..Default::default()
                };
            }
            DockerCredentials {
                username: Some(credentials.username.clone()),
                password: Some(credentials.password.expose().to_string()),
                serveraddress,
                ..Default::default()
            }
        })
    }

    /// `text` with the password (and its base64 forms) replaced by `[REDACTED]`.
    fn redact(&self, text: &str) -> String {
        match self.credentials() {
            Some(credentials) => redact(
                text,
                Some(&credentials.username),
                &[credentials.password.expose()],
            ),
            None => text.to_string(),
        }
    }

    fn who(&self) -> String {
        match self.credentials() {
            Some(credentials) => format!("the credentials of user `{}`", credentials.username),
            None => "an anonymous push (no credentials were given)".to_string(),
        }
    }

    /// The user-facing error for a registry failure of `tag` after `attempts` attempts.
    fn error(&self, kind: FailureKind, detail: &str, tag: &str, attempts: u32) -> PushError {
        let detail = self.redact(detail.trim());
        let registry = self.endpoint.host().to_string();
        let repository = self.repository.as_written().to_string();
        let target = format!("{}:{tag}", self.target_repository);
        match kind {
            FailureKind::Unreachable => PushError::RegistryUnreachable {
                registry,
                repository,
                detail,
            },
            FailureKind::AuthRefused => PushError::AuthRefused {
                registry,
                repository,
                who: self.who(),
                detail,
            },
            FailureKind::TagImmutable => PushError::TagImmutable {
                repository,
                tag: tag.to_string(),
                detail,
            },
            FailureKind::RepositoryMissing => PushError::RepositoryMissing {
                repository,
                registry,
                name: self.repository.path().to_string(),
                detail,
            },
            FailureKind::LocalImageMissing => PushError::LocalImageMissing {
                image: self.request.local_image.clone(),
                repository,
            },
            FailureKind::Interrupted => PushError::Interrupted {
                target,
                attempts,
                detail,
            },
            FailureKind::ServerFailure => PushError::RegistryFailed {
                registry,
                target,
                attempts,
                detail,
            },
            FailureKind::Other => PushError::Rejected {
                registry,
                target,
                detail,
            },
        }
    }
}

async fn local_image_id(docker: &Docker, plan: &Plan<'_>) -> Result<String, PushError> {
    let image = &plan.request.local_image;
    match docker.inspect_image(image).await {
        Ok(inspect) => Ok(inspect.id.unwrap_or_else(|| image.clone())),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Err(PushError::LocalImageMissing {
            image: image.clone(),
            repository: plan.repository.as_written().to_string(),
        }),
        Err(error) => Err(PushError::Docker {
            action: format!("looking up the local image `{image}`"),
            detail: error.to_string(),
        }),
    }
}

/// How many layers of the image have each size, from its history; empty if the daemon cannot
/// say (the byte count then treats layers of the same size as one).
async fn layer_sizes(docker: &Docker, image_id: &str) -> LayerSizes {
    let mut sizes = LayerSizes::new();
    if let Ok(history) = docker.image_history(image_id).await {
        for entry in history {
            if let Ok(size) = u64::try_from(entry.size) {
                *sizes.entry(size).or_default() += 1;
            }
        }
    }
    sizes
}

/// Layer counts over the whole push.
#[derive(Default)]
struct Totals {
    uploaded: usize,
    skipped: usize,
    bytes: u64,
}

/// Pushes one tag, retrying transient failures; returns the digest the daemon reports.
async fn push_tag(
    docker: &Docker,
    plan: &Plan<'_>,
    tag: &str,
    first_tag: bool,
    layer_sizes: &LayerSizes,
    totals: &mut Totals,
    progress: &(dyn Fn(PushProgress) + Send + Sync),
) -> Result<String, PushError> {
    let target = format!("{}:{tag}", plan.target_repository);
    let mut uploaded_before = 0;
    let mut attempt = 1;
    loop {
        progress(PushProgress::TagStarted {
            target: target.clone(),
            attempt,
        });
        let mut tally = LayerTally::default();
        let outcome = push_once(docker, plan, tag, &mut tally, progress).await;
        totals.uploaded += tally.uploaded;
        totals.bytes += tally.bytes_uploaded(layer_sizes);
        match outcome {
            Ok(digest) => {
                if first_tag {
                    // Layers an earlier attempt uploaded show up as skipped in this one.
                    totals.skipped += tally.skipped.saturating_sub(uploaded_before);
                }
                return Ok(digest);
            }
            Err(AttemptError::Registry(kind, detail))
                if kind.is_retryable() && retry::PUSH.allows_another(attempt) =>
            {
                let delay = retry::PUSH.delay(attempt, &mut rand::rng());
                tracing::debug!(%target, attempt, ?delay, "push attempt failed; retrying");
                progress(PushProgress::Retrying {
                    target: target.clone(),
                    failed_attempt: attempt,
                    delay,
                    reason: plan.redact(&detail),
                });
                uploaded_before += tally.uploaded;
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(AttemptError::Registry(kind, detail)) => {
                return Err(plan.error(kind, &detail, tag, attempt));
            }
            Err(AttemptError::Daemon(detail)) => {
                return Err(PushError::Docker {
                    action: format!("pushing {target}"),
                    detail: plan.redact(&detail),
                });
            }
        }
    }
}

enum AttemptError {
    /// The registry (or the path to it) failed; the daemon told us how.
    Registry(FailureKind, String),
    /// The daemon itself could not be asked.
    Daemon(String),
}

/// One `POST /images/{name}/push` for one tag, read to the end.
async fn push_once(
    docker: &Docker,
    plan: &Plan<'_>,
    tag: &str,
    tally: &mut LayerTally,
    progress: &(dyn Fn(PushProgress) + Send + Sync),
) -> Result<String, AttemptError> {
    let options = PushImageOptionsBuilder::new().tag(tag).build();
    let mut stream = super::docker_stream::whole(docker.push_image(
        &plan.target_repository,
        Some(options),
        plan.docker_credentials(),
    ));
    let mut digest = None;
    let mut started = false;
    loop {
        let next = match tokio::time::timeout(STREAM_IDLE_TIMEOUT, stream.next()).await {
            Ok(next) => next,
            Err(_) => {
                return Err(AttemptError::Registry(
                    FailureKind::Interrupted,
                    format!(
                        "the Docker daemon reported no progress for {} seconds",
                        STREAM_IDLE_TIMEOUT.as_secs()
                    ),
                ));
            }
        };
        let Some(item) = next else { break };
        match item {
            Ok(info) => {
                started = true;
                let message = interpret(&info);
                tally.record(&message);
                match message {
                    DaemonMessage::Uploading { layer_size, sent } => {
                        progress(PushProgress::LayerUploading { layer_size, sent })
                    }
                    DaemonMessage::Uploaded => progress(PushProgress::LayerUploaded),
                    DaemonMessage::Skipped { mounted_from } => {
                        progress(PushProgress::LayerSkipped { mounted_from })
                    }
                    DaemonMessage::Retrying { message } => {
                        progress(PushProgress::LayerRetrying { message })
                    }
                    DaemonMessage::Digest {
                        tag: pushed_tag,
                        digest: pushed,
                    } => {
                        if pushed_tag == tag {
                            digest = Some(pushed);
                        }
                    }
                    DaemonMessage::Other => {}
                }
            }
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                return Err(AttemptError::Registry(classify(&error), error));
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code,
                message,
            }) => {
                return Err(match classify(&message) {
                    FailureKind::Other => {
                        AttemptError::Daemon(format!("HTTP {status_code}: {message}"))
                    }
                    kind => AttemptError::Registry(kind, message),
                });
            }
            Err(error) if started => {
                return Err(AttemptError::Registry(
                    FailureKind::Interrupted,
                    format!("the connection to the Docker daemon dropped: {error}"),
                ));
            }
            Err(error) => return Err(AttemptError::Daemon(error.to_string())),
        }
    }
    digest.ok_or_else(|| {
        AttemptError::Registry(
            FailureKind::Interrupted,
            "the push ended before the registry confirmed the image (no digest was reported)"
                .to_string(),
        )
    })
}

/// Asks the registry, not the daemon, which digest each tag resolves to.
async fn verify_tags(
    plan: &Plan<'_>,
    digest: &str,
    progress: &(dyn Fn(PushProgress) + Send + Sync),
) -> Result<(), PushError> {
    let client = verify::registry_client(&plan.endpoint);
    let auth = verify::registry_auth(plan.credentials());
    for tag in &plan.tags {
        let mut attempt = 1;
        loop {
            let found =
                verify::fetch_tag_digest(&client, &plan.endpoint, &plan.registry_path, tag, &auth)
                    .await;
            match found {
                Ok(found) if found == digest => {
                    progress(PushProgress::Verified {
                        tag: tag.clone(),
                        digest: found,
                    });
                    break;
                }
                Ok(found) => {
                    return Err(PushError::DigestMismatch {
                        reference: format!("{}:{tag}", plan.repository),
                        expected: digest.to_string(),
                        actual: found,
                    });
                }
                Err((kind, _)) if kind.is_retryable() && retry::PUSH.allows_another(attempt) => {
                    // Not inside the awaited expression: the thread-local RNG is not Send.
                    let delay = retry::PUSH.delay(attempt, &mut rand::rng());
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err((
                    kind @ (FailureKind::Unreachable
                    | FailureKind::AuthRefused
                    | FailureKind::RepositoryMissing),
                    detail,
                )) => return Err(plan.error(kind, &detail, tag, attempt)),
                Err((_, detail)) => {
                    return Err(PushError::VerifyFailed {
                        reference: format!("{}:{tag}", plan.repository),
                        registry: plan.endpoint.host().to_string(),
                        detail: plan.redact(&detail),
                    });
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(repository: &str, tags: &[&str], endpoint: Option<&str>) -> PushRequest {
        PushRequest {
            local_image: "sha256:0123".to_string(),
            repository: repository.to_string(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            credentials: None,
            endpoint_override: endpoint.map(str::to_string),
        }
    }

    #[test]
    fn an_override_replaces_the_registry_host_for_the_daemon_and_the_registry() {
        let request = request(
            "000000000000.dkr.ecr.eu-west-2.amazonaws.com/envelope/api",
            &["v1", "sha-abc", "v1"],
            Some("127.0.0.1:4566"),
        );
        let plan = Plan::new(&request).unwrap();
        assert_eq!(plan.target_repository, "127.0.0.1:4566/envelope/api");
        assert_eq!(plan.registry_path, "envelope/api");
        assert_eq!(plan.endpoint.host(), "127.0.0.1:4566");
        assert!(plan.endpoint.allows_plain_http());
        assert_eq!(plan.tags, ["v1", "sha-abc"]);
    }

    #[test]
    fn without_an_override_the_repository_host_is_used() {
        let local = request("127.0.0.1:5000/team/app", &["v1"], None);
        let plan = Plan::new(&local).unwrap();
        assert_eq!(plan.target_repository, "127.0.0.1:5000/team/app");
        assert_eq!(plan.endpoint.host(), "127.0.0.1:5000");
        assert!(plan.endpoint.allows_plain_http());

        let ecr = request(
            "123456789012.dkr.ecr.eu-west-2.amazonaws.com/api",
            &["v1"],
            None,
        );
        let plan = Plan::new(&ecr).unwrap();
        assert!(!plan.endpoint.allows_plain_http());
    }

    #[test]
    fn requests_without_tags_or_with_bad_tags_are_refused() {
        let no_tags = Plan::new(&request("127.0.0.1:5000/app", &[], None))
            .err()
            .unwrap();
        assert!(matches!(no_tags, PushError::NoTags { .. }));
        let bad_tag = Plan::new(&request("127.0.0.1:5000/app", &["a b"], None))
            .err()
            .unwrap();
        assert!(bad_tag.to_string().contains("`a b`"), "{bad_tag}");
        assert!(!bad_tag.is_environment());
    }

    #[test]
    fn errors_never_show_the_password() {
        let mut request = request("127.0.0.1:5001/app", &["v1"], None);
        request.credentials = Some(RegistryCredentials {
            server: "127.0.0.1:5001".to_string(),
            username: "AWS".to_string(),
            password: Secret::new("very-secret-token"),
            expires_at: None,
        });
        let plan = Plan::new(&request).unwrap();
        let error = plan.error(
            FailureKind::AuthRefused,
            "unauthorized: very-secret-token rejected",
            "v1",
            1,
        );
        let text = error.to_string();
        assert!(!text.contains("very-secret-token"), "{text}");
        assert!(text.contains("127.0.0.1:5001"), "{text}");
        assert!(text.contains("user `AWS`"), "{text}");
        assert!(error.is_environment());
        assert!(!format!("{request:?}").contains("very-secret-token"));
    }
}
