//! The BuildKit session a build runs in: the channel through which the daemon asks the client
//! for the build context and the Dockerfile, secrets (`RUN --mount=type=secret`) and registry
//! credentials (`cache_from` pulls).
//!
//! The daemon opens it as an HTTP/2 *client* over our upgraded `/session` connection, so this
//! side serves gRPC: health, file sync, secrets and auth, with the generated services bollard
//! ships (`bollard::grpc::build::*`). Files are read from disk when the daemon asks for them
//! ([`context`](super::context) says which), secrets are served from memory and never touch
//! the disk. Dropping the session closes the connection, which ends it on the daemon.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bollard::grpc::build::fsutil::types::Packet;
use bollard::grpc::build::fsutil::types::packet::PacketType;
use bollard::grpc::build::health::health_server::{Health, HealthServer};
use bollard::grpc::build::health::{
    HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse,
};
use bollard::grpc::build::moby::buildkit::secrets::v1::secrets_server::{Secrets, SecretsServer};
use bollard::grpc::build::moby::buildkit::secrets::v1::{GetSecretRequest, GetSecretResponse};
use bollard::grpc::build::moby::filesync::packet::file_sync_server::{FileSync, FileSyncServer};
use bollard::grpc::build::moby::filesync::v1::auth_server::AuthServer;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use super::context::{BuildContext, ContextSummary, Entry, PullFilter, WalkError};
use super::daemon::{ConnectError, DaemonEndpoint};
use super::registry_auth::{CredentialLookup, Credentials};
pub(crate) use crate::exec::docker_config::registry_host;
use crate::secret::Secret;

/// The gRPC methods this side serves, announced to the daemon when the session opens.
const METHODS: &[&str] = &[
    "/grpc.health.v1.Health/Check",
    "/moby.filesync.v1.FileSync/DiffCopy",
    "/moby.buildkit.secrets.v1.Secrets/GetSecret",
    "/moby.filesync.v1.Auth/Credentials",
    "/moby.filesync.v1.Auth/FetchToken",
    "/moby.filesync.v1.Auth/GetTokenAuthority",
    "/moby.filesync.v1.Auth/VerifyTokenAuthority",
];

/// Why a transfer ended early when the daemon went away.
const STOPPED_READING: &str = "the daemon stopped reading the build context";

/// The bytes of a file travel in packets of this size, as fsutil sends them.
const DATA_PACKET_BYTES: usize = 32 * 1024;

/// How the pulls of the context went: what was sent, or the first failure.
type UploadOutcome = Arc<Mutex<Option<Result<ContextSummary, WalkError>>>>;

/// An open session; the build refers to it by [`Session::id`].
pub(crate) struct Session {
    id: String,
    server: tokio::task::JoinHandle<()>,
    upload: UploadOutcome,
}

