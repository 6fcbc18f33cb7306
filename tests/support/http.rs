//! A plain HTTP client for the few calls tests make without an SDK: ministack's EC2 Query API
//! and its health endpoint.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

/// One HTTP/1.1 request to `url` (`http://host:port/path`): the status code and the body.
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, String)],
    body: String,
) -> Result<(u16, String), String> {
    let rest = url.trim_start_matches("http://");
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority);
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    let response = sender
        .send_request(builder.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// A GET that gives up after five seconds.
pub async fn get(url: &str) -> Result<(u16, String), String> {
    tokio::time::timeout(
        Duration::from_secs(5),
        request("GET", url, &[], String::new()),
    )
    .await
    .map_err(|_| "timed out".to_owned())?
}
