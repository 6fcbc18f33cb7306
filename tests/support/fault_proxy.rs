//! A proxy in front of ministack that injects two faults:
//!
//! - a kill between an AWS answer and the runner's checkpoint: on the Nth request of a given
//!   operation it forwards the request, reads the whole answer (the change is made), then
//!   signals a process (SIGKILL to the runner; or SIGTERM to the emulator itself, which then
//!   saves its state and stops) and answers 502 instead;
//! - a throttled service: until a given instant every request is answered, in turn, with a
//!   `ThrottlingException` (400) or an `InternalServerError` (500), as DynamoDB does when it
//!   is overwhelmed.
//!
//! Every other request goes through untouched.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::support::http::{send, serve};

#[derive(Default)]
struct Armed {
    /// Operation (the X-Amz-Target suffix), which occurrence, the process to signal and the
    /// signal's name (KILL unless armed otherwise).
    operation: String,
    nth: usize,
    pid: Option<u32>,
    signal: &'static str,
    seen: usize,
    /// Set once the kill was sent.
    fired: bool,
    /// Requests are refused until then.
    throttle_until: Option<Instant>,
    refused: usize,
}

#[derive(Clone)]
pub struct FaultProxy {
    pub url: String,
    armed: Arc<Mutex<Armed>>,
}

impl FaultProxy {
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let armed = Arc::new(Mutex::new(Armed::default()));
        let shared = armed.clone();
        serve(listener, move |request| {
            handle(request, shared.clone(), upstream.clone())
        });
        FaultProxy { url, armed }
    }

    /// Kill the process `set_pid` names after AWS answered the `nth` `operation` from now.
    pub fn arm(&self, operation: &str, nth: usize) {
        self.arm_signal(operation, nth, "KILL");
    }

    /// [`FaultProxy::arm`] with another signal (`TERM`, ...).
    pub fn arm_signal(&self, operation: &str, nth: usize, signal: &'static str) {
        *self.armed.lock().unwrap() = Armed {
            operation: operation.to_owned(),
            nth,
            signal,
            ..Armed::default()
        };
    }

    pub fn set_pid(&self, pid: u32) {
        self.armed.lock().unwrap().pid = Some(pid);
    }

    pub fn fired(&self) -> bool {
        self.armed.lock().unwrap().fired
    }

    /// Refuse every request (throttling or 500) for `period` from now.
    pub fn throttle_for(&self, period: Duration) {
        self.armed.lock().unwrap().throttle_until = Some(Instant::now() + period);
    }

    /// How many requests were refused.
    pub fn refused(&self) -> usize {
        self.armed.lock().unwrap().refused
    }
}

fn refusal(turn: usize) -> Response<Full<Bytes>> {
    let (status, body): (u16, &'static [u8]) = if turn.is_multiple_of(2) {
        (
            400,
            br#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate of requests exceeds the allowed throughput."}"#,
        )
    } else {
        (
            500,
            br#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"Internal server error"}"#,
        )
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amzn-requestid", "refused-by-the-test-proxy")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap()
}

async fn handle(
    request: Request<Incoming>,
    armed: Arc<Mutex<Armed>>,
    upstream: String,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let operation = request
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit('.').next())
        .unwrap_or("other")
        .to_owned();
    let kill = {
        let mut armed = armed.lock().unwrap();
        if armed
            .throttle_until
            .is_some_and(|until| Instant::now() < until)
        {
            armed.refused += 1;
            return Ok(refusal(armed.refused));
        }
        if !armed.fired && armed.operation == operation {
            armed.seen += 1;
            armed.seen == armed.nth
        } else {
            false
        }
    };
    let answer = match forward(request, &upstream).await {
        Ok(answer) => answer,
        Err(error) => {
            return Ok(Response::builder()
                .status(502)
                .body(Full::new(Bytes::from(format!("proxy: {error}"))))
                .unwrap());
        }
    };
    if kill {
        // The change is made; the runner never learns it.
        let deadline = Instant::now() + Duration::from_secs(10);
        let (pid, signal) = loop {
            let target = {
                let armed = armed.lock().unwrap();
                armed.pid.map(|pid| (pid, armed.signal))
            };
            if let Some(target) = target {
                break target;
            }
            assert!(Instant::now() < deadline, "no process to kill");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Marked first: the test may reap the process before `kill` returns.
        armed.lock().unwrap().fired = true;
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
        return Ok(Response::builder()
            .status(502)
            .body(Full::new(Bytes::from_static(b"killed")))
            .unwrap());
    }
    Ok(answer)
}

/// Sends the request upstream and reads the whole answer.
async fn forward(
    request: Request<Incoming>,
    upstream: &str,
) -> Result<Response<Full<Bytes>>, String> {
    let response = send(upstream, request).await?;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Response::from_parts(parts, Full::new(bytes)))
}
