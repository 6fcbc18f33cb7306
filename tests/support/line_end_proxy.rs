//! A TCP proxy in front of the Docker daemon's Unix socket that hands the client every JSON
//! message of the daemon's answers apart from its line end: it forwards the daemon's bytes up
//! to a `}` that a `\r\n` follows, waits, then sends the rest. A socket read can end there on
//! any machine, at random; this makes it happen at every message, the last one included. It
//! serves on tasks of the test's runtime, which end with the test.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};

/// How long the proxy holds a line end back: long enough that the client reads the message
/// before it.
const HOLD: Duration = Duration::from_millis(15);

pub struct LineEndProxy {
    /// `tcp://127.0.0.1:<port>`: a DOCKER_HOST for bollard.
    pub docker_host: String,
    /// Line ends held back so far.
    pub splits: Arc<AtomicUsize>,
}

impl LineEndProxy {
    /// A proxy in front of the daemon the tests use (DOCKER_HOST's `unix://` socket, or the
    /// default one).
    pub async fn start() -> LineEndProxy {
        let socket = match std::env::var("DOCKER_HOST") {
            Ok(host) => PathBuf::from(
                host.strip_prefix("unix://")
                    .unwrap_or_else(|| panic!("DOCKER_HOST {host} is not a Unix socket")),
            ),
            Err(_) => PathBuf::from("/var/run/docker.sock"),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let docker_host = format!("tcp://{}", listener.local_addr().unwrap());
        let splits = Arc::new(AtomicUsize::new(0));
        let counted = splits.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let daemon = UnixStream::connect(&socket).await.unwrap();
                tokio::spawn(relay(client, daemon, counted.clone()));
            }
        });
        LineEndProxy {
            docker_host,
            splits,
        }
    }
}

/// Requests go through as they come; answers are cut before each `\r\n` that ends a message.
async fn relay(client: TcpStream, daemon: UnixStream, splits: Arc<AtomicUsize>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut daemon_read, mut daemon_write) = daemon.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut daemon_write).await;
        let _ = daemon_write.shutdown().await;
    });
    let mut buffer = vec![0u8; 64 * 1024];
    // Whether the last byte sent was a `}`: a `\r\n` may begin the next read.
    let mut after_brace = false;
    loop {
        let read = match daemon_read.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let bytes = &buffer[..read];
        let mut cuts: Vec<usize> = bytes
            .windows(3)
            .enumerate()
            .filter(|(_, window)| *window == b"}\r\n")
            .map(|(at, _)| at + 1)
            .collect();
        if after_brace && bytes.starts_with(b"\r\n") {
            cuts.insert(0, 0);
        }
        let mut sent = 0;
        for cut in cuts {
            if cut > sent && client_write.write_all(&bytes[sent..cut]).await.is_err() {
                return;
            }
            let _ = client_write.flush().await;
            splits.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(HOLD).await;
            sent = cut;
        }
        if client_write.write_all(&bytes[sent..]).await.is_err() {
            break;
        }
        after_brace = bytes.last() == Some(&b'}');
    }
    let _ = client_write.shutdown().await;
    upstream.abort();
}
