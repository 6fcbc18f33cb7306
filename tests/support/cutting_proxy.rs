//! A TCP proxy in front of a registry that cuts a push off midway (a connection reset, as a
//! middlebox that kills a connection sends) and logs the uploads and manifests that go
//! through it. It serves on tasks of the test's runtime, which end with the test.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A request line, e.g. `PATCH /v2/<name>/blobs/uploads/<id>` or `PUT /v2/<name>/manifests/v1`.
fn has_request(chunk: &[u8], method: &str, path_part: &str) -> bool {
    String::from_utf8_lossy(chunk).lines().any(|line| {
        line.starts_with(&format!("{method} /v2/"))
            && line.contains(path_part)
            && line.ends_with("HTTP/1.1")
    })
}

/// The method and target of the request line a chunk starts with, if it starts one.
fn request_line(chunk: &[u8]) -> Option<(String, String)> {
    let head = String::from_utf8_lossy(&chunk[..chunk.len().min(4096)]).into_owned();
    let line = head.lines().next()?;
    let mut words = line.split(' ');
    let (method, target, version) = (words.next()?, words.next()?, words.next()?);
    (target.starts_with("/v2/") && version == "HTTP/1.1")
        .then(|| (method.to_owned(), target.to_owned()))
}

/// The status code and Docker-Content-Digest of the response a chunk starts with, if any.
fn response_head(chunk: &[u8]) -> Option<(u16, Option<String>)> {
    let head = String::from_utf8_lossy(&chunk[..chunk.len().min(4096)]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()?
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()?;
    let digest = lines
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("docker-content-digest"))
        .map(|(_, value)| value.trim().to_owned());
    Some((status, digest))
}

/// What went through a [`CuttingProxy`].
#[derive(Debug, Default)]
pub struct ProxyLog {
    /// Connections reset midway.
    pub resets: usize,
    /// Request bodies and headers sent to the registry, in bytes (retries included).
    pub bytes_up: u64,
    /// `PUT .../blobs/uploads/...?digest=<digest>` requests sent, per digest.
    pub blob_puts_sent: HashMap<String, usize>,
    /// Those the registry answered 201 Created, per digest.
    pub blob_puts_completed: HashMap<String, usize>,
    /// `PUT .../manifests/<tag>` requests sent, per tag.
    pub manifest_puts_sent: HashMap<String, usize>,
    /// The registry's 201 answers to them: the tag and the Docker-Content-Digest it gave.
    pub manifests_completed: Vec<(String, Option<String>)>,
}

/// A TCP proxy in front of a registry that resets (RST, not FIN) the first `cuts` connections
/// carrying a request `method .../path_part...` once `cut_after` bytes of it have passed — a
/// push cut off midway — and logs the uploads and manifests that go through it.
pub struct CuttingProxy {
    /// `127.0.0.1:<port>`.
    pub address: String,
    pub log: Arc<Mutex<ProxyLog>>,
}

/// The blob digest of `PUT .../blobs/uploads/<id>?...digest=<digest>...`.
fn upload_digest(target: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    let value = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("digest="))?;
    Some(value.replace("%3A", ":").replace("%3a", ":"))
}

impl CuttingProxy {
    /// Starts the proxy in front of `upstream` (`host:port`).
    pub async fn start(
        upstream: String,
        method: &'static str,
        path_part: &'static str,
        cut_after: usize,
        cuts: usize,
    ) -> CuttingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let cuts_left = Arc::new(AtomicUsize::new(cuts));
        let log = Arc::new(Mutex::new(ProxyLog::default()));
        let shared_log = log.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let cuts_left = cuts_left.clone();
                let log = shared_log.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    // HTTP/1.1 without pipelining: a response answers the last request sent.
                    let last_request: Mutex<Option<(String, String)>> = Mutex::new(None);
                    let (mut client_read, mut client_write) = client.split();
                    let (mut server_read, mut server_write) = server.split();
                    let upload = async {
                        let mut buffer = vec![0u8; 16 * 1024];
                        let mut uploading: Option<usize> = None;
                        loop {
                            let n = match client_read.read(&mut buffer).await {
                                Ok(0) | Err(_) => return false,
                                Ok(n) => n,
                            };
                            let chunk = &buffer[..n];
                            if let Some((method, target)) = request_line(chunk) {
                                let mut log = log.lock().unwrap();
                                if method == "PUT"
                                    && target.contains("/blobs/uploads/")
                                    && let Some(digest) = upload_digest(&target)
                                {
                                    *log.blob_puts_sent.entry(digest).or_default() += 1;
                                }
                                if method == "PUT"
                                    && let Some((_, tag)) = target.split_once("/manifests/")
                                {
                                    *log.manifest_puts_sent.entry(tag.to_owned()).or_default() += 1;
                                }
                                *last_request.lock().unwrap() = Some((method, target));
                            }
                            if uploading.is_none()
                                && cuts_left.load(Ordering::SeqCst) > 0
                                && has_request(chunk, method, path_part)
                            {
                                uploading = Some(0);
                            }
                            if let Some(sent) = uploading.as_mut() {
                                *sent += n;
                                if *sent > cut_after
                                    && cuts_left
                                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                            n.checked_sub(1)
                                        })
                                        .is_ok()
                                {
                                    return true; // reset both sides midway through the request
                                }
                            }
                            if server_write.write_all(chunk).await.is_err() {
                                return false;
                            }
                            log.lock().unwrap().bytes_up += n as u64;
                        }
                    };
                    let download = async {
                        let mut buffer = vec![0u8; 16 * 1024];
                        loop {
                            let n = match server_read.read(&mut buffer).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            let chunk = &buffer[..n];
                            if let Some((status, digest)) = response_head(chunk) {
                                let answered = if status >= 200 {
                                    last_request.lock().unwrap().take()
                                } else {
                                    None
                                };
                                if let (201, Some((method, target))) = (status, answered) {
                                    let mut log = log.lock().unwrap();
                                    if method == "PUT"
                                        && target.contains("/blobs/uploads/")
                                        && let Some(digest) = upload_digest(&target)
                                    {
                                        *log.blob_puts_completed.entry(digest).or_default() += 1;
                                    }
                                    if let Some((_, tag)) = target.split_once("/manifests/") {
                                        log.manifests_completed.push((tag.to_owned(), digest));
                                    }
                                }
                            }
                            if client_write.write_all(chunk).await.is_err() {
                                return;
                            }
                        }
                    };
                    let reset = tokio::select! {
                        reset = upload => reset,
                        _ = download => false,
                    };
                    if reset {
                        // SO_LINGER 0: closing sends RST, as a middlebox that kills a
                        // connection does.
                        let _ = client.set_zero_linger();
                        let _ = server.set_zero_linger();
                        log.lock().unwrap().resets += 1;
                    }
                });
            }
        });
        CuttingProxy { address, log }
    }
}
