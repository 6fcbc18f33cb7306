//! A Docker context as `docker context create` stores it under the configuration directory:
//! `contexts/meta/<sha256 of the name>/meta.json` (the docker endpoint's `Host` and
//! `SkipTLSVerify`) and `contexts/tls/<sha256 of the name>/docker/` (`ca.pem`, `cert.pem`,
//! `key.pem`, when the context uses TLS).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The docker endpoint of a stored context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ContextEndpoint {
    pub host: String,
    pub skip_tls_verify: bool,
    /// The context's TLS directory, when it has one.
    pub tls_dir: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Meta {
    #[serde(rename = "Endpoints", default)]
    endpoints: BTreeMap<String, Endpoint>,
}

#[derive(Deserialize)]
struct Endpoint {
    #[serde(rename = "Host", default)]
    host: Option<String>,
    #[serde(rename = "SkipTLSVerify", default)]
    skip_tls_verify: bool,
}

/// Why a context cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ContextProblem {
    /// No `meta.json` at this path.
    Missing(PathBuf),
    /// `meta.json` is unreadable or not a context's; why.
    Invalid(PathBuf, String),
}

/// Where the context's files live: the hex SHA-256 of its name, as the Docker CLI stores it.
fn context_id(name: &str) -> String {
    hex::encode(Sha256::digest(name.as_bytes()))
}

/// Reads the docker endpoint of context `name` under `config_dir`.
pub(super) fn read(config_dir: &Path, name: &str) -> Result<ContextEndpoint, ContextProblem> {
    let id = context_id(name);
    let meta_path = config_dir.join("contexts/meta").join(&id).join("meta.json");
    let text = match std::fs::read_to_string(&meta_path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(ContextProblem::Missing(meta_path));
        }
        Err(error) => return Err(ContextProblem::Invalid(meta_path, error.to_string())),
    };
    let meta: Meta = serde_json::from_str(&text)
        .map_err(|error| ContextProblem::Invalid(meta_path.clone(), error.to_string()))?;
    let endpoint = meta.endpoints.get("docker").ok_or_else(|| {
        ContextProblem::Invalid(meta_path.clone(), "it has no `docker` endpoint".to_owned())
    })?;
    let host = endpoint
        .host
        .clone()
        .filter(|host| !host.is_empty())
        .ok_or_else(|| {
            ContextProblem::Invalid(
                meta_path.clone(),
                "its `docker` endpoint has no `Host`".to_owned(),
            )
        })?;
    let tls_dir = config_dir.join("contexts/tls").join(&id).join("docker");
    Ok(ContextEndpoint {
        host,
        skip_tls_verify: endpoint.skip_tls_verify,
        tls_dir: tls_dir.is_dir().then_some(tls_dir),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_are_found_by_the_sha256_of_their_name() {
        // `docker context create remote` stores it under this id (`printf remote | sha256sum`).
        assert_eq!(
            context_id("remote"),
            "b71199ebd070b36beab7317920c2c2f1d777df8d05e5527d8458fda57cb17a7a"
        );
        assert_eq!(
            context_id("default"),
            "37a8eec1ce19687d132fe29051dca629d164e2c4958ba141d5f4133a33f0688f"
        );
    }

    #[test]
    fn reads_host_tls_and_skip_verify() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write_meta = |name: &str, json: &str| {
            let meta = dir.path().join("contexts/meta").join(context_id(name));
            std::fs::create_dir_all(&meta).expect("meta dir");
            std::fs::write(meta.join("meta.json"), json).expect("meta.json");
        };
        write_meta(
            "remote",
            r#"{"Name":"remote","Metadata":{},"Endpoints":{"docker":{"Host":"tcp://10.0.0.5:2376","SkipTLSVerify":false}}}"#,
        );
        let tls = dir
            .path()
            .join("contexts/tls")
            .join(context_id("remote"))
            .join("docker");
        std::fs::create_dir_all(&tls).expect("tls dir");
        write_meta(
            "plain",
            r#"{"Name":"plain","Endpoints":{"docker":{"Host":"unix:///run/user/1000/docker.sock","SkipTLSVerify":true}}}"#,
        );
        write_meta("broken", r#"{"Name":"broken","Endpoints":{}}"#);

        let cases = [
            (
                "remote",
                Ok(ContextEndpoint {
                    host: "tcp://10.0.0.5:2376".into(),
                    skip_tls_verify: false,
                    tls_dir: Some(tls.clone()),
                }),
            ),
            (
                "plain",
                Ok(ContextEndpoint {
                    host: "unix:///run/user/1000/docker.sock".into(),
                    skip_tls_verify: true,
                    tls_dir: None,
                }),
            ),
            (
                "broken",
                Err(ContextProblem::Invalid(
                    dir.path()
                        .join("contexts/meta")
                        .join(context_id("broken"))
                        .join("meta.json"),
                    "it has no `docker` endpoint".into(),
                )),
            ),
            (
                "absent",
                Err(ContextProblem::Missing(
                    dir.path()
                        .join("contexts/meta")
                        .join(context_id("absent"))
                        .join("meta.json"),
                )),
            ),
        ];
        for (name, expected) in cases {
            assert_eq!(read(dir.path(), name), expected, "{name}");
        }
    }
}
