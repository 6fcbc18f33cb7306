//! build stage: builds an image with the Docker daemon's own BuildKit, through bollard.
//!
//! # Which bollard path, and why
//!
//! bollard 0.21 offers two ways into the daemon's BuildKit, and on Debian's dockerd 20.10
//! (BuildKit 0.8) neither does everything a build here needs:
//!
//! - `Docker::build_image` with `BuilderVersion::BuilderBuildKit` (the `/build` endpoint, what
//!   `DOCKER_BUILDKIT=1 docker build` uses): progress, image id, `cachefrom`, inline cache,
//!   build args, labels, target, platform; but bollard serves that build's session itself,
//!   with registry auth only, so `RUN --mount=type=secret` fails.
//! - the gRPC driver (`grpc::driver::moby::Moby` + `Build::docker_build`): secrets, but no
//!   progress (the `Solve` result is dropped), the context buffered whole (and copied), and its
//!   `cachefrom` only fills `CacheOptions.imports`, which BuildKit 0.8 ignores for a frontend
//!   build: after `docker builder prune` nothing is reused. Its options cannot set the
//!   `cache-from` frontend attribute that the daemon's `/build` sets.
//!
//! So the build goes through `Docker::build_image`, like the Docker CLI, and the session is
//! ours ([`session`]): we open `/session` on the same daemon and serve, with bollard's
//! generated BuildKit services, the context and the Dockerfile (`remote=client-session`: the
//! daemon pulls them with fsutil's DiffCopy, as from the Docker CLI, and only the files it
//! lacks are read and sent), the secrets (from memory) and registry credentials. bollard's BuildKit branch
//! would open a second, competing session under the same id, so the request is built as a
//! classic one and a request modifier switches it to `version=2` (and adds the tags after the
//! first: bollard's options hold one). Progress arrives in the response as
//! `BuildInfoAux::BuildKit` status messages, the image id as `moby.image.id`.

mod context;
mod daemon;
mod dockerignore;
mod error;
mod failure;
mod options;
mod progress;
mod registry_auth;
mod session;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bollard::models::{BuildInfo, BuildInfoAux};
use futures_util::StreamExt;

use self::context::BuildContext;
use self::daemon::{ConnectError, DaemonEndpoint};
pub use self::error::BuildError;
use self::error::{classify_failure, context_error};
pub use self::failure::{buildspec_failure, exit_code, step_reason};
use self::options::{as_buildkit_request, build_options};
pub(crate) use self::progress::CACHE_IMPORT_STEP;
use self::progress::ProgressTracker;
pub use self::registry_auth::{CredentialLookup, LookupFuture};
use self::session::Session;
use crate::redact::Redactor;
use crate::secret::Secret;

/// How long the daemon gets to answer a ping before the build gives up on it.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// What to build and how.
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    pub context_dir: PathBuf,
    /// Relative to `context_dir`.
    pub dockerfile: PathBuf,
    /// The stage of a multi-stage Dockerfile to build; the last one when `None`.
    pub target: Option<String>,
    /// For example `linux/amd64`; the daemon's own platform when `None`.
    pub platform: Option<String>,
    pub build_args: BTreeMap<String, String>,
    /// Mounted with `RUN --mount=type=secret,id=...`; never stored in the image.
    pub secrets: Vec<BuildSecret>,
    pub labels: BTreeMap<String, String>,
    /// Full image references to tag the result with.
    pub tags: Vec<String>,
    /// Registry images whose inline cache the build may reuse.
    pub cache_from: Vec<String>,
    /// Credentials for pulling `cache_from` (and base images) from private registries.
    pub registry_auth: Vec<RegistryCredentials>,
    /// Asked for the credentials of any other registry the build pulls from (a private base
    /// image): the Docker configuration's, in a run.
    pub registry_auth_lookup: Option<CredentialLookup>,
    /// The files the client was connected with, when the daemon is reached over TLS (the
    /// session opens a connection of its own).
    pub daemon_tls: Option<crate::exec::docker_host::TlsFiles>,
    pub no_cache: bool,
    /// The build fails when the daemon reports nothing for this long (default
    /// [`crate::timeouts::BUILD_IDLE_TIMEOUT`]).
    pub idle_timeout: Option<Duration>,
}

/// A BuildKit secret, served to the build from memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSecret {
    pub id: String,
    pub value: Secret,
}

/// Registry credentials are the push stage's: an ECR token fetched for the push also pulls
/// `cache_from`. Only `server`, `username` and `password` matter here.
pub use super::push::RegistryCredentials;

