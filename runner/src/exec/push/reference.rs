//! Where an image goes: the repository as users write it, its tags, and the registry endpoint
//! that is actually contacted when it differs (a mirror, a VPC endpoint, an emulator).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// The registry Docker uses for a repository written without a host (`team/app`).
const DOCKER_HUB: &str = "docker.io";

/// A repository as users write it, split into the registry host and the path inside it:
/// `123456789012.dkr.ecr.eu-west-2.amazonaws.com/envelope/api` or `127.0.0.1:5000/team/app`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repository {
    written: String,
    registry: String,
    path: String,
}

impl Repository {
    /// Parses `[host[:port]/]path`. The first component is a host when it contains `.` or `:`
    /// or is `localhost`, the rule Docker uses; otherwise the repository is on Docker Hub.
    pub fn parse(written: &str) -> Result<Self, ReferenceError> {
        let invalid = |reason: &str| ReferenceError::Repository {
            repository: written.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = written.trim();
        if trimmed.is_empty() {
            return Err(invalid("it is empty"));
        }
        if trimmed.contains("://") {
            return Err(invalid(
                "write it without a scheme, as `host[:port]/path` (for example \
                 `123456789012.dkr.ecr.eu-west-2.amazonaws.com/app`)",
            ));
        }
        let (registry, path) = match trimmed.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), trimmed.to_string()),
        };
        if path.contains('@') {
            return Err(invalid(
                "it contains a digest; give the repository alone and list tags under `tags`",
            ));
        }
        if path.contains(':') {
            return Err(invalid(
                "it contains a tag; give the repository alone and list tags under `tags`",
            ));
        }
        let component_ok = |component: &str| {
            !component.is_empty()
                && component
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && component.as_bytes()[0].is_ascii_alphanumeric()
                && component.as_bytes()[component.len() - 1].is_ascii_alphanumeric()
        };
        if !path.split('/').all(component_ok) {
            return Err(invalid(
                "a repository path is lowercase letters, digits and `.`, `_`, `-` separated by \
                 `/`, each part starting and ending with a letter or digit",
            ));
        }
        Ok(Repository {
            written: trimmed.to_string(),
            registry,
            path,
        })
    }

    /// The repository exactly as the user wrote it (what `image_ref` is built from).
    pub fn as_written(&self) -> &str {
        &self.written
    }

    /// The registry host (with port, if any) named by the repository.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry, e.g. `envelope/api`.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

/// The registry actually contacted: `host[:port]`, and whether plain HTTP may be used.
///
/// Plain HTTP is only ever allowed for a registry on this machine (`localhost`, 127.0.0.0/8,
/// `::1`), the same rule the Docker daemon applies by default: a registry anywhere else is
/// reached over HTTPS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryEndpoint {
    host: String,
    plain_http: bool,
}

impl RegistryEndpoint {
    /// Parses `host[:port]`, `https://host[:port]` or `http://host[:port]`.
    ///
    /// Without a scheme, plain HTTP is allowed for a loopback host and HTTPS is used for
    /// anything else. `https://` forces HTTPS (a TLS tunnel on localhost); `http://` is
    /// refused for a host that is not on this machine.
    pub fn parse(text: &str) -> Result<Self, ReferenceError> {
        let invalid = |reason: &str| ReferenceError::Endpoint {
            endpoint: text.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = text.trim();
        let (scheme, rest) = match trimmed.split_once("://") {
            Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
            None => (None, trimmed),
        };
        let host = rest.strip_suffix('/').unwrap_or(rest);
        if host.is_empty() {
            return Err(invalid("it names no host; write `host:port`"));
        }
        if host.contains('/') || host.contains('@') || host.contains('?') {
            return Err(invalid(
                "an endpoint is a host and an optional port only, without a path or user",
            ));
        }
        let loopback = is_loopback_host(host);
        let plain_http = match scheme.as_deref() {
            None => loopback,
            Some("https") => false,
            Some("http") if loopback => true,
            Some("http") => {
                return Err(invalid(
                    "plain HTTP is allowed only for a registry on this machine (localhost, \
                     127.0.0.0/8, ::1); use https:// or a bare `host:port`",
                ));
            }
            Some(_) => return Err(invalid("the scheme must be http:// or https://")),
        };
        Ok(RegistryEndpoint {
            host: host.to_ascii_lowercase(),
            plain_http,
        })
    }

    /// The endpoint to contact for `registry`: `endpoint_override` when one is given and not
    /// blank (`--registry-endpoint`), else the registry itself.
    pub fn resolve(
        endpoint_override: Option<&str>,
        registry: &str,
    ) -> Result<Self, ReferenceError> {
        match endpoint_override {
            Some(text) if !text.trim().is_empty() => RegistryEndpoint::parse(text),
            _ => Ok(RegistryEndpoint::for_registry(registry)),
        }
    }

    /// The endpoint for a registry host as a repository names it (no override).
    pub fn for_registry(registry: &str) -> Self {
        RegistryEndpoint {
            host: registry.to_ascii_lowercase(),
            plain_http: is_loopback_host(registry),
        }
    }

    /// `host[:port]`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether plain HTTP may be used (only ever for a loopback host).
    pub fn allows_plain_http(&self) -> bool {
        self.plain_http
    }
}

impl fmt::Display for RegistryEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)
    }
}

