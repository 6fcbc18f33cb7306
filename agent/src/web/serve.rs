//! The server loop: every connection gets a limited time to send a request's headers
//! (`ENVELOPE_AGENT_HEADER_TIMEOUT`, default 10s), so a client that connects and says
//! nothing, or sends half a request, cannot hold a connection open forever.
//!
//! axum's own `serve` gives hyper no timer, which leaves hyper's header read timeout off.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serve `router` on `listener` until `stop` is cancelled, then wait for the connections
/// being served to finish their requests. Handlers can read the client's address as
/// `ConnectInfo<SocketAddr>`.
pub async fn run(listener: TcpListener, router: Router, stop: CancellationToken) {
    let header_timeout = envelope_runner::timeouts::agent_header();
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!("the web server cannot accept a connection: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let service = TowerToHyperService::new(
            router
                .clone()
                .layer(axum::Extension(ConnectInfo::<SocketAddr>(remote))),
        );
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%remote, "connection ended: {error}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// With the shipped default: a client that sends half a request is cut off, while a
    /// whole request on another connection is answered.
    #[tokio::test]
    async fn a_client_that_sends_half_a_request_is_disconnected() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let stop = CancellationToken::new();
        let router = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let server = tokio::spawn(run(listener, router, stop.clone()));

        let mut whole = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        whole
            .write_all(b"GET / HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut answer = String::new();
        whole.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

        let mut half = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        half.write_all(b"GET / HTTP/1.1\r\nHost: agent\r\n")
            .await
            .expect("write");
        // The bound is the test's own: three times the default limit.
        let bound = envelope_runner::timeouts::AGENT_HEADER_TIMEOUT * 3;
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(bound, half.read_to_end(&mut rest)).await;
        assert!(
            closed.is_ok(),
            "the server still held a half-sent request after {bound:?}"
        );
        let rest = String::from_utf8_lossy(&rest);
        assert!(
            !rest.contains("200 OK"),
            "a half-sent request was answered: {rest}"
        );

        stop.cancel();
        server.await.expect("server task");
    }
}
