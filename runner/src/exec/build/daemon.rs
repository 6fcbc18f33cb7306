//! A raw HTTP connection to the Docker daemon that bollard's client is connected to, for the one
//! request bollard cannot make for us: the `/session` upgrade over which we serve BuildKit the
//! build context, secrets and registry credentials.
//!
//! bollard keeps the daemon's address crate-private and exposes it only through its `Debug`
//! output, so it is read from there. The unit tests below pin that format: a bollard upgrade
//! that changes it fails them rather than builds.

use std::path::PathBuf;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DaemonEndpoint {
    Unix(PathBuf),
    /// `host:port` of a plain-HTTP daemon.
    Tcp(String),
}

/// Why no raw connection could be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error(
        "builds need a Docker daemon reached over a Unix socket or plain TCP (DOCKER_HOST=unix://... \
         or tcp://...), but the Docker client is connected another way ({0})"
    )]
    Unsupported(String),
    #[error("cannot connect to the Docker daemon at {endpoint}: {source}")]
    Io {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("the Docker daemon at {endpoint} refused the {path} upgrade: {detail}")]
    Refused {
        endpoint: String,
        path: &'static str,
        detail: String,
    },
}

impl std::fmt::Display for DaemonEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DaemonEndpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            DaemonEndpoint::Tcp(address) => write!(f, "tcp://{address}"),
        }
    }
}

impl DaemonEndpoint {
    /// The endpoint `docker` talks to.
    pub(crate) fn of(docker: &bollard::Docker) -> Result<Self, ConnectError> {
        Self::from_debug(&format!("{docker:?}"))
    }

    fn from_debug(debug: &str) -> Result<Self, ConnectError> {
        let unsupported =
            || ConnectError::Unsupported(debug_field(debug, "client_type: ").unwrap_or_default());
        let client_type = debug_field(debug, "client_type: ").ok_or_else(unsupported)?;
        let address = quoted_field(debug, "client_addr: ").ok_or_else(unsupported)?;
        match client_type.as_str() {
            "Unix" => Ok(DaemonEndpoint::Unix(PathBuf::from(address))),
            "Http" => Ok(DaemonEndpoint::Tcp(address)),
            _ => Err(unsupported()),
        }
    }

    /// POSTs `path` with `Upgrade: h2c` and the given headers, and returns the upgraded
    /// connection.
    pub(crate) async fn upgrade(
        &self,
        path: &'static str,
        headers: &[(&str, String)],
    ) -> Result<Upgraded, ConnectError> {
        let io_error = |source| ConnectError::Io {
            endpoint: self.to_string(),
            source,
        };
        let result = match self {
            DaemonEndpoint::Unix(socket) => {
                let stream = tokio::net::UnixStream::connect(socket)
                    .await
                    .map_err(io_error)?;
                send_upgrade(TokioIo::new(stream), path, headers).await
            }
            DaemonEndpoint::Tcp(address) => {
                let stream = tokio::net::TcpStream::connect(address)
                    .await
                    .map_err(io_error)?;
                send_upgrade(TokioIo::new(stream), path, headers).await
            }
        };
        result.map_err(|detail| ConnectError::Refused {
            endpoint: self.to_string(),
            path,
            detail,
        })
    }
}

async fn send_upgrade<IO>(
    io: IO,
    path: &str,
    headers: &[(&str, String)],
) -> Result<Upgraded, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|error| error.to_string())?;
    // Drives the connection until the upgrade hands it over.
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    let mut request = hyper::Request::post(path)
        .header(hyper::header::HOST, "docker")
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(hyper::header::UPGRADE, "h2c");
    for (name, value) in headers {
        request = request.header(*name, value.as_str());
    }
    let request = request
        .body(String::new())
        .map_err(|error| error.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| error.to_string())?;
    if response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
        return Err(format!("HTTP {}", response.status()));
    }
    hyper::upgrade::on(response)
        .await
        .map_err(|error| error.to_string())
}

/// The identifier after `name` in a `Debug` rendering, up to the next `,` or ` `.
fn debug_field(debug: &str, name: &str) -> Option<String> {
    let start = debug.find(name)? + name.len();
    let rest = &debug[start..];
    let end = rest.find([',', ' ', '}']).unwrap_or(rest.len());
    Some(rest[..end].to_owned())
}

/// The string after `name` in a `Debug` rendering, unescaped.
fn quoted_field(debug: &str, name: &str) -> Option<String> {
    let start = debug.find(name)? + name.len();
    let mut chars = debug[start..].chars();
    if chars.next()? != '"' {
        return None;
    }
    let mut value = String::new();
    loop {
        match chars.next()? {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                ch @ ('"' | '\\' | '\'') => value.push(ch),
                // Other escapes (control characters) do not occur in a socket path or address.
                _ => return None,
            },
            ch => value.push(ch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_address_bollard_connected_to() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("docker \"test\".sock");
        std::fs::write(&socket, "").expect("socket stand-in");
        let unix = bollard::Docker::connect_with_unix(
            &format!("unix://{}", socket.display()),
            120,
            bollard::API_DEFAULT_VERSION,
        )
        .expect("unix client");
        assert_eq!(
            DaemonEndpoint::of(&unix).expect("unix endpoint"),
            DaemonEndpoint::Unix(socket)
        );
        let http = bollard::Docker::connect_with_http(
            "tcp://127.0.0.1:2375",
            120,
            bollard::API_DEFAULT_VERSION,
        )
        .expect("http client");
        assert_eq!(
            DaemonEndpoint::of(&http).expect("tcp endpoint"),
            DaemonEndpoint::Tcp("127.0.0.1:2375".to_owned())
        );
    }

    #[test]
    fn refuses_other_transports() {
        let error = DaemonEndpoint::from_debug(
            "Docker { transport: X, client_type: SSL, client_addr: \"host:2376\" }",
        )
        .expect_err("ssl is not supported");
        assert!(error.to_string().contains("(SSL)"), "{error}");
    }
}
