//! A real HTTP server on 127.0.0.1 standing in for a released application's health page
//! (`/up`): it answers every request with the status and body the test chose (the status can
//! be changed while it runs), and counts the requests, so a test sees how often a `verify:`
//! check asked.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;

use super::http::serve;

/// A running endpoint; it stops with the test's runtime.
pub struct HealthEndpoint {
    /// `http://127.0.0.1:PORT/up`.
    pub url: String,
    hits: Arc<AtomicUsize>,
    status: Arc<AtomicU16>,
}

impl HealthEndpoint {
    /// Answers every request with `status` and `body`.
    pub async fn start(status: u16, body: &'static str) -> HealthEndpoint {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/up", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let status = Arc::new(AtomicU16::new(status));
        let (counter, answer) = (hits.clone(), status.clone());
        serve(listener, move |_request| {
            counter.fetch_add(1, Ordering::SeqCst);
            let status = answer.load(Ordering::SeqCst);
            async move {
                let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                Ok::<_, Infallible>(response)
            }
        });
        HealthEndpoint { url, hits, status }
    }

    /// Answers `status` from now on.
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Requests answered so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}
