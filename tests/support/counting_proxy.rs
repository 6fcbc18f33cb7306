//! A counting, throttling proxy in front of ministack, the way AWS throttles: it counts every
//! call by operation (X-Amz-Target) and by service (the target's prefix, such as
//! `DynamoDB_20120810`) and can answer the first N calls of an operation with a
//! ThrottlingException.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::support::http::{send, serve};

#[derive(Default)]
struct ProxyState {
    /// Every call: operation and when it arrived.
    calls: Vec<(String, Instant)>,
    /// Operation → calls still to be answered with a ThrottlingException.
    throttle: HashMap<String, usize>,
    throttled: HashMap<String, usize>,
    /// Calls by service: the X-Amz-Target before its dot (`DynamoDB_20120810`,
    /// `AmazonEC2ContainerServiceV20141113`), `other` without one.
    by_service: BTreeMap<String, usize>,
}

/// An HTTP proxy in front of ministack that counts calls by X-Amz-Target operation and can
/// throttle the first N calls of an operation. It serves on tasks of the test's runtime, which
/// end with the test.
pub struct CountingProxy {
    /// `http://127.0.0.1:<port>`: the endpoint to give an SDK client.
    pub url: String,
    state: Arc<Mutex<ProxyState>>,
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

impl CountingProxy {
    pub async fn start(upstream: &str) -> CountingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let shared = state.clone();
        serve(listener, move |request| {
            handle(request, shared.clone(), upstream.clone())
        });
        CountingProxy { url, state }
    }

    /// Answer the next `times` calls of `operation` with a ThrottlingException.
    pub fn throttle(&self, operation: &str, times: usize) {
        self.state
            .lock()
            .unwrap()
            .throttle
            .insert(operation.to_owned(), times);
    }

    /// Calls of `operation` that reached the proxy (throttled ones included).
    pub fn count(&self, operation: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|(op, _)| op == operation)
            .count()
    }

    /// Calls of `operation` answered with a ThrottlingException.
    pub fn throttled(&self, operation: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .throttled
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// When each call of `operation` arrived.
    pub fn times(&self, operation: &str) -> Vec<Instant> {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|(op, _)| op == operation)
            .map(|(_, at)| *at)
            .collect()
    }

    /// Calls of one service (`DynamoDB_20120810`): the X-Amz-Target's part before the dot.
    pub fn service_count(&self, service: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .by_service
            .get(service)
            .copied()
            .unwrap_or(0)
    }

    /// Calls by operation.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for (op, _) in &self.state.lock().unwrap().calls {
            *counts.entry(op.clone()).or_default() += 1;
        }
        counts
    }
}

async fn handle(
    request: Request<Incoming>,
    state: Arc<Mutex<ProxyState>>,
    upstream: String,
) -> Result<Response<ProxyBody>, Infallible> {
    let target = request
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok());
    let operation = target
        .and_then(|v| v.rsplit('.').next())
        .unwrap_or("other")
        .to_owned();
    let service = target
        .and_then(|v| v.split_once('.'))
        .map_or("other", |(service, _)| service)
        .to_owned();
    let throttle = {
        let mut state = state.lock().unwrap();
        *state.by_service.entry(service).or_default() += 1;
        state.calls.push((operation.clone(), Instant::now()));
        let remaining = state.throttle.get(&operation).copied().unwrap_or(0);
        if remaining > 0 {
            state.throttle.insert(operation.clone(), remaining - 1);
            *state.throttled.entry(operation.clone()).or_default() += 1;
        }
        remaining > 0
    };
    if throttle {
        let body = Full::new(Bytes::from_static(
            br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
        ))
        .map_err(|never| match never {})
        .boxed();
        return Ok(Response::builder()
            .status(400)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amzn-requestid", "throttled-by-the-test-proxy")
            .body(body)
            .unwrap());
    }
    match send(&upstream, request).await {
        Ok(response) => Ok(response.map(|body| body.boxed())),
        Err(error) => Ok(Response::builder()
            .status(502)
            .body(
                Full::new(Bytes::from(format!("proxy: {error}")))
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .unwrap()),
    }
}
