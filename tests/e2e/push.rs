//! push end-to-end tests: the real Docker daemon pushing to real registries (plain and
//! htpasswd) and to ministack's ECR, checked with oci-client and a plain HTTP HEAD.
//!
//! Every test skips (with a note on stderr) only when ENVELOPE_TEST_REQUIRE_DOCKER is unset and
//! Docker cannot be reached; CI sets it, so there they run for real.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use envelope_runner::exec::push::ecr::{
    EcrAuth, EcrError, RepositoryOptions, TagMutability, ensure_repository,
};
use envelope_runner::exec::push::{
    PushError, PushOutput, PushProgress, PushRequest, RegistryCredentials, push,
};
use envelope_runner::secret::Secret;
use envelope_tests::env::{TestEnv, head_manifest, parts, unique};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------- the environment

/// An ECR client for ministack, configured from the env file (not the process env).
fn ecr_client(env: &TestEnv) -> aws_sdk_ecr::Client {
    use aws_sdk_ecr::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_ecr::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(env.var("AWS_ENDPOINT_URL"))
        .region(Region::new(env.var("AWS_REGION").to_string()))
        .credentials_provider(Credentials::new(
            env.var("AWS_ACCESS_KEY_ID"),
            env.var("AWS_SECRET_ACCESS_KEY"),
            None,
            None,
            "envelope-e2e",
        ))
        .build();
    aws_sdk_ecr::Client::from_conf(config)
}

/// ministack's registry, `host:port` of AWS_ENDPOINT_URL.
fn ecr_endpoint(env: &TestEnv) -> String {
    let url = env.var("AWS_ENDPOINT_URL");
    url.trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string()
}

/// A freshly built image (its own random payload on top of the base image), removed with
/// every tag it gets when dropped.
struct TestImage {
    docker_cli: String,
    id: String,
}

impl TestImage {
    fn build(env: &TestEnv, payload_bytes: usize) -> TestImage {
        let dir = tempfile::tempdir().unwrap();
        let name = unique("envelope-e2e/push-src");
        std::fs::write(
            dir.path().join("payload"),
            pseudo_random(&name, payload_bytes),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("Dockerfile"),
            format!("FROM {}\nCOPY payload /payload\n", env.base_image()),
        )
        .unwrap();
        let output = Command::new(env.docker_cli())
            .env("DOCKER_BUILDKIT", "1")
            .args(["build", "-q", "-t", &format!("{name}:1")])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "docker build failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let id = String::from_utf8_lossy(&output.stdout).trim().to_string();
        assert!(id.starts_with("sha256:"), "docker build -q printed {id:?}");
        TestImage {
            docker_cli: env.docker_cli().to_string(),
            id,
        }
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = Command::new(&self.docker_cli)
            .args(["image", "rm", "-f", &self.id])
            .output();
    }
}