/// Whether `host[:port]` names this machine: `localhost`, an address in 127.0.0.0/8, `::1`.
pub(crate) fn is_loopback_host(host_and_port: &str) -> bool {
    let host = if let Some(rest) = host_and_port.strip_prefix('[') {
        // [v6]:port
        rest.split(']').next().unwrap_or_default()
    } else if host_and_port.matches(':').count() > 1 {
        // a bare IPv6 address without a port
        host_and_port
    } else {
        host_and_port.split(':').next().unwrap_or_default()
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.is_loopback(),
        Ok(IpAddr::V6(v6)) => v6 == Ipv6Addr::LOCALHOST,
        Err(_) => false,
    }
}

/// Checks a tag against Docker's rule: up to 128 of `[A-Za-z0-9_.-]`, not starting with `.`
/// or `-`.
pub(crate) fn check_tag(tag: &str) -> Result<(), ReferenceError> {
    let valid = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && !tag.starts_with(['.', '-']);
    if valid {
        Ok(())
    } else {
        Err(ReferenceError::Tag {
            tag: tag.to_string(),
        })
    }
}

/// A repository, tag or endpoint that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("the repository `{repository}` cannot be used: {reason}")]
    Repository { repository: String, reason: String },
    #[error(
        "the tag `{tag}` cannot be used: a tag is 1 to 128 letters, digits, `_`, `.` or `-`, \
         not starting with `.` or `-`"
    )]
    Tag { tag: String },
    #[error("the registry endpoint `{endpoint}` cannot be used: {reason}")]
    Endpoint { endpoint: String, reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_override_replaces_the_registry_unless_it_is_blank() {
        let ecr = "123456789012.dkr.ecr.eu-west-2.amazonaws.com";
        let overridden = RegistryEndpoint::resolve(Some("127.0.0.1:4566"), ecr).unwrap();
        assert_eq!(overridden.host(), "127.0.0.1:4566");
        assert!(overridden.allows_plain_http());
        for blank in [None, Some(""), Some("  ")] {
            let own = RegistryEndpoint::resolve(blank, ecr).unwrap();
            assert_eq!(own.host(), ecr, "{blank:?}");
            assert!(!own.allows_plain_http());
        }
        assert!(RegistryEndpoint::resolve(Some("http://mirror.example.com"), ecr).is_err());
    }

    #[test]
    fn repositories_split_into_registry_and_path() {
        let cases = [
            (
                "123456789012.dkr.ecr.eu-west-2.amazonaws.com/envelope/api",
                "123456789012.dkr.ecr.eu-west-2.amazonaws.com",
                "envelope/api",
            ),
            ("127.0.0.1:5000/team/app", "127.0.0.1:5000", "team/app"),
            ("localhost/app", "localhost", "app"),
            ("team/app", "docker.io", "team/app"),
            ("app", "docker.io", "app"),
        ];
        for (written, registry, path) in cases {
            let repository = Repository::parse(written).unwrap();
            assert_eq!(repository.registry(), registry, "{written}");
            assert_eq!(repository.path(), path, "{written}");
            assert_eq!(repository.as_written(), written);
        }
    }

    #[test]
    fn repositories_with_tags_digests_or_schemes_are_refused() {
        for written in [
            "",
            "127.0.0.1:5000/app:v1",
            "127.0.0.1:5000/app@sha256:abc",
            "https://127.0.0.1:5000/app",
            "127.0.0.1:5000/App",
            "127.0.0.1:5000/app/",
            "127.0.0.1:5000/-app",
        ] {
            let error = Repository::parse(written).unwrap_err();
            assert!(
                error.to_string().contains("cannot be used"),
                "{written}: {error}"
            );
        }
    }

    #[test]
    fn endpoints_allow_plain_http_only_on_this_machine() {
        let cases = [
            ("127.0.0.1:4566", "127.0.0.1:4566", true),
            ("127.1.2.3:5000", "127.1.2.3:5000", true),
            ("localhost:5000", "localhost:5000", true),
            ("[::1]:5000", "[::1]:5000", true),
            ("http://127.0.0.1:4566/", "127.0.0.1:4566", true),
            ("https://127.0.0.1:5443", "127.0.0.1:5443", false),
            (
                "vpce-1.dkr.ecr.eu-west-2.vpce.amazonaws.com",
                "vpce-1.dkr.ecr.eu-west-2.vpce.amazonaws.com",
                false,
            ),
            (
                "https://mirror.example.com:8443",
                "mirror.example.com:8443",
                false,
            ),
            ("10.0.0.5:5000", "10.0.0.5:5000", false),
        ];
        for (text, host, plain_http) in cases {
            let endpoint = RegistryEndpoint::parse(text).unwrap();
            assert_eq!(endpoint.host(), host, "{text}");
            assert_eq!(endpoint.allows_plain_http(), plain_http, "{text}");
        }
    }

    #[test]
    fn plain_http_to_another_machine_is_refused() {
        for text in [
            "http://10.0.0.5:5000",
            "http://registry.example.com",
            "ftp://127.0.0.1",
            "",
            "127.0.0.1:5000/v2",
        ] {
            assert!(RegistryEndpoint::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn tags_follow_dockers_rule() {
        for tag in ["v1", "1.2.3", "sha-0123abc", "latest", "A_b-C.d"] {
            assert!(check_tag(tag).is_ok(), "{tag}");
        }
        let too_long = "a".repeat(129);
        for tag in [
            "",
            ".hidden",
            "-dash",
            "with space",
            "a/b",
            "a:b",
            too_long.as_str(),
        ] {
            assert!(check_tag(tag).is_err(), "{tag}");
        }
    }
}
