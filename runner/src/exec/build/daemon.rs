//! A raw HTTP connection to the Docker daemon that bollard's client is connected to, for the one
//! request bollard cannot make for us: the `/session` upgrade over which we serve BuildKit the
//! build context, secrets and registry credentials.
//!
//! bollard keeps the daemon's address crate-private and exposes it only through its `Debug`
//! output, so it is read from there. The unit tests below pin that format: a bollard upgrade
//! that changes it fails them rather than builds. A daemon reached over TLS is connected to
//! with the same files bollard's client was given ([`TlsFiles`]), through rustls.

use std::path::PathBuf;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;

use crate::exec::docker_host::{TlsFiles, client_config};

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DaemonEndpoint {
    Unix(PathBuf),
    /// `host:port` of a plain-HTTP daemon.
    Tcp(String),
    /// `host:port` of a daemon reached over TLS, and the files to reach it with.
    Tls {
        address: String,
        files: TlsFiles,
    },
}

/// Why no raw connection could be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error(
        "builds need a Docker daemon reached over a Unix socket, plain TCP or TCP with TLS files \
         (DOCKER_HOST=unix://... or tcp://..., DOCKER_TLS_VERIFY, DOCKER_CERT_PATH, or a Docker \
         context), but the Docker client is connected another way ({0})"
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
            DaemonEndpoint::Tls { address, .. } => write!(f, "tcp://{address} (TLS)"),
        }
    }
}

impl DaemonEndpoint {
    /// The endpoint `docker` talks to; `tls` are the files it was connected with over TLS.
    pub(crate) fn of(
        docker: &bollard::Docker,
        tls: Option<&TlsFiles>,
    ) -> Result<Self, ConnectError> {
        Self::from_debug(&format!("{docker:?}"), tls)
    }

    fn from_debug(debug: &str, tls: Option<&TlsFiles>) -> Result<Self, ConnectError> {
        let unsupported =
            || ConnectError::Unsupported(debug_field(debug, "client_type: ").unwrap_or_default());
        let client_type = debug_field(debug, "client_type: ").ok_or_else(unsupported)?;
        let address = quoted_field(debug, "client_addr: ").ok_or_else(unsupported)?;
        match client_type.as_str() {
            "Unix" => Ok(DaemonEndpoint::Unix(PathBuf::from(address))),
            "Http" => Ok(DaemonEndpoint::Tcp(address)),
            "SSL" => match tls {
                Some(files) => Ok(DaemonEndpoint::Tls {
                    address,
                    files: files.clone(),
                }),
                None => Err(unsupported()),
            },
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
            DaemonEndpoint::Tls { address, files } => {
                let config = client_config(files).map_err(|detail| ConnectError::Io {
                    endpoint: self.to_string(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidInput, detail),
                })?;
                let name = server_name(address).map_err(io_error)?;
                let stream = tokio::net::TcpStream::connect(address)
                    .await
                    .map_err(io_error)?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, stream)
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

/// The name the daemon's certificate must carry: the host of `host:port` (an address or a
/// DNS name).
fn server_name(address: &str) -> Result<rustls::pki_types::ServerName<'static>, std::io::Error> {
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => address,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|error| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("`{host}` is not a host name or address: {error}"),
        )
    })
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
            DaemonEndpoint::of(&unix, None).expect("unix endpoint"),
            DaemonEndpoint::Unix(socket)
        );
        let http = bollard::Docker::connect_with_http(
            "tcp://127.0.0.1:2375",
            120,
            bollard::API_DEFAULT_VERSION,
        )
        .expect("http client");
        assert_eq!(
            DaemonEndpoint::of(&http, None).expect("tcp endpoint"),
            DaemonEndpoint::Tcp("127.0.0.1:2375".to_owned())
        );
    }

    #[test]
    fn tls_needs_the_files_the_client_was_connected_with() {
        let debug = "Docker { transport: X, client_type: SSL, client_addr: \"host:2376\" }";
        let error = DaemonEndpoint::from_debug(debug, None).expect_err("no files");
        assert!(error.to_string().contains("(SSL)"), "{error}");
        let files = TlsFiles::in_dir(std::path::Path::new("/certs"));
        assert_eq!(
            DaemonEndpoint::from_debug(debug, Some(&files)).expect("tls endpoint"),
            DaemonEndpoint::Tls {
                address: "host:2376".to_owned(),
                files,
            }
        );
        for (address, name) in [
            ("127.0.0.1:2376", "127.0.0.1"),
            ("docker.example.com:2376", "docker.example.com"),
            ("[::1]:2376", "::1"),
        ] {
            let expected =
                rustls::pki_types::ServerName::try_from(name.to_owned()).expect("valid name");
            assert_eq!(server_name(address).expect(address), expected, "{address}");
        }
    }
}