/// `len` bytes that do not compress, different for every seed.
fn pseudo_random(seed: &str, len: usize) -> Vec<u8> {
    let mut state: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in seed.bytes() {
        state = (state ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A progress callback that keeps every event.
fn recorder() -> (
    Arc<Mutex<Vec<PushProgress>>>,
    impl Fn(PushProgress) + Send + Sync,
) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (events, move |event| sink.lock().unwrap().push(event))
}

fn request(
    image: &TestImage,
    repository: &str,
    tags: &[&str],
    credentials: Option<RegistryCredentials>,
    endpoint_override: Option<String>,
) -> PushRequest {
    PushRequest {
        local_image: image.id.clone(),
        repository: repository.to_string(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        credentials,
        endpoint_override,
    }
}

fn basic(registry: &str, password: &str) -> RegistryCredentials {
    RegistryCredentials {
        server: registry.to_string(),
        username: "AWS".to_string(),
        password: Secret::new(password),
        expires_at: None,
    }
}

/// The digest `registry` (plain HTTP) gives for `path:tag`, asked with oci-client.
async fn oci_digest(registry: &str, path: &str, tag: &str, auth: &RegistryAuth) -> String {
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    });
    let reference =
        oci_client::Reference::with_tag(registry.to_string(), path.to_string(), tag.to_string());
    client
        .fetch_manifest_digest(&reference, auth)
        .await
        .unwrap_or_else(|e| panic!("oci-client HEAD {registry}/{path}:{tag}: {e}"))
}

fn assert_sha256(digest: &str) {
    assert!(
        digest.len() == 71
            && digest.starts_with("sha256:")
            && digest[7..].bytes().all(|b| b.is_ascii_hexdigit()),
        "not a sha256 digest: {digest}"
    );
}

// ---------------------------------------------------------------- plain registry

#[tokio::test]
async fn a_push_under_two_tags_gives_one_digest_that_both_tags_resolve_to() {
    let Some((env, docker)) = parts("two tags").await else {
        return;
    };
    let image = TestImage::build(env, 256 * 1024);
    let path = unique("envelope-e2e/two-tags");
    let repository = format!("{}/{path}", env.registry());
    let (events, progress) = recorder();

    let output: PushOutput = push(
        &docker,
        &request(&image, &repository, &["v1", "sha-0123abc"], None, None),
        &progress,
    )
    .await
    .unwrap();

    assert_sha256(&output.digest);
    assert_eq!(output.repository, repository);
    assert_eq!(output.image_ref, format!("{repository}@{}", output.digest));
    assert_eq!(output.tags, ["v1", "sha-0123abc"]);
    assert!(output.layers_uploaded >= 1, "{output:?}");
    assert!(
        output.bytes_uploaded >= 256 * 1024,
        "the payload layer was uploaded: {output:?}"
    );
    for tag in ["v1", "sha-0123abc"] {
        let by_oci = oci_digest(env.registry(), &path, tag, &RegistryAuth::Anonymous).await;
        assert_eq!(by_oci, output.digest, "oci-client, tag {tag}");
        let (status, by_head) = head_manifest(env.registry(), &path, tag).await;
        assert_eq!(status, 200, "HEAD tag {tag}");
        assert_eq!(
            by_head.as_deref(),
            Some(output.digest.as_str()),
            "HEAD tag {tag}"
        );
    }

    let events = events.lock().unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, PushProgress::LayerUploaded))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, PushProgress::LayerUploading { sent, .. } if *sent > 0))
    );
    for tag in ["v1", "sha-0123abc"] {
        assert!(
            events.iter().any(
                |e| matches!(e, PushProgress::Verified { tag: t, digest } if t == tag && *digest == output.digest)
            ),
            "no Verified event for {tag}: {events:?}"
        );
    }
}

#[tokio::test]
async fn re_pushing_an_unchanged_image_uploads_no_layer_bytes() {
    let Some((env, docker)) = parts("re-push").await else {
        return;
    };
    let image = TestImage::build(env, 512 * 1024);
    let repository = format!("{}/{}", env.registry(), unique("envelope-e2e/re-push"));
    let request = request(&image, &repository, &["v1"], None, None);
    let ignore = |_: PushProgress| {};

    let first = push(&docker, &request, &ignore).await.unwrap();
    assert!(first.bytes_uploaded > 0, "{first:?}");

    let second = push(&docker, &request, &ignore).await.unwrap();
    assert_eq!(second.digest, first.digest);
    assert_eq!(second.bytes_uploaded, 0, "{second:?}");
    assert_eq!(second.layers_uploaded, 0, "{second:?}");
    assert_eq!(
        second.layers_skipped,
        first.layers_uploaded + first.layers_skipped,
        "every layer is skipped: first {first:?}, second {second:?}"
    );
}