impl Session {
    /// Opens a session on the daemon at `endpoint`, serving `context`, `secrets` (id to value)
    /// and `credentials` (registry host to user and password; other hosts are asked of
    /// `lookup`). `shared_key` names the context
    /// directory across sessions: the daemon keeps its copy of a directory under that key and
    /// the next build's pull only sends what changed.
    pub(crate) async fn open(
        endpoint: &DaemonEndpoint,
        name: &str,
        shared_key: &str,
        context: Arc<BuildContext>,
        secrets: HashMap<String, Secret>,
        credentials: HashMap<String, (String, Secret)>,
        lookup: Option<CredentialLookup>,
    ) -> Result<Session, ConnectError> {
        // The daemon refuses an id it still knows, so every session gets a fresh one.
        let id = ulid::Ulid::new().to_string().to_lowercase();
        let mut headers = vec![
            ("X-Docker-Expose-Session-Uuid", id.clone()),
            ("X-Docker-Expose-Session-Name", name.to_owned()),
            ("X-Docker-Expose-Session-Sharedkey", shared_key.to_owned()),
        ];
        headers.extend(
            METHODS
                .iter()
                .map(|method| ("X-Docker-Expose-Session-Grpc-Method", (*method).to_owned())),
        );
        let connection = endpoint.upgrade("/session", &headers).await?;
        let upload = UploadOutcome::default();
        let routes = tonic::service::Routes::new(HealthServer::new(Healthy))
            .add_service(FileSyncServer::new(ContextSync {
                context,
                outcome: Arc::clone(&upload),
            }))
            .add_service(SecretsServer::new(SecretStore(Arc::new(secrets))))
            .add_service(AuthServer::new(Credentials::new(credentials, lookup)))
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

    /// What the daemon pulled, or the first failure (`None`: it never asked).
    pub(crate) fn upload_outcome(&self) -> Option<Result<ContextSummary, WalkError>> {
        self.upload.lock().ok()?.take()
    }
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

/// Serves the context and the Dockerfile's directory with fsutil's `DiffCopy` protocol: this
/// side sends a stat per entry and then an empty stat; the daemon asks for the files it lacks
/// by their index among the stats (`REQ`), each answered with `DATA` packets and an empty one;
/// the daemon's `FIN` is answered with a `FIN`, which ends the pull.
struct ContextSync {
    context: Arc<BuildContext>,
    outcome: UploadOutcome,
}

#[tonic::async_trait]
impl FileSync for ContextSync {
    type DiffCopyStream = futures_util::stream::BoxStream<'static, Result<Packet, Status>>;

    async fn diff_copy(
        &self,
        request: Request<Streaming<Packet>>,
    ) -> Result<Response<Self::DiffCopyStream>, Status> {
        let (dir_name, filter) = pull_request(request.metadata());
        let Some(dir) = self.context.synced_dir(&dir_name) else {
            return Err(Status::invalid_argument(format!(
                "this build serves no directory named `{dir_name}`"
            )));
        };
        let incoming = request.into_inner();
        let (sender, receiver) = mpsc::channel(16);
        let outcome = Arc::clone(&self.outcome);
        tokio::spawn(async move {
            let walked = tokio::task::spawn_blocking(move || dir.walk(&filter)).await;
            let result = match walked {
                Ok(Ok(entries)) => send(entries, incoming, &sender).await,
                Ok(Err(error)) => Err(error),
                Err(panicked) => Err(WalkError {
                    path: std::path::PathBuf::from(&dir_name),
                    source: std::io::Error::other(panicked.to_string()),
                }),
            };
            if let Err(error) = &result {
                let message = format!("{}: {}", error.path.display(), error.source);
                let _ = sender
                    .send(Ok(Packet {
                        r#type: PacketType::PacketErr.into(),
                        data: message.clone().into_bytes(),
                        ..Packet::default()
                    }))
                    .await;
                let _ = sender.send(Err(Status::data_loss(message))).await;
            }
            record(&outcome, result);
        });
        let packets = futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        });
        Ok(Response::new(packets.boxed()))
    }

    type TarStreamStream = futures_util::stream::Empty<Result<Packet, Status>>;

    async fn tar_stream(
        &self,
        _request: Request<Streaming<Packet>>,
    ) -> Result<Response<Self::TarStreamStream>, Status> {
        Err(Status::unimplemented("the context is served with DiffCopy"))
    }
}

/// The directory and the patterns of a pull, from the request's metadata (values may be
/// URL-encoded, which a `<key>-encoded: true` entry says).
fn pull_request(metadata: &MetadataMap) -> (String, PullFilter) {
    let values = |key: &str| -> Vec<String> {
        let encoded = metadata
            .get(format!("{key}-encoded").as_str())
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.eq_ignore_ascii_case("true") || value == "1");
        metadata
            .get_all(key)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .map(|value| {
                if encoded {
                    percent_encoding::percent_decode_str(&value.replace('+', " "))
                        .decode_utf8_lossy()
                        .into_owned()
                } else {
                    value.to_owned()
                }
            })
            .collect()
    };
    let dir_name = values("dir-name").into_iter().next().unwrap_or_default();
    let filter = PullFilter {
        include: values("include-patterns"),
        exclude: values("exclude-patterns"),
        follow: values("followpaths"),
        override_excludes: values("override-excludes")
            .first()
            .is_some_and(|value| value == "true"),
    };
    (dir_name, filter)
}

