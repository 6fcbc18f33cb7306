//! A proxy in front of ministack whose Elastic Load Balancing `DescribeTargetHealth` answers
//! as an Application Load Balancer's do. ministack registers an ECS service's RUNNING tasks
//! in the target groups of its `loadBalancers` but reports every target `healthy` without
//! asking it (its alb.py), so a release whose tasks fail their health check would pass there.
//! Through this proxy every request is forwarded unchanged, and in each DescribeTargetHealth
//! answer every listed target is probed as the load balancer would (GET
//! `http://IP:PORT` + the health check path the test gives, with a short timeout) and its
//! `<TargetHealth>` rewritten: `healthy` on 200, `unhealthy` with
//! `Target.ResponseCodeMismatch` on another status, `unhealthy` with `Target.Timeout` without
//! an answer.
//!
//! Only addresses in 127.0.0.0/8 and addresses of containers the test environment's Docker
//! daemon runs are probed (the daemon's `docker inspect`, read at each DescribeTargetHealth);
//! a target at any other address is never asked and shows `unavailable`.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::support::http::{request, send, serve};

/// How long a probe of one target may take (an ALB's health check timeout is 5s by default;
/// the tests want a quick verdict).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The proxy; it serves on tasks of the test's runtime, which end with the test.
pub struct TargetHealthProxy {
    /// `http://127.0.0.1:<port>`: the endpoint to give an SDK client.
    pub url: String,
    probed: Arc<Mutex<Vec<String>>>,
}

impl TargetHealthProxy {
    /// Forwards to `upstream` (ministack); probes targets at `health_path` (starting with
    /// `/`); `docker_cli` is the test environment's Docker CLI, which names the daemon's
    /// containers and their addresses.
    pub async fn start(upstream: &str, health_path: &str, docker_cli: &str) -> TargetHealthProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let settings = Arc::new(Settings {
            upstream: upstream
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned(),
            health_path: health_path.to_owned(),
            docker_cli: docker_cli.to_owned(),
        });
        let probed = Arc::new(Mutex::new(Vec::new()));
        let shared = probed.clone();
        serve(listener, move |request| {
            handle(request, settings.clone(), shared.clone())
        });
        TargetHealthProxy { url, probed }
    }

    /// Every `IP:PORT` probed so far, in order (repeats included).
    pub fn probed(&self) -> Vec<String> {
        self.probed.lock().unwrap().clone()
    }
}

struct Settings {
    /// `host:port` of ministack.
    upstream: String,
    health_path: String,
    docker_cli: String,
}

fn full(bytes: impl Into<Bytes>) -> Full<Bytes> {
    Full::new(bytes.into())
}

async fn handle(
    request: Request<Incoming>,
    settings: Arc<Settings>,
    probed: Arc<Mutex<Vec<String>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let asks_target_health = String::from_utf8_lossy(&body)
        .split('&')
        .any(|pair| pair == "Action=DescribeTargetHealth");
    let forwarded = Request::from_parts(parts, full(body));
    let response = match send(&settings.upstream, forwarded).await {
        Ok(response) => response,
        Err(error) => {
            return Ok(Response::builder()
                .status(502)
                .body(full(format!("proxy: {error}")))
                .unwrap());
        }
    };
    let (mut parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if !asks_target_health || parts.status != 200 {
        return Ok(Response::from_parts(parts, full(body)));
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    let rewritten = judge_targets(&text, &settings, &probed).await;
    parts.headers.remove("content-length");
    parts.headers.remove("transfer-encoding");
    Ok(Response::from_parts(parts, full(rewritten)))
}

/// The answer with each `<member>`'s `<TargetHealth>` replaced by what a probe found.
async fn judge_targets(xml: &str, settings: &Settings, probed: &Mutex<Vec<String>>) -> String {
    let containers = container_addresses(&settings.docker_cli).await;
    let mut out = String::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<member>") {
        let Some(length) = rest[start..].find("</member>") else {
            break;
        };
        let end = start + length + "</member>".len();
        let member = &rest[start..end];
        out.push_str(&rest[..start]);
        let id = element(member, "Id").unwrap_or_default();
        let port = element(member, "Port").unwrap_or_default();
        let health = match id.parse::<Ipv4Addr>() {
            Ok(ip) if ip.is_loopback() || containers.contains(id) => {
                let target = format!("{id}:{port}");
                probed.lock().unwrap().push(target.clone());
                probe(&target, &settings.health_path).await
            }
            _ => state(
                "unavailable",
                "Target.NotInUse",
                "the test proxy probes only 127.0.0.0/8 and the test daemon's containers",
            ),
        };
        out.push_str(&replace_health(member, &health));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// What an ALB's health check of `target` (`IP:PORT`) at `path` would say.
async fn probe(target: &str, path: &str) -> String {
    let url = format!("http://{target}{path}");
    let asked = tokio::time::timeout(PROBE_TIMEOUT, request("GET", &url, &[], String::new())).await;
    match asked {
        Ok(Ok((200, _))) => "<State>healthy</State>".to_owned(),
        Ok(Ok((status, _))) => state(
            "unhealthy",
            "Target.ResponseCodeMismatch",
            &format!("Health checks failed with these codes: [{status}]"),
        ),
        Ok(Err(_)) | Err(_) => state("unhealthy", "Target.Timeout", "Request timed out"),
    }
}

fn state(state: &str, reason: &str, description: &str) -> String {
    format!(
        "<State>{state}</State><Reason>{reason}</Reason><Description>{description}</Description>"
    )
}

/// `member` with the inside of its `<TargetHealth>` (and ministack's extra `<HealthStatus>`)
/// replaced by `health`.
fn replace_health(member: &str, health: &str) -> String {
    let (Some(open), Some(close)) = (
        member.find("<TargetHealth>"),
        member.find("</TargetHealth>"),
    ) else {
        return member.to_owned();
    };
    let inner = open + "<TargetHealth>".len();
    format!("{}{health}{}", &member[..inner], &member[close..])
        .replace("<HealthStatus>healthy</HealthStatus>", "")
}

/// The text of the first `<tag>` element of `xml`.
fn element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find('<')? + start;
    Some(&xml[start..end])
}

/// The addresses of the containers the test daemon runs, on any of their networks.
async fn container_addresses(docker_cli: &str) -> BTreeSet<String> {
    let docker_cli = docker_cli.to_owned();
    tokio::task::spawn_blocking(move || super::docker::container_addresses(&docker_cli, None))
        .await
        .unwrap()
}