#[tokio::test]
async fn a_missing_local_image_is_named() {
    let Some((env, docker)) = parts("missing image").await else {
        return;
    };
    let request = PushRequest {
        local_image: "envelope-e2e/never-built:1".to_string(),
        repository: format!("{}/envelope-e2e/never-built", env.registry()),
        tags: vec!["v1".to_string()],
        credentials: None,
        endpoint_override: None,
    };
    let error = push(&docker, &request, &|_| {}).await.unwrap_err();
    assert!(
        matches!(error, PushError::LocalImageMissing { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("envelope-e2e/never-built:1"),
        "{error}"
    );
    assert!(!error.is_environment());
}

#[tokio::test]
async fn a_registry_that_is_down_is_a_clear_environment_error() {
    let Some((env, docker)) = parts("registry down").await else {
        return;
    };
    // A port nothing listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let image = TestImage::build(env, 1024);
    let repository = format!("127.0.0.1:{port}/envelope-e2e/down");
    let started = Instant::now();

    let error = push(
        &docker,
        &request(&image, &repository, &["v1"], None, None),
        &|_| {},
    )
    .await
    .unwrap_err();

    eprintln!("{error}");
    assert!(
        matches!(error, PushError::RegistryUnreachable { .. }),
        "{error:?}"
    );
    assert!(error.is_environment());
    let message = error.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(message.contains("connection refused"), "{message}");
    assert!(message.contains("hint:"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a refused connection is not retried: {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------- htpasswd registry

#[tokio::test]
async fn the_htpasswd_registry_accepts_the_right_password() {
    let Some((env, docker)) = parts("htpasswd ok").await else {
        return;
    };
    let image = TestImage::build(env, 64 * 1024);
    let path = unique("envelope-e2e/auth");
    let repository = format!("{}/{path}", env.auth_registry());
    let password = env.auth_password();

    let output = push(
        &docker,
        &request(
            &image,
            &repository,
            &["v1"],
            Some(basic(env.auth_registry(), &password)),
            None,
        ),
        &|_| {},
    )
    .await
    .unwrap();

    let auth = RegistryAuth::Basic("AWS".to_string(), password);
    assert_eq!(
        oci_digest(env.auth_registry(), &path, "v1", &auth).await,
        output.digest
    );
    // Without credentials the registry does not answer the HEAD.
    let (status, _) = head_manifest(env.auth_registry(), &path, "v1").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_htpasswd_registry_refuses_a_wrong_password_and_the_error_does_not_show_it() {
    let Some((env, docker)) = parts("htpasswd wrong").await else {
        return;
    };
    let image = TestImage::build(env, 1024);
    let repository = format!("{}/{}", env.auth_registry(), unique("envelope-e2e/auth"));
    // bcrypt reads only the first 72 bytes of a password: change the start, not the end.
    let wrong = format!("wrong-{}", env.auth_password());
    let (events, progress) = recorder();

    let error = push(
        &docker,
        &request(
            &image,
            &repository,
            &["v1"],
            Some(basic(env.auth_registry(), &wrong)),
            None,
        ),
        &progress,
    )
    .await
    .unwrap_err();

    eprintln!("{error}");
    assert!(matches!(error, PushError::AuthRefused { .. }), "{error:?}");
    assert!(error.is_environment());
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains(&wrong), "the password leaked: {shown}");
    assert!(
        !shown.contains(&env.auth_password()),
        "the password leaked: {shown}"
    );
    assert!(shown.contains(env.auth_registry()), "{shown}");
    assert!(shown.contains("user `AWS`"), "{shown}");
    let attempts = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, PushProgress::TagStarted { .. }))
        .count();
    assert_eq!(attempts, 1, "refused credentials are not retried");

    // And without any credentials.
    let anonymous = push(
        &docker,
        &request(&image, &repository, &["v1"], None, None),
        &|_| {},
    )
    .await
    .unwrap_err();
    assert!(
        matches!(anonymous, PushError::AuthRefused { .. }),
        "{anonymous:?}"
    );
    assert!(anonymous.to_string().contains("anonymous"), "{anonymous}");
}

// ---------------------------------------------------------------- ECR (ministack)

#[tokio::test]
async fn ecr_credentials_come_from_get_authorization_token_and_are_cached() {
    let Some((env, _docker)) = parts("ecr token").await else {
        return;
    };
    let now = Arc::new(Mutex::new(Utc::now()));
    let clock = {
        let now = now.clone();
        Arc::new(move || *now.lock().unwrap()) as Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>
    };
    let auth = EcrAuth::new(ecr_client(env)).with_clock(clock);

    let credentials = auth.credentials().await.unwrap();
    assert_eq!(credentials.username, "AWS");
    assert!(!credentials.password.is_empty());
    assert!(
        credentials.server.ends_with(".amazonaws.com") && credentials.server.contains(".dkr.ecr."),
        "{}",
        credentials.server
    );
    let expires_at = credentials.expires_at.expect("ECR names an expiry");
    assert!(
        expires_at > Utc::now() + chrono::Duration::hours(11),
        "{expires_at}"
    );
    assert!(!format!("{credentials:?}").contains(credentials.password.expose()));
    assert_eq!(auth.token_requests(), 1);

    // Cached while fresh.
    auth.credentials().await.unwrap();
    assert_eq!(auth.token_requests(), 1);

    // Refreshed once the clock reaches the expiry (less the margin).
    *now.lock().unwrap() = expires_at - chrono::Duration::minutes(5);
    auth.credentials().await.unwrap();
    assert_eq!(auth.token_requests(), 2);
}

#[tokio::test]
async fn a_missing_ecr_repository_is_created_only_when_asked() {
    let Some((env, _docker)) = parts("ecr repository").await else {
        return;
    };
    let client = ecr_client(env);
    let name = unique("envelope-e2e/created");

    let missing = ensure_repository(&client, &name, &RepositoryOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(missing, EcrError::RepositoryMissing { .. }),
        "{missing:?}"
    );
    assert!(missing.is_environment());
    assert!(missing.to_string().contains(&name), "{missing}");
    assert!(missing.to_string().contains("create"), "{missing}");

    let options = RepositoryOptions {
        create_if_missing: true,
        tag_mutability: TagMutability::Immutable,
        ..RepositoryOptions::default()
    };
    let created = ensure_repository(&client, &name, &options).await.unwrap();
    assert!(created.created);
    assert_eq!(created.name, name);
    assert_eq!(created.tag_mutability, Some(TagMutability::Immutable));
    assert!(
        created.uri.ends_with(&format!(".amazonaws.com/{name}")),
        "{}",
        created.uri
    );

    let again = ensure_repository(&client, &name, &options).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.uri, created.uri);
}

#[tokio::test]
async fn an_ecr_push_goes_through_the_endpoint_override_and_keeps_the_ecr_name() {
    let Some((env, docker)) = parts("ecr push").await else {
        return;
    };
    let client = ecr_client(env);
    let name = unique("envelope-e2e/ecr");
    let repository = ensure_repository(
        &client,
        &name,
        &RepositoryOptions {
            create_if_missing: true,
            ..RepositoryOptions::default()
        },
    )
    .await
    .unwrap();
    let credentials = EcrAuth::new(client.clone()).credentials().await.unwrap();
    let image = TestImage::build(env, 128 * 1024);

    let output = push(
        &docker,
        &request(
            &image,
            &repository.uri,
            &["v1", "sha-feedbeef"],
            Some(credentials),
            Some(ecr_endpoint(env)),
        ),
        &|_| {},
    )
    .await
    .unwrap();

    assert_sha256(&output.digest);
    assert_eq!(
        output.image_ref,
        format!("{}@{}", repository.uri, output.digest)
    );
    assert!(output.bytes_uploaded > 0, "{output:?}");
    for tag in ["v1", "sha-feedbeef"] {
        let by_oci = oci_digest(&ecr_endpoint(env), &name, tag, &RegistryAuth::Anonymous).await;
        assert_eq!(by_oci, output.digest, "oci-client, tag {tag}");
        let (status, by_head) = head_manifest(&ecr_endpoint(env), &name, tag).await;
        assert_eq!(status, 200, "HEAD {tag}");
        assert_eq!(
            by_head.as_deref(),
            Some(output.digest.as_str()),
            "HEAD {tag}"
        );
    }
    // ECR's own API sees the same image.
    let described = client
        .describe_images()
        .repository_name(&name)
        .send()
        .await
        .unwrap();
    let details = described.image_details();
    assert!(
        details
            .iter()
            .any(|d| d.image_digest() == Some(output.digest.as_str())
                && d.image_tags().iter().any(|t| t == "v1")),
        "DescribeImages: {details:?}"
    );
}

#[tokio::test]
async fn an_ecr_push_to_a_repository_that_does_not_exist_says_so() {
    let Some((env, docker)) = parts("ecr missing").await else {
        return;
    };
    let image = TestImage::build(env, 1024);
    let uri = format!(
        "000000000000.dkr.ecr.{}.amazonaws.com/{}",
        env.var("AWS_REGION"),
        unique("envelope-e2e/absent")
    );

    let error = push(
        &docker,
        &request(&image, &uri, &["v1"], None, Some(ecr_endpoint(env))),
        &|_| {},
    )
    .await
    .unwrap_err();

    assert!(
        matches!(error, PushError::RepositoryMissing { .. }),
        "{error:?}"
    );
    assert!(error.is_environment());
    assert!(error.to_string().contains(&uri), "{error}");
}

#[tokio::test]
async fn an_immutable_tag_cannot_be_pushed_again_with_another_image() {
    let Some((env, docker)) = parts("ecr immutable").await else {
        return;
    };
    let client = ecr_client(env);
    let name = unique("envelope-e2e/immutable");
    let repository = ensure_repository(
        &client,
        &name,
        &RepositoryOptions {
            create_if_missing: true,
            tag_mutability: TagMutability::Immutable,
            ..RepositoryOptions::default()
        },
    )
    .await
    .unwrap();
    let credentials = EcrAuth::new(client).credentials().await.unwrap();
    let first = TestImage::build(env, 1024);
    let second = TestImage::build(env, 1024);
    let endpoint = Some(ecr_endpoint(env));

    let pushed = push(
        &docker,
        &request(
            &first,
            &repository.uri,
            &["v1"],
            Some(credentials.clone()),
            endpoint.clone(),
        ),
        &|_| {},
    )
    .await
    .unwrap();

    let (events, progress) = recorder();
    let error = push(
        &docker,
        &request(
            &second,
            &repository.uri,
            &["v1"],
            Some(credentials),
            endpoint,
        ),
        &progress,
    )
    .await
    .unwrap_err();

    eprintln!("{error}");
    assert!(matches!(error, PushError::TagImmutable { .. }), "{error:?}");
    assert!(!error.is_environment());
    let message = error.to_string();
    assert!(
        message.contains("`v1`") && message.contains(&repository.uri),
        "{message}"
    );
    let attempts = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, PushProgress::TagStarted { .. }))
        .count();
    assert_eq!(attempts, 1, "an immutable tag is not retried");
    // The tag still names the first image.
    let (_, digest) = head_manifest(&ecr_endpoint(env), &name, "v1").await;
    assert_eq!(digest.as_deref(), Some(pushed.digest.as_str()));
}

// ---------------------------------------------------------------- a connection cut midway

/// A request line, e.g. `PATCH /v2/<name>/blobs/uploads/<id>` or `PUT /v2/<name>/manifests/v1`.
fn has_request(chunk: &[u8], method: &str, path_part: &str) -> bool {
    String::from_utf8_lossy(chunk).lines().any(|line| {
        line.starts_with(&format!("{method} /v2/"))
            && line.contains(path_part)
            && line.ends_with("HTTP/1.1")
    })
}

/// The method and target of the request line a chunk starts with, if it starts one.
fn request_line(chunk: &[u8]) -> Option<(String, String)> {
    let head = String::from_utf8_lossy(&chunk[..chunk.len().min(4096)]).into_owned();
    let line = head.lines().next()?;
    let mut words = line.split(' ');
    let (method, target, version) = (words.next()?, words.next()?, words.next()?);
    (target.starts_with("/v2/") && version == "HTTP/1.1")
        .then(|| (method.to_owned(), target.to_owned()))
}

/// The status code and Docker-Content-Digest of the response a chunk starts with, if any.
fn response_head(chunk: &[u8]) -> Option<(u16, Option<String>)> {
    let head = String::from_utf8_lossy(&chunk[..chunk.len().min(4096)]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()?
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()?;
    let digest = lines
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("docker-content-digest"))
        .map(|(_, value)| value.trim().to_owned());
    Some((status, digest))
}

/// What went through a [`CuttingProxy`].
#[derive(Debug, Default)]
struct ProxyLog {
    /// Connections reset midway.
    resets: usize,
    /// Request bodies and headers sent to the registry, in bytes (retries included).
    bytes_up: u64,
    /// `PUT .../blobs/uploads/...?digest=<digest>` requests sent, per digest.
    blob_puts_sent: HashMap<String, usize>,
    /// Those the registry answered 201 Created, per digest.
    blob_puts_completed: HashMap<String, usize>,
    /// `PUT .../manifests/<tag>` requests sent, per tag.
    manifest_puts_sent: HashMap<String, usize>,
    /// The registry's 201 answers to them: the tag and the Docker-Content-Digest it gave.
    manifests_completed: Vec<(String, Option<String>)>,
}

/// A TCP proxy in front of a registry that resets (RST, not FIN) the first `cuts` connections
/// carrying a request `method .../path_part...` once `cut_after` bytes of it have passed — a
/// push cut off midway — and logs the uploads and manifests that go through it.
struct CuttingProxy {
    /// `127.0.0.1:<port>`.
    address: String,
    log: Arc<Mutex<ProxyLog>>,
}

/// The blob digest of `PUT .../blobs/uploads/<id>?...digest=<digest>...`.
fn upload_digest(target: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    let value = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("digest="))?;
    Some(value.replace("%3A", ":").replace("%3a", ":"))
}

