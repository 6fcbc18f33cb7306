//! The test environment (`scripts/test-env`): start it once per test process, read its
//! variables, connect to Docker, and small registry probes shared by end-to-end tests.

use bollard::Docker;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The variables `scripts/test-env env` prints, after `scripts/test-env up`.
pub struct TestEnv {
    vars: HashMap<String, String>,
}

impl TestEnv {
    pub fn var(&self, name: &str) -> &str {
        self.vars
            .get(name)
            .unwrap_or_else(|| panic!("scripts/test-env env does not set {name}"))
    }

    /// Every variable, to pass to a child process.
    pub fn vars(&self) -> &HashMap<String, String> {
        &self.vars
    }

    pub fn registry(&self) -> &str {
        self.var("ENVELOPE_TEST_REGISTRY")
    }

    pub fn auth_registry(&self) -> &str {
        self.var("ENVELOPE_TEST_AUTH_REGISTRY")
    }

    pub fn auth_password(&self) -> String {
        let path = self.var("ENVELOPE_TEST_AUTH_REGISTRY_PASSWORD_FILE");
        std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("reading the registry password file {path}: {e}"))
            .trim()
            .to_string()
    }

    pub fn base_image(&self) -> &str {
        self.var("ENVELOPE_TEST_BASE_IMAGE")
    }

    pub fn docker_cli(&self) -> &str {
        self.var("ENVELOPE_TEST_DOCKER_CLI")
    }

    /// The AWS emulator's address, without a trailing `/`.
    pub fn endpoint(&self) -> &str {
        self.var("AWS_ENDPOINT_URL").trim_end_matches('/')
    }

    pub fn region(&self) -> &str {
        self.var("AWS_REGION")
    }

    /// AWS configuration from the env file (not the process env), for `endpoint` (the
    /// emulator, or a proxy in front of it).
    pub async fn sdk_config(&self, endpoint: &str) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(self.region().to_owned()))
            .endpoint_url(endpoint)
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                self.var("AWS_ACCESS_KEY_ID"),
                self.var("AWS_SECRET_ACCESS_KEY"),
                None,
                None,
                "envelope-e2e",
            ))
            .load()
            .await
    }
}

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `envelope-runner` binary cargo built next to this test binary.
pub fn runner_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let binary = dir.join("envelope-runner");
    assert!(
        binary.is_file(),
        "{} is missing: build it with `cargo build -p envelope-runner` (nextest of the workspace builds it)",
        binary.display()
    );
    binary
}

/// Starts the test environment once per process and reads its variables.
pub fn test_env() -> Result<&'static TestEnv, String> {
    static ENV: OnceLock<Result<TestEnv, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let script = repo_root().join("scripts/test-env");
        // `status` takes no lock and answers at once when everything already runs.
        let all_up = Command::new(&script)
            .arg("status")
            .output()
            .is_ok_and(|status| status.status.success());
        if !all_up {
            let up = Command::new(&script)
                .arg("up")
                .output()
                .map_err(|e| format!("running {} up: {e}", script.display()))?;
            if !up.status.success() {
                return Err(format!(
                    "{} up failed:\n{}",
                    script.display(),
                    String::from_utf8_lossy(&up.stderr)
                ));
            }
        }
        let env = Command::new(&script)
            .arg("env")
            .output()
            .map_err(|e| format!("running {} env: {e}", script.display()))?;
        if !env.status.success() {
            return Err(format!(
                "{} env failed:\n{}",
                script.display(),
                String::from_utf8_lossy(&env.stderr)
            ));
        }
        let vars = String::from_utf8_lossy(&env.stdout)
            .lines()
            .filter_map(|line| line.trim().strip_prefix("export "))
            .filter_map(|assignment| assignment.split_once('='))
            .map(|(name, value)| (name.to_string(), value.trim_matches('"').to_string()))
            .collect();
        Ok(TestEnv { vars })
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// The environment and a Docker connection, or `None` (after a note) when Docker is not
/// available and ENVELOPE_TEST_REQUIRE_DOCKER is unset.
pub async fn parts(test: &str) -> Option<(&'static TestEnv, Docker)> {
    let required = std::env::var_os("ENVELOPE_TEST_REQUIRE_DOCKER").is_some();
    let skip_or_fail = |reason: String| {
        if required {
            panic!("{test}: ENVELOPE_TEST_REQUIRE_DOCKER is set but {reason}");
        }
        eprintln!("{test}: skipped: {reason} (set ENVELOPE_TEST_REQUIRE_DOCKER to fail instead)");
    };
    let docker = match connect_docker().await {
        Ok(docker) => docker,
        Err(reason) => match test_env() {
            // The daemon may simply not be started yet: the script starts it.
            Ok(_) => match connect_docker().await {
                Ok(docker) => docker,
                Err(reason) => {
                    skip_or_fail(reason);
                    return None;
                }
            },
            Err(env_error) => {
                skip_or_fail(format!("{reason}; {env_error}"));
                return None;
            }
        },
    };
    match test_env() {
        Ok(env) => Some((env, docker)),
        Err(reason) => panic!("{test}: Docker answers but the test environment does not: {reason}"),
    }
}

pub async fn connect_docker() -> Result<Docker, String> {
    let docker = Docker::connect_with_local_defaults()
        .map_err(|e| format!("cannot connect to Docker: {e}"))?;
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|e| format!("Docker does not answer: {e}"))?;
    docker
        .ping()
        .await
        .map_err(|e| format!("Docker does not answer: {e}"))?;
    Ok(docker)
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{nanos:x}-{count}", std::process::id())
}

/// A plain HTTP/1.1 `HEAD /v2/<path>/manifests/<tag>`: the status code and the
/// Docker-Content-Digest header.
pub async fn head_manifest(registry: &str, path: &str, tag: &str) -> (u16, Option<String>) {
    let mut stream = tokio::net::TcpStream::connect(registry).await.unwrap();
    let request = format!(
        "HEAD /v2/{path}/manifests/{tag} HTTP/1.1\r\nHost: {registry}\r\nAccept: \
         application/vnd.docker.distribution.manifest.v2+json, \
         application/vnd.oci.image.manifest.v1+json, \
         application/vnd.docker.distribution.manifest.list.v2+json, \
         application/vnd.oci.image.index.v1+json\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("the registry answers a HEAD within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    let mut lines = text.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let digest = lines
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("docker-content-digest"))
        .map(|(_, value)| value.trim().to_string());
    (status, digest)
}

/// A fresh DynamoDB table on the AWS emulator for a run store: its `dynamodb://` URL.
pub async fn dynamodb_store(env: &TestEnv, prefix: &str) -> String {
    let config = env.sdk_config(env.endpoint()).await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let table = unique(prefix);
    envelope_runner::store::DynamoDbStore::create_table_if_missing(&client, &table)
        .await
        .unwrap_or_else(|e| panic!("creating DynamoDB table {table}: {e}"));
    format!("dynamodb://{table}")
}
