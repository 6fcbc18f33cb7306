//! The Docker CLI's configuration file, `config.json` in `DOCKER_CONFIG` (else `~/.docker`):
//! registry credentials (`auths`, `credsStore`, `credHelpers`) and the current Docker
//! context (`currentContext`).
//!
//! Written here rather than taken from the `docker_credential` crate: that crate runs helpers
//! synchronously, folds a helper's failure into an error without the helper's message or the
//! registry, and gives up on a `credsStore` miss where the Docker CLI still reads `auths`.
//!
//! Which source answers for a registry host follows the Docker CLI: the host's
//! `credHelpers` entry, else `credsStore`, else the host's `auths` entry. Helpers are run by
//! [`helper`]; every value read is a [`Secret`].

mod helper;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

use crate::exec::push::RegistryCredentials;
use crate::secret::Secret;

/// The user name a credential helper (and this module) gives for an identity token, as the
/// Docker CLI does: the password is then an OAuth refresh token, not a password.
pub const IDENTITY_TOKEN_USER: &str = "<token>";

/// Docker Hub's key in `config.json`, and what its helpers are asked for.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A loaded `config.json` (empty when the file does not exist).
#[derive(Debug, Clone, Default)]
pub struct DockerConfig {
    /// The directory it was read from (the contexts live under it too).
    dir: PathBuf,
    file: ConfigFile,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(rename = "credsStore", default)]
    creds_store: Option<String>,
    #[serde(rename = "credHelpers", default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(rename = "currentContext", default)]
    current_context: Option<String>,
}

#[derive(Clone, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

impl std::fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthEntry(***)")
    }
}

/// Where the credentials for one registry host come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// `docker-credential-<name>`, from `credHelpers` (only this host) or `credsStore`.
    Helper { name: String, store: bool },
    /// The `auths` entry, or nothing.
    File,
}

/// A `config.json` or credential helper that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DockerConfigError {
    #[error("cannot read the Docker configuration {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the Docker configuration {path} is not valid JSON as the Docker CLI writes it: {detail}; \
         fix or remove the file (or point DOCKER_CONFIG at another directory)"
    )]
    Parse { path: PathBuf, detail: String },
    #[error(
        "the `auths` entry for `{server}` in {path} {reason}; log in again with \
         `docker login {server}`"
    )]
    BadAuth {
        path: PathBuf,
        server: String,
        reason: &'static str,
    },
    #[error(
        "the Docker credential helper `docker-credential-{helper}` (named by `{key}` in {path}) \
         for registry {host} is not on PATH; install it, or remove it from the configuration"
    )]
    HelperMissing {
        helper: String,
        key: &'static str,
        path: PathBuf,
        host: String,
    },
    #[error(
        "the Docker credential helper `docker-credential-{helper}` failed for registry {host}: \
         {detail}; run `echo {host} | docker-credential-{helper} get` to see why (it may need \
         a login or cloud credentials)"
    )]
    HelperFailed {
        helper: String,
        host: String,
        detail: String,
    },
}

impl DockerConfigError {
    /// Every one of these is about the machine the run is on, not the pipeline.
    pub fn is_environment(&self) -> bool {
        true
    }
}

/// The configuration directory as the Docker CLI finds it: `DOCKER_CONFIG`, else
/// `$HOME/.docker`. `None` without either.
pub fn config_dir(docker_config: Option<&str>, home: Option<&Path>) -> Option<PathBuf> {
    match docker_config.filter(|dir| !dir.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir)),
        None => home.map(|home| home.join(".docker")),
    }
}

impl DockerConfig {
    /// Reads the configuration of this process's environment (`DOCKER_CONFIG`, `HOME`).
    pub fn from_environment() -> Result<DockerConfig, DockerConfigError> {
        let docker_config = std::env::var("DOCKER_CONFIG").ok();
        let home = std::env::var_os("HOME").map(PathBuf::from);
        match config_dir(docker_config.as_deref(), home.as_deref()) {
            Some(dir) => DockerConfig::load(&dir),
            None => Ok(DockerConfig::default()),
        }
    }

