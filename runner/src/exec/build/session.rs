//! The BuildKit session a build runs in: the channel through which the daemon asks the client
//! for the build context, secrets (`RUN --mount=type=secret`) and registry credentials
//! (`cache_from` pulls).
//!
//! The daemon opens it as an HTTP/2 *client* over our upgraded `/session` connection, so this
//! side serves gRPC: health, upload, secrets and auth, with the generated services bollard
//! ships (`bollard::grpc::build::*`). The context is streamed from disk on each pull, secrets
//! are served from memory and never touch the disk. Dropping the session closes the
//! connection, which ends it on the daemon.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bollard::grpc::build::health::health_server::{Health, HealthServer};
use bollard::grpc::build::health::{
    HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse,
};
use bollard::grpc::build::moby::buildkit::secrets::v1::secrets_server::{Secrets, SecretsServer};
use bollard::grpc::build::moby::buildkit::secrets::v1::{GetSecretRequest, GetSecretResponse};
use bollard::grpc::build::moby::filesync::v1::auth_server::{Auth, AuthServer};
use bollard::grpc::build::moby::filesync::v1::{
    CredentialsRequest, CredentialsResponse, FetchTokenRequest, FetchTokenResponse,
    GetTokenAuthorityRequest, GetTokenAuthorityResponse, VerifyTokenAuthorityRequest,
    VerifyTokenAuthorityResponse,
};
use bollard::grpc::build::moby::upload::v1::BytesMessage;
use bollard::grpc::build::moby::upload::v1::upload_server::{Upload, UploadServer};
use futures_util::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::context::{BuildContext, ContextSummary, WalkError};
use super::daemon::{ConnectError, DaemonEndpoint};
use crate::secret::Secret;

/// The gRPC methods this side serves, announced to the daemon when the session opens.
const METHODS: &[&str] = &[
    "/grpc.health.v1.Health/Check",
    "/moby.upload.v1.Upload/Pull",
    "/moby.buildkit.secrets.v1.Secrets/GetSecret",
    "/moby.filesync.v1.Auth/Credentials",
    "/moby.filesync.v1.Auth/FetchToken",
    "/moby.filesync.v1.Auth/GetTokenAuthority",
    "/moby.filesync.v1.Auth/VerifyTokenAuthority",
];

/// How the last upload of the context ended, if one did.
type UploadOutcome = Arc<Mutex<Option<Result<ContextSummary, WalkError>>>>;

/// An open session; the build refers to it by [`Session::id`] and to its context by
/// [`Session::context_url`].
pub(crate) struct Session {
    id: String,
    server: tokio::task::JoinHandle<()>,
    upload: UploadOutcome,
}

impl Session {
    /// Opens a session on the daemon at `endpoint`, serving `context`, `secrets` (id to value)
    /// and `credentials` (registry host to user and password).
    pub(crate) async fn open(
        endpoint: &DaemonEndpoint,
        name: &str,
        context: Arc<BuildContext>,
        secrets: HashMap<String, Secret>,
        credentials: HashMap<String, (String, Secret)>,
    ) -> Result<Session, ConnectError> {
        // The daemon refuses an id it still knows, so every session gets a fresh one.
        let id = ulid::Ulid::new().to_string().to_lowercase();
        let mut headers = vec![
            ("X-Docker-Expose-Session-Uuid", id.clone()),
            ("X-Docker-Expose-Session-Name", name.to_owned()),
            ("X-Docker-Expose-Session-Sharedkey", String::new()),
        ];
        headers.extend(
            METHODS
                .iter()
                .map(|method| ("X-Docker-Expose-Session-Grpc-Method", (*method).to_owned())),
        );
        let connection = endpoint.upgrade("/session", &headers).await?;
        let upload = UploadOutcome::default();
        let routes = tonic::service::Routes::new(HealthServer::new(Healthy))
            .add_service(UploadServer::new(ContextUpload {
                path: context_path(&id),
                context,
                outcome: Arc::clone(&upload),
            }))
            .add_service(SecretsServer::new(SecretStore(Arc::new(secrets))))
            .add_service(AuthServer::new(Credentials(Arc::new(credentials))))
            .prepare();
        let server = tokio::spawn(async move {
            let service = hyper_util::service::TowerToHyperService::new(routes);
            let served =
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(connection, service)
                    .await;
            if let Err(error) = served {
                tracing::debug!(%error, "BuildKit session connection ended");
            }
        });
        Ok(Session { id, server, upload })
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The build context's address: BuildKit's HTTP source fetches `buildkit-session` URLs
    /// through the session's upload service.
    pub(crate) fn context_url(&self) -> String {
        format!("http://buildkit-session{}", context_path(&self.id))
    }

    /// How the last upload of the context ended (`None`: the daemon never asked for it).
    pub(crate) fn upload_outcome(&self) -> Option<Result<ContextSummary, WalkError>> {
        self.upload.lock().ok()?.take()
    }
}

fn context_path(session: &str) -> String {
    format!("/{session}/context")
}

impl Drop for Session {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct Healthy;

#[tonic::async_trait]
impl Health for Healthy {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse {
            status: bollard::grpc::build::health::health_check_response::ServingStatus::Serving
                as i32,
        }))
    }

    async fn list(
        &self,
        _request: Request<HealthListRequest>,
    ) -> Result<Response<HealthListResponse>, Status> {
        Err(Status::unimplemented("health list is not served"))
    }

    type WatchStream = futures_util::stream::Empty<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("health watch is not served"))
    }
}