/// A finished build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOutput {
    /// The image id (`sha256:` + the digest of its config).
    pub image_id: String,
    /// Every step BuildKit ran or reused, in the order they started.
    pub steps: Vec<BuildStep>,
}

/// One BuildKit step (a vertex): a Dockerfile instruction or internal work such as loading the
/// context or exporting the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildStep {
    /// As BuildKit names it: `[2/4] RUN make`, `[internal] load build context`.
    pub name: String,
    pub cached: bool,
    pub duration: Option<Duration>,
    pub error: Option<String>,
}

impl BuildStep {
    /// The Dockerfile instruction this step runs (`FROM`, `RUN`, `COPY`...), or `None` for
    /// BuildKit's own steps. Dockerfile steps are named `[N/M] INSTRUCTION ...` or
    /// `[stage N/M] INSTRUCTION ...`.
    pub fn instruction(&self) -> Option<&str> {
        let rest = self.name.strip_prefix('[')?;
        let (label, rest) = rest.split_once("] ")?;
        let counter = label.rsplit(' ').next()?;
        let (done, total) = counter.split_once('/')?;
        let numeric = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        if !numeric(done) || !numeric(total) {
            return None;
        }
        rest.split_whitespace().next()
    }
}

/// What a build reports while it runs. Every string has secret values replaced by `[REDACTED]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildProgress {
    /// A step appeared or changed (started, finished, found in the cache, failed).
    Step {
        name: String,
        cached: bool,
        started: bool,
        completed: bool,
        /// Set once the step completed.
        duration: Option<Duration>,
        error: Option<String>,
    },
    /// One line of a step's output.
    Log { step: String, line: String },
    /// Progress inside a step: `pulling sha256:...`, `writing image sha256:...`.
    Status {
        step: String,
        name: String,
        current: u64,
        total: u64,
        completed: bool,
    },
    /// A warning BuildKit raised about a step (newer daemons only).
    Warning { step: String, message: String },
}

/// The image a build makes, for messages: its first reference, or `the image` without tags.
fn image_of(request: &BuildRequest) -> String {
    request
        .tags
        .first()
        .cloned()
        .unwrap_or_else(|| "the image".to_owned())
}