    /// Reads `dir/config.json`; a missing file is an empty configuration.
    pub fn load(dir: &Path) -> Result<DockerConfig, DockerConfigError> {
        let path = dir.join("config.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(DockerConfig {
                    dir: dir.to_path_buf(),
                    file: ConfigFile::default(),
                });
            }
            Err(source) => return Err(DockerConfigError::Read { path, source }),
        };
        DockerConfig::parse(dir, &text)
    }

    fn parse(dir: &Path, text: &str) -> Result<DockerConfig, DockerConfigError> {
        let file = if text.trim().is_empty() {
            ConfigFile::default()
        } else {
            serde_json::from_str(text).map_err(|error| DockerConfigError::Parse {
                path: dir.join("config.json"),
                detail: error.to_string(),
            })?
        };
        Ok(DockerConfig {
            dir: dir.to_path_buf(),
            file,
        })
    }

    /// The directory the configuration is (or would be) in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `currentContext`, as `docker context use` wrote it.
    pub fn current_context(&self) -> Option<&str> {
        self.file
            .current_context
            .as_deref()
            .filter(|name| !name.is_empty())
    }

    /// The credentials the Docker CLI would use for `host` (`host[:port]`), or `None` for an
    /// anonymous pull or push. A helper that cannot answer is an error naming it and the host.
    pub async fn credentials(
        &self,
        host: &str,
    ) -> Result<Option<RegistryCredentials>, DockerConfigError> {
        let key = registry_host(host);
        if let Source::Helper { name, store } = self.source(&key) {
            let server = if key == registry_host(DOCKER_HUB_KEY) {
                DOCKER_HUB_KEY.to_owned()
            } else {
                key.clone()
            };
            let found = helper::get(&name, &server)
                .await
                .map_err(|error| match error {
                    helper::HelperError::Missing => DockerConfigError::HelperMissing {
                        helper: name.clone(),
                        key: if store { "credsStore" } else { "credHelpers" },
                        path: self.dir.join("config.json"),
                        host: host.to_owned(),
                    },
                    helper::HelperError::Failed(detail) => DockerConfigError::HelperFailed {
                        helper: name.clone(),
                        host: host.to_owned(),
                        detail,
                    },
                })?;
            if let Some((username, secret)) = found {
                return Ok(Some(credentials(host, username, secret)));
            }
            // A store that does not know the host: the file may still (the Docker CLI's
            // `auths` before a store was configured).
            if !store {
                return Ok(None);
            }
        }
        self.file_credentials(host, &key)
    }

    /// Which source answers for a normalised registry key. Pure.
    fn source(&self, key: &str) -> Source {
        let helper = self
            .file
            .cred_helpers
            .iter()
            .find(|(server, _)| registry_host(server) == key)
            .map(|(_, name)| name);
        match (helper, &self.file.creds_store) {
            (Some(name), _) if !name.is_empty() => Source::Helper {
                name: name.clone(),
                store: false,
            },
            (_, Some(name)) if !name.is_empty() => Source::Helper {
                name: name.clone(),
                store: true,
            },
            _ => Source::File,
        }
    }

    /// The `auths` entry for `key`: `auth` (base64 of `user:password`), else `username` and
    /// `password`, else `identitytoken`.
    fn file_credentials(
        &self,
        host: &str,
        key: &str,
    ) -> Result<Option<RegistryCredentials>, DockerConfigError> {
        let Some((server, entry)) = self
            .file
            .auths
            .iter()
            .find(|(server, _)| registry_host(server) == key)
        else {
            return Ok(None);
        };
        let bad = |reason| DockerConfigError::BadAuth {
            path: self.dir.join("config.json"),
            server: server.clone(),
            reason,
        };
        if let Some(token) = entry.identitytoken.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Some(credentials(
                host,
                IDENTITY_TOKEN_USER.to_owned(),
                Secret::new(token),
            )));
        }
        if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| bad("has an `auth` value that is not base64"))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| bad("has an `auth` value that is not text"))?;
            let (username, password) = decoded
                .split_once(':')
                .ok_or_else(|| bad("has an `auth` value without `user:password`"))?;
            return Ok(Some(credentials(
                host,
                username.to_owned(),
                Secret::new(password),
            )));
        }
        match (&entry.username, &entry.password) {
            (Some(username), Some(password)) => Ok(Some(credentials(
                host,
                username.clone(),
                Secret::new(password.as_str()),
            ))),
            _ => Ok(None),
        }
    }
}

fn credentials(host: &str, username: String, password: Secret) -> RegistryCredentials {
    RegistryCredentials {
        server: host.to_owned(),
        username,
        password,
        expires_at: None,
    }
}

