//! Which Docker daemon to use and how to reach it, decided as the Docker CLI decides, for the
//! runner and the agent alike:
//!
//! 1. `DOCKER_HOST` (`unix://`, `tcp://`, `https://`), with TLS when `DOCKER_TLS_VERIFY` is
//!    set (or the scheme is `https://`): `ca.pem`, `cert.pem` and `key.pem` from
//!    `DOCKER_CERT_PATH`, else the Docker configuration directory (`~/.docker`);
//! 2. else the Docker context named by `DOCKER_CONTEXT`, else `currentContext` in
//!    `config.json` ([`context`]): its endpoint's host, with TLS when the context has TLS
//!    material; the context `default` is the local socket;
//! 3. else the local socket.
//!
//! TLS uses rustls with the aws-lc-rs provider (the one provider of the whole program), the
//! given CA as the only trusted root and the client certificate. A context that skips TLS
//! verification is refused rather than silently trusted.

mod context;
mod tls;

use std::fmt;
use std::path::PathBuf;

use crate::exec::docker_config::{DockerConfig, DockerConfigError};

pub use tls::TlsFiles;
pub(crate) use tls::client_config;

/// bollard's request timeout, in seconds (its own default).
const REQUEST_TIMEOUT_SECONDS: u64 = 120;

/// The Docker variables of an environment (empty values count as unset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerEnvironment {
    pub host: Option<String>,
    pub tls_verify: Option<String>,
    pub cert_path: Option<String>,
    pub context: Option<String>,
}

impl DockerEnvironment {
    /// This process's `DOCKER_HOST`, `DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH`, `DOCKER_CONTEXT`.
    pub fn from_process() -> DockerEnvironment {
        let var = |name| std::env::var(name).ok().filter(|value| !value.is_empty());
        DockerEnvironment {
            host: var("DOCKER_HOST"),
            tls_verify: var("DOCKER_TLS_VERIFY"),
            cert_path: var("DOCKER_CERT_PATH"),
            context: var("DOCKER_CONTEXT"),
        }
    }
}

/// How the daemon is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// The local socket (`/var/run/docker.sock`).
    Local,
    /// `unix://PATH` or plain `tcp://HOST:PORT`, as written.
    Plain(String),
    /// `HOST:PORT` over TLS with these files.
    Tls { address: String, files: TlsFiles },
}

/// What decided the daemon, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Nothing: the local socket.
    Default,
    /// `DOCKER_HOST`.
    Environment,
    /// A Docker context and what named it (`DOCKER_CONTEXT` or `currentContext`).
    Context { name: String, named_by: String },
}

/// The daemon to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerTarget {
    pub transport: Transport,
    pub origin: Origin,
}

impl fmt::Display for DockerTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.transport {
            Transport::Local => f.write_str("unix:///var/run/docker.sock")?,
            Transport::Plain(host) => f.write_str(host)?,
            Transport::Tls { address, .. } => write!(f, "tcp://{address} (TLS)")?,
        }
        match &self.origin {
            Origin::Default => Ok(()),
            Origin::Environment => f.write_str(" from DOCKER_HOST"),
            Origin::Context { name, named_by } => {
                write!(f, " from Docker context `{name}` (named by {named_by})")
            }
        }
    }
}

/// A daemon that cannot be chosen or connected to.
#[derive(Debug, thiserror::Error)]
pub enum DockerHostError {
    #[error(transparent)]
    Config(#[from] DockerConfigError),
    #[error(
        "the Docker host `{host}` ({origin}) cannot be used: only unix://, tcp:// and https:// \
         are supported; point it at a daemon's socket or TCP port"
    )]
    Scheme { host: String, origin: String },
    #[error(
        "the Docker context `{name}` (named by {named_by}) does not exist: there is no {path}; \
         create it with `docker context create`, or name another context"
    )]
    ContextMissing {
        name: String,
        named_by: String,
        path: PathBuf,
    },
    #[error("the Docker context `{name}` cannot be read from {path}: {detail}")]
    ContextInvalid {
        name: String,
        path: PathBuf,
        detail: String,
    },
    #[error(
        "the Docker context `{name}` skips TLS verification (SkipTLSVerify), which this runner \
         does not do; give the context the daemon's CA (`docker context update {name} \
         --docker \"host=...,ca=...,cert=...,key=...\"`)"
    )]
    SkipTlsVerify { name: String },
    #[error(
        "cannot connect to the Docker daemon at {target} over TLS: {file} is missing; put the \
         daemon's CA and your client certificate and key there as ca.pem, cert.pem and key.pem"
    )]
    TlsFileMissing { target: String, file: PathBuf },
    #[error("cannot connect to the Docker daemon at {target}: {detail}")]
    Connect { target: String, detail: String },
}