async fn cutting_proxy(
    upstream: String,
    method: &'static str,
    path_part: &'static str,
    cut_after: usize,
    cuts: usize,
) -> CuttingProxy {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let cuts_left = Arc::new(AtomicUsize::new(cuts));
    let log = Arc::new(Mutex::new(ProxyLog::default()));
    let shared_log = log.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let cuts_left = cuts_left.clone();
            let log = shared_log.clone();
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                // HTTP/1.1 without pipelining: a response answers the last request sent.
                let last_request: Mutex<Option<(String, String)>> = Mutex::new(None);
                let (mut client_read, mut client_write) = client.split();
                let (mut server_read, mut server_write) = server.split();
                let upload = async {
                    let mut buffer = vec![0u8; 16 * 1024];
                    let mut uploading: Option<usize> = None;
                    loop {
                        let n = match client_read.read(&mut buffer).await {
                            Ok(0) | Err(_) => return false,
                            Ok(n) => n,
                        };
                        let chunk = &buffer[..n];
                        if let Some((method, target)) = request_line(chunk) {
                            let mut log = log.lock().unwrap();
                            if method == "PUT"
                                && target.contains("/blobs/uploads/")
                                && let Some(digest) = upload_digest(&target)
                            {
                                *log.blob_puts_sent.entry(digest).or_default() += 1;
                            }
                            if method == "PUT"
                                && let Some((_, tag)) = target.split_once("/manifests/")
                            {
                                *log.manifest_puts_sent.entry(tag.to_owned()).or_default() += 1;
                            }
                            *last_request.lock().unwrap() = Some((method, target));
                        }
                        if uploading.is_none()
                            && cuts_left.load(Ordering::SeqCst) > 0
                            && has_request(chunk, method, path_part)
                        {
                            uploading = Some(0);
                        }
                        if let Some(sent) = uploading.as_mut() {
                            *sent += n;
                            if *sent > cut_after
                                && cuts_left
                                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                        n.checked_sub(1)
                                    })
                                    .is_ok()
                            {
                                return true; // reset both sides midway through the request
                            }
                        }
                        if server_write.write_all(chunk).await.is_err() {
                            return false;
                        }
                        log.lock().unwrap().bytes_up += n as u64;
                    }
                };
                let download = async {
                    let mut buffer = vec![0u8; 16 * 1024];
                    loop {
                        let n = match server_read.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let chunk = &buffer[..n];
                        if let Some((status, digest)) = response_head(chunk) {
                            let answered = if status >= 200 {
                                last_request.lock().unwrap().take()
                            } else {
                                None
                            };
                            if let (201, Some((method, target))) = (status, answered) {
                                let mut log = log.lock().unwrap();
                                if method == "PUT"
                                    && target.contains("/blobs/uploads/")
                                    && let Some(digest) = upload_digest(&target)
                                {
                                    *log.blob_puts_completed.entry(digest).or_default() += 1;
                                }
                                if let Some((_, tag)) = target.split_once("/manifests/") {
                                    log.manifests_completed.push((tag.to_owned(), digest));
                                }
                            }
                        }
                        if client_write.write_all(chunk).await.is_err() {
                            return;
                        }
                    }
                };
                let reset = tokio::select! {
                    reset = upload => reset,
                    _ = download => false,
                };
                if reset {
                    // SO_LINGER 0: closing sends RST, as a middlebox that kills a connection does.
                    let _ = client.set_zero_linger();
                    let _ = server.set_zero_linger();
                    log.lock().unwrap().resets += 1;
                }
            });
        }
    });
    CuttingProxy { address, log }
}

