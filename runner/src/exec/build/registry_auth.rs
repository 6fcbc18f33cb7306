//! Registry credentials served to BuildKit in a build's session (`moby.filesync.v1.Auth`):
//! the ones the build was given by registry host, else whatever a [`CredentialLookup`] finds
//! (in a run, the Docker configuration's helpers and `auths`), else an anonymous pull. The
//! daemon fetches registry tokens itself with them.

use std::collections::HashMap;
use std::sync::Arc;

use bollard::grpc::build::moby::filesync::v1::auth_server::Auth;
use bollard::grpc::build::moby::filesync::v1::{
    CredentialsRequest, CredentialsResponse, FetchTokenRequest, FetchTokenResponse,
    GetTokenAuthorityRequest, GetTokenAuthorityResponse, VerifyTokenAuthorityRequest,
    VerifyTokenAuthorityResponse,
};
use tonic::{Request, Response, Status};

use crate::exec::docker_config::{IDENTITY_TOKEN_USER, registry_host};
use crate::exec::push::RegistryCredentials;
use crate::secret::Secret;

/// What the lookup of one registry host's credentials gives: credentials, `None` for an
/// anonymous pull, or why they could not be had (passed to the daemon, which fails the pull).
pub type LookupFuture =
    futures_util::future::BoxFuture<'static, Result<Option<RegistryCredentials>, String>>;

/// Asked for the credentials of a registry host the build was given none for.
#[derive(Clone)]
pub struct CredentialLookup(Arc<dyn Fn(String) -> LookupFuture + Send + Sync>);

impl CredentialLookup {
    pub fn new(lookup: impl Fn(String) -> LookupFuture + Send + Sync + 'static) -> Self {
        CredentialLookup(Arc::new(lookup))
    }
}

impl std::fmt::Debug for CredentialLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialLookup")
    }
}

/// The `Auth` service of one session.
pub(super) struct Credentials {
    known: Arc<HashMap<String, (String, Secret)>>,
    lookup: Option<CredentialLookup>,
}

impl Credentials {
    /// `known`: registry host to user and password; other hosts are asked of `lookup`.
    pub(super) fn new(
        known: HashMap<String, (String, Secret)>,
        lookup: Option<CredentialLookup>,
    ) -> Self {
        Credentials {
            known: Arc::new(known),
            lookup,
        }
    }
}

/// The answer for a user and password; an identity token goes without a user, as BuildKit
/// takes it.
fn answer(username: &str, password: &Secret) -> CredentialsResponse {
    CredentialsResponse {
        username: if username == IDENTITY_TOKEN_USER {
            String::new()
        } else {
            username.to_owned()
        },
        secret: password.expose().to_owned(),
    }
}

#[tonic::async_trait]
impl Auth for Credentials {
    async fn credentials(
        &self,
        request: Request<CredentialsRequest>,
    ) -> Result<Response<CredentialsResponse>, Status> {
        let host = registry_host(&request.get_ref().host);
        if let Some((username, password)) = self.known.get(&host) {
            return Ok(Response::new(answer(username, password)));
        }
        let Some(lookup) = &self.lookup else {
            // Anonymous access.
            return Ok(Response::new(CredentialsResponse::default()));
        };
        match (lookup.0)(host).await {
            Ok(Some(found)) => Ok(Response::new(answer(&found.username, &found.password))),
            Ok(None) => Ok(Response::new(CredentialsResponse::default())),
            Err(message) => Err(Status::unauthenticated(message)),
        }
    }

    // Only asked for when this side claims a token authority, which it does not: the daemon
    // then fetches registry tokens itself with the credentials above.
    async fn fetch_token(
        &self,
        _request: Request<FetchTokenRequest>,
    ) -> Result<Response<FetchTokenResponse>, Status> {
        Err(Status::unimplemented("tokens are fetched by the daemon"))
    }

    async fn get_token_authority(
        &self,
        _request: Request<GetTokenAuthorityRequest>,
    ) -> Result<Response<GetTokenAuthorityResponse>, Status> {
        Err(Status::unavailable("client-side tokens are not used"))
    }

    async fn verify_token_authority(
        &self,
        _request: Request<VerifyTokenAuthorityRequest>,
    ) -> Result<Response<VerifyTokenAuthorityResponse>, Status> {
        Err(Status::unavailable("client-side tokens are not used"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_credentials_by_host_then_from_the_lookup() {
        let credentials = Credentials::new(
            HashMap::from([(
                "127.0.0.1:5001".to_owned(),
                ("AWS".to_owned(), Secret::new("token")),
            )]),
            Some(CredentialLookup::new(|host| {
                Box::pin(async move {
                    match host.as_str() {
                        "ghcr.io" => Ok(None),
                        "private.example.com" => Ok(Some(RegistryCredentials {
                            server: host,
                            username: IDENTITY_TOKEN_USER.to_owned(),
                            password: Secret::new("refresh"),
                            expires_at: None,
                        })),
                        _ => Err(format!("the helper failed for {host}")),
                    }
                })
            })),
        );
        let known = credentials
            .credentials(Request::new(CredentialsRequest {
                host: "127.0.0.1:5001".to_owned(),
            }))
            .await
            .expect("answer");
        assert_eq!(known.get_ref().username, "AWS");
        assert_eq!(known.get_ref().secret, "token");
        let anonymous = credentials
            .credentials(Request::new(CredentialsRequest {
                host: "ghcr.io".to_owned(),
            }))
            .await
            .expect("answer");
        assert_eq!(anonymous.get_ref(), &CredentialsResponse::default());
        let looked_up = credentials
            .credentials(Request::new(CredentialsRequest {
                host: "private.example.com".to_owned(),
            }))
            .await
            .expect("answer");
        assert_eq!(
            looked_up.get_ref().username,
            "",
            "an identity token has no user"
        );
        assert_eq!(looked_up.get_ref().secret, "refresh");
        let failed = credentials
            .credentials(Request::new(CredentialsRequest {
                host: "broken.example.com".to_owned(),
            }))
            .await
            .expect_err("the lookup failed");
        assert_eq!(failed.message(), "the helper failed for broken.example.com");
    }
}
