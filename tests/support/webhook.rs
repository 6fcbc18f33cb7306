//! A webhook receiver: where an approval gate posts its notice.

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
