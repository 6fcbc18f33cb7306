//! Plain HTTP/1.1 for what tests do without an SDK: a request over a connection of its own
//! (ministack's EC2 Query API and health endpoint, a proxy's upstream) and a listener served
//! by a handler (the proxies).

use std::convert::Infallible;
use std::error::Error;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// Sends `request` over a new connection to `authority` (`host:port`): the answer, its body
/// still to be read.
pub async fn send<B>(authority: &str, request: Request<B>) -> Result<Response<Incoming>, String>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

/// Serves every connection `listener` accepts, each request answered by `handle`, on tasks of
/// the current runtime (they end with it).
pub fn serve<H, F, B>(listener: tokio::net::TcpListener, handle: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handle = handle.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(handle))
                    .await;
            });
        }
    });
}

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
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority);
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    let response = send(
        authority,
        builder.body(Full::new(Bytes::from(body))).unwrap(),
    )
    .await?;
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