/// Sends the stats of `entries`, then serves the daemon's requests until it finishes.
async fn send(
    entries: Vec<Entry>,
    mut incoming: Streaming<Packet>,
    sender: &mpsc::Sender<Result<Packet, Status>>,
) -> Result<ContextSummary, WalkError> {
    let closed = || WalkError::transfer(std::io::ErrorKind::BrokenPipe, STOPPED_READING);
    let stats: Vec<Packet> = entries
        .iter()
        .map(|entry| Packet {
            r#type: PacketType::PacketStat.into(),
            stat: Some(entry.stat.clone()),
            ..Packet::default()
        })
        .chain(std::iter::once(Packet {
            r#type: PacketType::PacketStat.into(),
            ..Packet::default()
        }))
        .collect();
    // Stats go out while requests come in: the daemon asks for files before the last stat.
    let stat_sender = sender.clone();
    let mut stats_sent = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        for packet in stats {
            if stat_sender.send(Ok(packet)).await.is_err() {
                return false;
            }
        }
        true
    }));
    // The daemon's requests are read as they come, whatever this side is busy sending: each
    // is a tiny DATA frame, and HTTP/2 (h2) closes a connection that leaves too many of those
    // unread (`too_many_data_frames`), which a context of thousands of files would.
    let (requests_in, mut requests) = mpsc::unbounded_channel();
    let _reader = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        while let Some(packet) = incoming.next().await {
            if requests_in.send(packet).is_err() {
                break;
            }
        }
    }));
    let mut summary = ContextSummary::default();
    while let Some(packet) = requests.recv().await {
        let packet = packet.map_err(|status| {
            WalkError::transfer(
                std::io::ErrorKind::BrokenPipe,
                format!("the daemon broke off the transfer: {}", status.message()),
            )
        })?;
        match PacketType::try_from(packet.r#type) {
            Ok(PacketType::PacketReq) => {
                let entry = usize::try_from(packet.id)
                    .ok()
                    .and_then(|index| entries.get(index))
                    .filter(|entry| entry.is_file())
                    .ok_or_else(|| {
                        WalkError::transfer(
                            std::io::ErrorKind::InvalidData,
                            format!("the daemon asked for unknown file #{}", packet.id),
                        )
                    })?;
                summary.bytes += send_file(packet.id, entry, sender).await?;
                summary.files += 1;
            }
            Ok(PacketType::PacketFin) => {
                if !(&mut stats_sent).await.unwrap_or(false) {
                    return Err(closed());
                }
                sender
                    .send(Ok(Packet {
                        r#type: PacketType::PacketFin.into(),
                        ..Packet::default()
                    }))
                    .await
                    .map_err(|_| closed())?;
                return Ok(summary);
            }
            Ok(PacketType::PacketErr) => {
                return Err(WalkError::transfer(
                    std::io::ErrorKind::Other,
                    format!(
                        "the daemon could not take the build context: {}",
                        String::from_utf8_lossy(&packet.data)
                    ),
                ));
            }
            _ => {}
        }
    }
    Err(closed())
}

/// Sends one file's bytes as `DATA` packets and the empty one that ends it; returns the size.
async fn send_file(
    id: u32,
    entry: &Entry,
    sender: &mpsc::Sender<Result<Packet, Status>>,
) -> Result<u64, WalkError> {
    let failed = |source| WalkError {
        path: entry.path.clone(),
        source,
    };
    let mut file = tokio::fs::File::open(&entry.path).await.map_err(failed)?;
    let mut sent = 0u64;
    loop {
        let mut data = vec![0; DATA_PACKET_BYTES];
        let read = file.read(&mut data).await.map_err(failed)?;
        data.truncate(read);
        let done = read == 0;
        sent += read as u64;
        sender
            .send(Ok(Packet {
                r#type: PacketType::PacketData.into(),
                id,
                data,
                ..Packet::default()
            }))
            .await
            .map_err(|_| {
                failed(std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    STOPPED_READING,
                ))
            })?;
        if done {
            return Ok(sent);
        }
    }
}

/// Adds one pull's result to the session's: sums what was sent, keeps the first failure.
fn record(outcome: &UploadOutcome, result: Result<ContextSummary, WalkError>) {
    let Ok(mut outcome) = outcome.lock() else {
        return;
    };
    *outcome = match (outcome.take(), result) {
        (Some(Err(first)), _) => Some(Err(first)),
        (_, Err(error)) => Some(Err(error)),
        (Some(Ok(before)), Ok(now)) => Some(Ok(ContextSummary {
            files: before.files + now.files,
            bytes: before.bytes + now.bytes,
        })),
        (None, Ok(now)) => Some(Ok(now)),
    };
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
    async fn serves_secrets_by_id() {
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
    }
}