/// Builds `request` on the daemon `docker` talks to, reporting progress as it goes.
pub async fn build(
    docker: &bollard::Docker,
    request: &BuildRequest,
    progress: &(dyn Fn(BuildProgress) + Send + Sync),
) -> Result<BuildOutput, BuildError> {
    let context = BuildContext::prepare(&request.context_dir, &request.dockerfile)
        .map_err(|error| context_error(request, error))?;
    failure::check_references(&request.tags)?;
    let dockerfile_path = request.context_dir.join(context.dockerfile());
    let dockerfile_name = context.dockerfile_name().to_owned();
    let context = Arc::new(context);

    let endpoint = DaemonEndpoint::of(docker, request.daemon_tls.as_ref())
        .map_err(|error| BuildError::Session(error.to_string()))?;
    match tokio::time::timeout(PING_TIMEOUT, docker.ping()).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            return Err(BuildError::DaemonUnreachable {
                endpoint: endpoint.to_string(),
                detail: error.to_string(),
            });
        }
        Err(_) => {
            return Err(BuildError::DaemonUnreachable {
                endpoint: endpoint.to_string(),
                detail: format!("no answer to a ping within {}s", PING_TIMEOUT.as_secs()),
            });
        }
    }

    let scrubber = Redactor::from_values(
        request
            .secrets
            .iter()
            .map(|secret| secret.value.expose())
            .chain(
                request
                    .registry_auth
                    .iter()
                    .map(|auth| auth.password.expose()),
            ),
    );
    let secrets: HashMap<String, Secret> = request
        .secrets
        .iter()
        .map(|secret| (secret.id.clone(), secret.value.clone()))
        .collect();
    let credentials: HashMap<String, (String, Secret)> = request
        .registry_auth
        .iter()
        .map(|auth| {
            (
                session::registry_host(&auth.server),
                (auth.username.clone(), auth.password.clone()),
            )
        })
        .collect();
    // Only shown by the daemon; kept to what an HTTP header can carry.
    let session_name: String = request
        .context_dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "envelope-runner".to_owned())
        .chars()
        .map(|ch| if ch.is_ascii_graphic() { ch } else { '-' })
        .collect();
    let shared_key = shared_key(&request.context_dir);
    let session = Session::open(
        &endpoint,
        &session_name,
        &shared_key,
        context,
        secrets,
        credentials,
        request.registry_auth_lookup.clone(),
    )
    .await
    .map_err(|error| match error {
        ConnectError::Io { endpoint, source } => BuildError::DaemonUnreachable {
            endpoint,
            detail: source.to_string(),
        },
        other => BuildError::Session(other.to_string()),
    })?;

    let options = build_options(request, &dockerfile_name, session.id());
    let extra_tags: Vec<String> = request.tags.iter().skip(1).cloned().collect();
    let client = docker
        .clone()
        .with_request_modifier(move |request| as_buildkit_request(request, &extra_tags));

    let mut tracker = ProgressTracker::new(progress, scrubber);
    let mut image_id = None;
    let mut failure = None;
    let idle = request
        .idle_timeout
        .unwrap_or(crate::timeouts::BUILD_IDLE_TIMEOUT);
    let mut stalled = false;
    {
        // The context travels through the session (`remote=client-session`), so the request
        // body is empty.
        let empty = bollard::body_full(bytes::Bytes::new());
        let mut stream =
            super::docker_stream::whole(client.build_image(options, None, Some(empty)));
        loop {
            let Ok(next) = tokio::time::timeout(idle, stream.next()).await else {
                stalled = true;
                break;
            };
            let Some(item) = next else { break };
            match item {
                Ok(BuildInfo {
                    aux: Some(BuildInfoAux::BuildKit(status)),
                    ..
                }) => tracker.apply(status),
                Ok(BuildInfo {
                    aux: Some(BuildInfoAux::Default(image)),
                    ..
                }) => image_id = image.id.or(image_id),
                Ok(_) => {}
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
    }
    let upload = session.upload_outcome();
    drop(session);
    if stalled {
        return Err(BuildError::Stalled {
            endpoint: endpoint.to_string(),
            idle,
            step: tracker.running_step(),
        });
    }

    match upload {
        // A file that could not be read is the real cause of whatever the daemon saw. (A
        // broken pipe only means the daemon stopped reading.)
        Some(Err(walk)) if walk.source.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(BuildError::Context {
                path: walk.path,
                source: walk.source,
            });
        }
        Some(Ok(summary)) => {
            tracing::debug!(
                files = summary.files,
                bytes = summary.bytes,
                "build context sent"
            );
        }
        _ => {}
    }
    if let Some(error) = failure {
        return Err(classify_failure(
            error,
            &tracker,
            &endpoint,
            &dockerfile_path,
            &image_of(request),
        ));
    }

    let image_id = match image_id.or_else(|| tracker.image_id_from_status().map(str::to_owned)) {
        Some(id) => id,
        None => match request.tags.first() {
            Some(tag) => docker
                .inspect_image(tag)
                .await
                .ok()
                .and_then(|image| image.id)
                .ok_or(BuildError::NoImageId)?,
            None => return Err(BuildError::NoImageId),
        },
    };
    Ok(BuildOutput {
        image_id,
        steps: tracker.finish(),
    })
}

/// The key the daemon keeps its copy of a context directory under, as the Docker CLI makes it:
/// a digest of the host and the directory's absolute path, so two checkouts never share a
/// copy and a rebuild of the same one sends only what changed.
fn shared_key(context_dir: &Path) -> String {
    use sha2::Digest;
    let path = std::fs::canonicalize(context_dir).unwrap_or_else(|_| context_dir.to_owned());
    let host = rustix::system::uname();
    let mut digest = sha2::Sha256::new();
    digest.update(host.nodename().to_bytes());
    digest.update(b"\0");
    digest.update(path.as_os_str().as_encoded_bytes());
    hex::encode(digest.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The executor may run a build on any worker thread.
    #[test]
    fn a_build_can_be_spawned() {
        fn spawnable<T: Send + 'static>(_: &T) {}
        fn check(docker: bollard::Docker, request: BuildRequest) {
            let future = async move {
                let progress = |_: BuildProgress| {};
                build(&docker, &request, &progress).await
            };
            spawnable(&future);
        }
        let _ = check;
    }

    #[test]
    fn names_the_instruction_of_dockerfile_steps_only() {
        for (name, instruction) in [
            ("[1/4] FROM docker.io/envelope-test/busybox:1", Some("FROM")),
            ("[stage-1 2/3] RUN make", Some("RUN")),
            ("[build 10/12] COPY . .", Some("COPY")),
            ("[internal] load build context", None),
            ("exporting to image", None),
            ("importing cache manifest from 127.0.0.1:5000/app:1", None),
            ("[a/b] RUN x", None),
        ] {
            let step = BuildStep {
                name: name.to_owned(),
                cached: false,
                duration: None,
                error: None,
            };
            assert_eq!(step.instruction(), instruction, "{name}");
        }
    }
}
