//! Webhook receivers: where an approval gate posts its notice and a run tells how it ended.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Accept one HTTP request on 127.0.0.1 and return its body; answers 204.
pub async fn capture_one_post(listener: tokio::net::TcpListener) -> String {
    let (mut socket, _) = listener.accept().await.unwrap();
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = socket.read(&mut chunk).await.unwrap();
        buffer.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&buffer);
        if let Some(split) = text.find("\r\n\r\n") {
            let length = text[..split]
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if buffer.len() >= split + 4 + length {
                socket
                    .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                    .await
                    .unwrap();
                return String::from_utf8_lossy(&buffer[split + 4..split + 4 + length])
                    .into_owned();
            }
        }
        assert!(read > 0, "connection closed before the body arrived");
    }
}

/// How a [`Receiver`] answers each POST.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    Status(u16),
    /// Reads the request and never answers.
    Hang,
}

/// A webhook receiver on 127.0.0.1 that keeps every request's path and body and answers as
/// told; it serves until the test's runtime ends.
pub struct Receiver {
    /// `http://127.0.0.1:<port>`.
    pub origin: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl Receiver {
    pub async fn start(answer: Answer) -> Receiver {
        use http_body_util::{BodyExt, Full};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = received.clone();
        super::http::serve(
            listener,
            move |request: hyper::Request<hyper::body::Incoming>| {
                let keep = keep.clone();
                async move {
                    let path = request.uri().path().to_owned();
                    let body = request.into_body().collect().await.unwrap().to_bytes();
                    keep.lock()
                        .unwrap()
                        .push((path, String::from_utf8_lossy(&body).into_owned()));
                    let status = match answer {
                        Answer::Status(status) => status,
                        Answer::Hang => std::future::pending().await,
                    };
                    Ok::<_, std::convert::Infallible>(
                        hyper::Response::builder()
                            .status(status)
                            .body(Full::new(bytes::Bytes::new()))
                            .unwrap(),
                    )
                }
            },
        );
        Receiver { origin, received }
    }

    /// The path and body of every request so far.
    pub fn received(&self) -> Vec<(String, String)> {
        self.received.lock().unwrap().clone()
    }

    /// The bodies of the requests to `path`.
    pub fn bodies(&self, path: &str) -> Vec<String> {
        self.received()
            .into_iter()
            .filter(|(to, _)| to == path)
            .map(|(_, body)| body)
            .collect()
    }
}
