//! Asking the registry itself (with oci-client, not through the daemon) which digest each
//! pushed tag resolves to.

use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::RegistryCredentials;
use super::error::{FailureKind, classify};
use super::reference::RegistryEndpoint;
use crate::error_chain;

/// An oci-client for one registry endpoint: plain HTTP only when the endpoint allows it.
pub(crate) fn registry_client(endpoint: &RegistryEndpoint) -> Client {
    let protocol = if endpoint.allows_plain_http() {
        ClientProtocol::HttpsExcept(vec![endpoint.host().to_string()])
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(60)),
        ..ClientConfig::default()
    })
}

pub(crate) fn registry_auth(credentials: Option<&RegistryCredentials>) -> RegistryAuth {
    match credentials {
        Some(credentials) => RegistryAuth::Basic(
            credentials.username.clone(),
            credentials.password.expose().to_string(),
        ),
        None => RegistryAuth::Anonymous,
    }
}

/// The digest `tag` resolves to: a manifest HEAD (`Docker-Content-Digest`), or a GET and a
/// hash of the body when the registry sends no such header.
pub(crate) async fn fetch_tag_digest(
    client: &Client,
    endpoint: &RegistryEndpoint,
    path: &str,
    tag: &str,
    auth: &RegistryAuth,
) -> Result<String, (FailureKind, String)> {
    let reference = Reference::with_tag(
        endpoint.host().to_string(),
        path.to_string(),
        tag.to_string(),
    );
    client
        .fetch_manifest_digest(&reference, auth)
        .await
        .map_err(|error| describe(&error))
}

/// A failure kind and a one-line description of an oci-client error.
pub(super) fn describe(error: &OciDistributionError) -> (FailureKind, String) {
    match error {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => (
            FailureKind::AuthRefused,
            "authentication required".to_string(),
        ),
        OciDistributionError::ServerError { code, message, .. } => {
            let kind = if *code >= 500 || *code == 429 {
                FailureKind::ServerFailure
            } else {
                classify(message)
            };
            (kind, format!("HTTP {code}: {}", message.trim()))
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let text = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}: {}", e.code, e.message))
                .collect::<Vec<_>>()
                .join("; ");
            (classify(&text), text)
        }
        OciDistributionError::RequestError(request) => {
            let chain = error_chain(request);
            let kind = if request.is_connect() {
                match classify(&chain) {
                    FailureKind::Interrupted => FailureKind::Interrupted,
                    _ => FailureKind::Unreachable,
                }
            } else if request.is_timeout() {
                FailureKind::Interrupted
            } else {
                match classify(&chain) {
                    FailureKind::Other => FailureKind::Interrupted,
                    kind => kind,
                }
            };
            (kind, chain)
        }
        other => (FailureKind::Other, other.to_string()),
    }
}