#[tokio::test]
async fn a_push_reset_midway_is_retried_verified_and_pushes_nothing_twice() {
    let Some((env, docker)) = parts("reset midway").await else {
        return;
    };
    const PAYLOAD: usize = 2 * 1024 * 1024;
    let image = TestImage::build(env, PAYLOAD);
    let proxy = cutting_proxy(
        env.registry().to_string(),
        "PATCH",
        "/blobs/uploads/",
        256 * 1024,
        1,
    )
    .await;
    let path = unique("envelope-e2e/cut");
    // The repository names the registry; the override sends everything through the proxy.
    let repository = format!("{}/{path}", env.registry());
    let (events, progress) = recorder();

    let output = push(
        &docker,
        &request(
            &image,
            &repository,
            &["v1"],
            None,
            Some(proxy.address.clone()),
        ),
        &progress,
    )
    .await
    .unwrap();

    assert_eq!(output.image_ref, format!("{repository}@{}", output.digest));
    assert!(output.bytes_uploaded >= PAYLOAD as u64, "{output:?}");
    // The digest the registry gives for the tag, asked directly (not through the proxy).
    assert_eq!(
        oci_digest(env.registry(), &path, "v1", &RegistryAuth::Anonymous).await,
        output.digest
    );
    let events = events.lock().unwrap();
    assert!(
        events.iter().any(|e| matches!(
            e,
            PushProgress::LayerRetrying { .. } | PushProgress::Retrying { .. }
        )),
        "the reset was noticed and retried: {events:?}"
    );

    let log = proxy.log.lock().unwrap();
    eprintln!("{log:#?}\npush output: {output:?}");
    assert_eq!(log.resets, 1, "{log:#?}");
    // Every blob (the base layer, the payload layer, the config) was completed exactly once:
    // the upload cut off never was, the retry was.
    assert!(log.blob_puts_completed.len() >= 2, "{log:#?}");
    for (digest, count) in &log.blob_puts_completed {
        assert_sha256(digest);
        assert_eq!(*count, 1, "blob {digest} completed {count} times: {log:#?}");
    }
    assert_eq!(
        log.blob_puts_sent, log.blob_puts_completed,
        "every blob PUT sent was completed, none twice"
    );
    // One manifest, put once, and the registry named the digest the push reports.
    assert_eq!(
        log.manifest_puts_sent,
        HashMap::from([("v1".to_owned(), 1)]),
        "{log:#?}"
    );
    assert_eq!(
        log.manifests_completed,
        [("v1".to_owned(), Some(output.digest.clone()))],
        "{log:#?}"
    );
    // The payload reached the registry through the proxy; the figures show what the reset
    // cost (the push output counts a retried layer's bytes as the daemon reported them).
    assert!(log.bytes_up >= PAYLOAD as u64, "{log:#?}");
    eprintln!(
        "bytes through the proxy: {}, reported uploaded: {}",
        log.bytes_up, output.bytes_uploaded
    );
}