/// Serves the build context as a tar, walking the tree on each pull.
struct ContextUpload {
    path: String,
    context: Arc<BuildContext>,
    outcome: UploadOutcome,
}

#[tonic::async_trait]
impl Upload for ContextUpload {
    type PullStream = futures_util::stream::BoxStream<'static, Result<BytesMessage, Status>>;

    async fn pull(
        &self,
        request: Request<Streaming<BytesMessage>>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let path = request
            .metadata()
            .get("urlpath")
            .and_then(|value| value.to_str().ok());
        if path != Some(self.path.as_str()) {
            return Err(Status::not_found("no such upload in this session"));
        }
        let outcome = Arc::clone(&self.outcome);
        let stream = self.context.stream(move |result| {
            if let Ok(mut outcome) = outcome.lock() {
                *outcome = Some(result);
            }
        });
        let messages = stream.map(|chunk| match chunk {
            Ok(bytes) => Ok(BytesMessage {
                data: bytes.to_vec(),
            }),
            Err(error) => Err(Status::data_loss(format!(
                "reading the build context failed: {error}"
            ))),
        });
        Ok(Response::new(messages.boxed()))
    }
}

struct SecretStore(Arc<HashMap<String, Secret>>);

#[tonic::async_trait]
impl Secrets for SecretStore {
    async fn get_secret(
        &self,
        request: Request<GetSecretRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        let id = &request.get_ref().id;
        match self.0.get(id) {
            Some(secret) => Ok(Response::new(GetSecretResponse {
                data: secret.expose().as_bytes().to_vec(),
            })),
            None => Err(Status::not_found(format!(
                "the build was given no secret with id `{id}`"
            ))),
        }
    }
}

struct Credentials(Arc<HashMap<String, (String, Secret)>>);

#[tonic::async_trait]
impl Auth for Credentials {
    async fn credentials(
        &self,
        request: Request<CredentialsRequest>,
    ) -> Result<Response<CredentialsResponse>, Status> {
        let host = registry_host(&request.get_ref().host);
        let response = match self.0.get(&host) {
            Some((username, password)) => CredentialsResponse {
                username: username.clone(),
                secret: password.expose().to_owned(),
            },
            // Anonymous access.
            None => CredentialsResponse::default(),
        };
        Ok(Response::new(response))
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

/// The host key the daemon asks credentials for: `registry.example.com[:port]`, with Docker
/// Hub's aliases folded into the host its registry answers on.
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

    #[test]
    fn registry_hosts_are_normalised() {
        for (server, host) in [
            ("127.0.0.1:5001", "127.0.0.1:5001"),
            (
                "https://123456789012.dkr.ecr.eu-west-2.amazonaws.com",
                "123456789012.dkr.ecr.eu-west-2.amazonaws.com",
            ),
            ("https://index.docker.io/v1/", "registry-1.docker.io"),
            ("docker.io", "registry-1.docker.io"),
            ("ghcr.io/owner/image", "ghcr.io"),
        ] {
            assert_eq!(registry_host(server), host, "{server}");
        }
    }

    #[tokio::test]
    async fn serves_secrets_by_id_and_credentials_by_host() {
        let store = SecretStore(Arc::new(HashMap::from([(
            "token".to_owned(),
            Secret::new("hunter2"),
        )])));
        let found = store
            .get_secret(Request::new(GetSecretRequest {
                id: "token".to_owned(),
                ..GetSecretRequest::default()
            }))
            .await
            .expect("known secret");
        assert_eq!(found.get_ref().data, b"hunter2");
        let missing = store
            .get_secret(Request::new(GetSecretRequest {
                id: "other".to_owned(),
                ..GetSecretRequest::default()
            }))
            .await
            .expect_err("unknown secret");
        assert_eq!(missing.code(), tonic::Code::NotFound);

        let credentials = Credentials(Arc::new(HashMap::from([(
            "127.0.0.1:5001".to_owned(),
            ("AWS".to_owned(), Secret::new("token")),
        )])));
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
    }
}