/// A registry as `config.json` keys and the daemon write it (`https://host/v1/`, `host:port`,
/// `host/path`), reduced to `host[:port]`, with Docker Hub's aliases folded into the host its
/// registry answers on.
pub(crate) fn registry_host(server: &str) -> String {
    let server = server
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = server.split('/').next().unwrap_or(server);
    match host {
        "docker.io" | "index.docker.io" | "registry.hub.docker.com" => {
            "registry-1.docker.io".to_owned()
        }
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> DockerConfig {
        DockerConfig::parse(Path::new("/home/me/.docker"), json).expect("valid config")
    }

    #[test]
    fn the_directory_is_docker_config_else_home_dot_docker() {
        let home = Path::new("/home/me");
        let cases = [
            (Some("/etc/docker-ci"), Some(home), Some("/etc/docker-ci")),
            (Some(""), Some(home), Some("/home/me/.docker")),
            (None, Some(home), Some("/home/me/.docker")),
            (None, None, None),
        ];
        for (docker_config, home, expected) in cases {
            assert_eq!(
                config_dir(docker_config, home),
                expected.map(PathBuf::from),
                "{docker_config:?} {home:?}"
            );
        }
    }

    #[test]
    fn a_host_is_answered_by_its_helper_else_the_store_else_the_file() {
        let cases = [
            (
                r#"{"credHelpers": {"123.dkr.ecr.eu-west-2.amazonaws.com": "ecr-login"}, "credsStore": "pass"}"#,
                "123.dkr.ecr.eu-west-2.amazonaws.com",
                Source::Helper {
                    name: "ecr-login".into(),
                    store: false,
                },
            ),
            (
                r#"{"credHelpers": {"https://ghcr.io": "gh"}}"#,
                "ghcr.io",
                Source::Helper {
                    name: "gh".into(),
                    store: false,
                },
            ),
            (
                r#"{"credHelpers": {"ghcr.io": "gh"}, "credsStore": "desktop"}"#,
                "127.0.0.1:5001",
                Source::Helper {
                    name: "desktop".into(),
                    store: true,
                },
            ),
            (
                r#"{"credHelpers": {"ghcr.io": "gh"}}"#,
                "127.0.0.1:5001",
                Source::File,
            ),
            (r#"{"credsStore": ""}"#, "127.0.0.1:5001", Source::File),
            ("", "127.0.0.1:5001", Source::File),
        ];
        for (json, host, expected) in cases {
            assert_eq!(
                config(json).source(&registry_host(host)),
                expected,
                "{json} {host}"
            );
        }
    }

    #[tokio::test]
    async fn auths_entries_give_a_user_and_password_or_an_identity_token() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("AWS:pa:ss");
        let json = format!(
            r#"{{"auths": {{
                "127.0.0.1:5001": {{"auth": "{encoded}"}},
                "https://index.docker.io/v1/": {{"username": "me", "password": "hunter2"}},
                "https://ghcr.io": {{"identitytoken": "refresh"}},
                "quay.io": {{}}
            }}}}"#
        );
        let config = config(&json);
        let cases = [
            ("127.0.0.1:5001", Some(("AWS", "pa:ss"))),
            ("docker.io", Some(("me", "hunter2"))),
            ("registry-1.docker.io", Some(("me", "hunter2"))),
            ("ghcr.io", Some((IDENTITY_TOKEN_USER, "refresh"))),
            ("quay.io", None),
            ("127.0.0.1:5000", None),
        ];
        for (host, expected) in cases {
            let found = config.credentials(host).await.expect("no helper runs");
            let found = found
                .as_ref()
                .map(|c| (c.username.as_str(), c.password.expose()));
            assert_eq!(found, expected, "{host}");
            if let Some(credentials) = config.credentials(host).await.expect("again") {
                assert_eq!(credentials.server, host);
            }
        }
    }

    #[tokio::test]
    async fn a_broken_auth_value_names_the_registry_and_the_file() {
        let config = config(r#"{"auths": {"127.0.0.1:5001": {"auth": "not base64!"}}}"#);
        let error = config
            .credentials("127.0.0.1:5001")
            .await
            .expect_err("bad base64");
        assert_eq!(
            error.to_string(),
            "the `auths` entry for `127.0.0.1:5001` in /home/me/.docker/config.json has an \
             `auth` value that is not base64; log in again with `docker login 127.0.0.1:5001`"
        );
    }

    #[test]
    fn bad_json_and_the_current_context_are_read() {
        let error = DockerConfig::parse(Path::new("/d"), "{").expect_err("bad json");
        assert!(
            error
                .to_string()
                .starts_with("the Docker configuration /d/config.json is not valid JSON"),
            "{error}"
        );
        assert_eq!(
            config(r#"{"currentContext": "remote"}"#).current_context(),
            Some("remote")
        );
        assert_eq!(config(r#"{"currentContext": ""}"#).current_context(), None);
        let missing = DockerConfig::load(Path::new("/nonexistent/docker")).expect("empty");
        assert_eq!(missing.current_context(), None);
    }
}