#[tokio::test]
async fn a_manifest_upload_cut_off_is_retried_by_the_push_itself() {
    let Some((env, docker)) = parts("cut manifest").await else {
        return;
    };
    let image = TestImage::build(env, 64 * 1024);
    // The daemon retries layer uploads itself but not the manifest: the push stage does.
    let proxy = cutting_proxy(env.registry().to_string(), "PUT", "/manifests/", 0, 1).await;
    let path = unique("envelope-e2e/cut-manifest");
    let repository = format!("{}/{path}", env.registry());
    let (events, progress) = recorder();

    let output = push(
        &docker,
        &request(
            &image,
            &repository,
            &["v1"],
            None,
            Some(proxy.address.clone()),
        ),
        &progress,
    )
    .await
    .unwrap();

    assert_eq!(
        oci_digest(env.registry(), &path, "v1", &RegistryAuth::Anonymous).await,
        output.digest
    );
    let events = events.lock().unwrap();
    let retries: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            PushProgress::Retrying { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(retries.len(), 1, "one retry by the push stage: {events:?}");
    eprintln!("retried after: {}", retries[0]);
    let attempts = events
        .iter()
        .filter(|e| matches!(e, PushProgress::TagStarted { .. }))
        .count();
    assert_eq!(attempts, 2);
}

#[tokio::test]
async fn a_push_cut_off_every_time_fails_as_interrupted_after_bounded_attempts() {
    let Some((env, docker)) = parts("cut always").await else {
        return;
    };
    let image = TestImage::build(env, 1024);
    let proxy = cutting_proxy(env.registry().to_string(), "PUT", "/manifests/", 0, 100).await;
    let repository = format!("{}/{}", env.registry(), unique("envelope-e2e/cut-always"));
    let (events, progress) = recorder();
    let started = Instant::now();

    let error = push(
        &docker,
        &request(
            &image,
            &repository,
            &["v1"],
            None,
            Some(proxy.address.clone()),
        ),
        &progress,
    )
    .await
    .unwrap_err();

    eprintln!("{error}");
    assert!(
        matches!(error, PushError::Interrupted { attempts: 4, .. }),
        "{error:?}"
    );
    assert!(error.is_environment());
    let message = error.to_string();
    assert!(message.contains("cut off midway"), "{message}");
    assert!(message.contains(&proxy.address), "{message}");
    let attempts = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, PushProgress::TagStarted { .. }))
        .count();
    assert_eq!(attempts, 4);
    // Backoff of 1, 2 and 4 seconds, each with up to half taken off by jitter.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(3500) && elapsed < Duration::from_secs(30),
        "{elapsed:?}"
    );
}