/// The daemon `env` and `config` name. Reads a context's files, nothing else.
pub fn resolve(
    env: &DockerEnvironment,
    config: &DockerConfig,
) -> Result<DockerTarget, DockerHostError> {
    if let Some(host) = &env.host {
        let tls = (env.tls_verify.is_some() || host.starts_with("https://")).then(|| {
            let dir = env
                .cert_path
                .as_ref()
                .map(PathBuf::from)
                .unwrap_or_else(|| config.dir().to_path_buf());
            TlsFiles::in_dir(&dir)
        });
        return Ok(DockerTarget {
            transport: transport(host, tls, "DOCKER_HOST")?,
            origin: Origin::Environment,
        });
    }
    let named = match (&env.context, config.current_context()) {
        (Some(name), _) => Some((name.clone(), "DOCKER_CONTEXT".to_owned())),
        (None, Some(name)) => Some((
            name.to_owned(),
            format!(
                "currentContext in {}",
                config.dir().join("config.json").display()
            ),
        )),
        (None, None) => None,
    };
    let Some((name, named_by)) = named.filter(|(name, _)| name != "default") else {
        return Ok(DockerTarget {
            transport: Transport::Local,
            origin: Origin::Default,
        });
    };
    let endpoint = context::read(config.dir(), &name).map_err(|problem| match problem {
        context::ContextProblem::Missing(path) => DockerHostError::ContextMissing {
            name: name.clone(),
            named_by: named_by.clone(),
            path,
        },
        context::ContextProblem::Invalid(path, detail) => DockerHostError::ContextInvalid {
            name: name.clone(),
            path,
            detail,
        },
    })?;
    let tls = endpoint.tls_dir.as_deref().map(TlsFiles::in_dir);
    if endpoint.skip_tls_verify && (tls.is_some() || endpoint.host.starts_with("https://")) {
        return Err(DockerHostError::SkipTlsVerify { name });
    }
    let origin = format!("Docker context `{name}`");
    Ok(DockerTarget {
        transport: transport(&endpoint.host, tls, &origin)?,
        origin: Origin::Context { name, named_by },
    })
}

/// The transport for `host`, over TLS with `tls` when given (and for `https://`).
fn transport(
    host: &str,
    tls: Option<TlsFiles>,
    origin: &str,
) -> Result<Transport, DockerHostError> {
    let scheme_error = || DockerHostError::Scheme {
        host: host.to_owned(),
        origin: origin.to_owned(),
    };
    if host.starts_with("unix://") {
        return Ok(Transport::Plain(host.to_owned()));
    }
    let address = ["tcp://", "http://", "https://"]
        .iter()
        .find_map(|scheme| host.strip_prefix(scheme))
        .ok_or_else(scheme_error)?
        .trim_end_matches('/');
    match tls {
        Some(files) => Ok(Transport::Tls {
            address: address.to_owned(),
            files,
        }),
        None if host.starts_with("https://") => Err(scheme_error()),
        None => Ok(Transport::Plain(host.to_owned())),
    }
}

/// Connects a client to `target` (no request is made yet).
pub fn connect(target: &DockerTarget) -> Result<bollard::Docker, DockerHostError> {
    let failed = |error: bollard::errors::Error| DockerHostError::Connect {
        target: target.to_string(),
        detail: crate::error_chain(&error),
    };
    match &target.transport {
        Transport::Local => bollard::Docker::connect_with_local_defaults().map_err(failed),
        Transport::Plain(host) if host.starts_with("unix://") => {
            bollard::Docker::connect_with_unix(
                host,
                REQUEST_TIMEOUT_SECONDS,
                bollard::API_DEFAULT_VERSION,
            )
            .map_err(failed)
        }
        Transport::Plain(host) => bollard::Docker::connect_with_http(
            host,
            REQUEST_TIMEOUT_SECONDS,
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(failed),
        Transport::Tls { address, files } => {
            files
                .check()
                .map_err(|file| DockerHostError::TlsFileMissing {
                    target: target.to_string(),
                    file,
                })?;
            tls::install_provider();
            bollard::Docker::connect_with_ssl(
                &format!("tcp://{address}"),
                &files.key,
                &files.cert,
                &files.ca,
                REQUEST_TIMEOUT_SECONDS,
                bollard::API_DEFAULT_VERSION,
            )
            .map_err(failed)
        }
    }
}

/// The daemon this process's environment names, and a client connected to it.
pub fn from_environment() -> Result<(bollard::Docker, DockerTarget), DockerHostError> {
    let config = DockerConfig::from_environment()?;
    let target = resolve(&DockerEnvironment::from_process(), &config)?;
    Ok((connect(&target)?, target))
}

#[cfg(test)]
mod tests;
