//! HTTP checks of a released application (the deploy stage's `verify:`): GET a URL until the
//! answer has the expected status (and body text) or the check's deadline passes, with a
//! bounded number of attempts and a per-request timeout. A task check ([`TaskCheck`]) is
//! one such check per new task, at its address (found by the ECS deploy). Reports carry the URL as
//! [`shown`](crate::pipeline::verify::shown) (no credentials, no query values) and a short
//! excerpt of the last body, passed through the run's redactor. A target group check
//! ([`TargetGroupCheck`], run by the ECS deploy) asks the load balancer instead; its reports
//! end with what the target group last said of each new task ([`LastAnswer::Targets`]). An
//! alarm check ([`AlarmCheck`]) watches a CloudWatch alarm ([`LastAnswer::Alarm`]).

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::pipeline::verify::shown;
use crate::redact::Redactor;
pub use target_health::{TargetHealth, TargetSeen};

pub mod target_health;

/// A single request never waits longer than this (nor past the check's deadline).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// No check makes more attempts than this, whatever its timeout and interval.
pub(crate) const MAX_ATTEMPTS: u32 = 500;
/// Bytes of a body read to look for the expected text.
const BODY_LIMIT: usize = 256 * 1024;
/// Characters of the last body kept in the report.
const EXCERPT_CHARS: usize = 160;

/// One check, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    /// The whole URL (it may hold credentials; never shown as is).
    pub url: String,
    pub status: u16,
    pub body_contains: Option<String>,
    /// How long to keep trying, from the first attempt.
    pub timeout: Duration,
    /// Pause between attempts.
    pub interval: Duration,
}

/// A check of every new task of a deploy's service: `http://ADDRESS:PORT/PATH` of each one
/// (the address of its network interface) must pass, all within one deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskCheck {
    pub service: String,
    pub port: u16,
    /// Starts with `/`.
    pub path: String,
    pub status: u16,
    pub body_contains: Option<String>,
    pub timeout: Duration,
    pub interval: Duration,
}

impl TaskCheck {
    /// The HTTP check of one task at `address`, with `timeout` left of the deadline.
    pub fn at(&self, address: &str, timeout: Duration) -> HttpCheck {
        HttpCheck {
            url: format!("http://{address}:{}{}", self.port, self.path),
            status: self.status,
            body_contains: self.body_contains.clone(),
            timeout,
            interval: self.interval,
        }
    }
}

/// A check of a deploy's service behind a load balancer: every new task must be `healthy` in
/// each target group the service registers its tasks with, all within one deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetGroupCheck {
    pub service: String,
    pub timeout: Duration,
    pub interval: Duration,
}

/// A CloudWatch alarm watched after the rollouts: it must not be in ALARM at any look (every
/// `interval`, and once more at the end) for `watch`; the check fails at the first look that
/// finds it in ALARM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmCheck {
    pub name: String,
    pub watch: Duration,
    pub interval: Duration,
}

/// The kinds of check a deploy runs after its rollouts completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Url(HttpCheck),
    Task(TaskCheck),
    TargetGroup(TargetGroupCheck),
    Alarm(AlarmCheck),
}

impl From<HttpCheck> for Check {
    fn from(check: HttpCheck) -> Self {
        Check::Url(check)
    }
}

impl From<TaskCheck> for Check {
    fn from(check: TaskCheck) -> Self {
        Check::Task(check)
    }
}

impl From<TargetGroupCheck> for Check {
    fn from(check: TargetGroupCheck) -> Self {
        Check::TargetGroup(check)
    }
}

impl From<AlarmCheck> for Check {
    fn from(check: AlarmCheck) -> Self {
        Check::Alarm(check)
    }
}

/// How a check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The URL as people may see it.
    pub url: String,
    pub passed: bool,
    pub attempts: u32,
    pub elapsed: Duration,
    /// What the check wanted, in words (`status 200 and a body containing "Application up"`).
    pub expected: String,
    /// The last answer: its status, or why there was none; and an excerpt of its body.
    pub last: LastAnswer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LastAnswer {
    Status {
        status: u16,
        excerpt: String,
    },
    NoAnswer {
        error: String,
    },
    /// What a target group last said of each new task's target, in the order of the tasks.
    Targets(Vec<TargetSeen>),
    /// The state a watched alarm was last seen in (`OK`, `ALARM`, `INSUFFICIENT_DATA`) and
    /// the reason CloudWatch gave for it.
    Alarm {
        state: String,
        reason: String,
    },
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.elapsed.as_secs_f64();
        let attempts = match self.attempts {
            1 => "1 attempt".to_owned(),
            n => format!("{n} attempts"),
        };
        if self.passed {
            return write!(
                f,
                "check {} passed ({}) after {attempts} in {seconds:.1}s",
                self.url, self.expected
            );
        }
        write!(
            f,
            "check {} failed after {attempts} in {seconds:.1}s: expected {}; ",
            self.url, self.expected
        )?;
        match &self.last {
            LastAnswer::Status { status, excerpt } if excerpt.is_empty() => {
                write!(f, "last answer: status {status}, empty body")
            }
            LastAnswer::Status { status, excerpt } => {
                write!(f, "last answer: status {status}, body {excerpt:?}")
            }
            LastAnswer::NoAnswer { error } => write!(f, "last answer: none ({error})"),
            LastAnswer::Alarm { state, reason } if reason.is_empty() => {
                write!(f, "last seen: {state}")
            }
            LastAnswer::Alarm { state, reason } => write!(f, "last seen: {state} ({reason})"),
            LastAnswer::Targets(targets) => {
                write!(f, "last seen: ")?;
                for (index, target) in targets.iter().enumerate() {
                    if index > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{target}")?;
                }
                Ok(())
            }
        }
    }
}

/// Runs one check to its verdict.
pub async fn run(check: &HttpCheck, redactor: &Redactor) -> CheckReport {
    let start = Instant::now();
    let deadline = start + check.timeout;
    let expected = expected_text(check.status, check.body_contains.as_deref(), redactor);
    let mut attempts = 0;
    let client = reqwest::Client::builder()
        .user_agent(concat!(
            "envelope-runner/",
            env!("CARGO_PKG_VERSION"),
            " verify"
        ))
        .build();
    let client = match client {
        Ok(client) => client,
        Err(error) => {
            let last = LastAnswer::NoAnswer {
                error: format!("no HTTP client: {}", error.without_url()),
            };
            return report(check, start, attempts, expected, false, last);
        }
    };
    loop {
        attempts += 1;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let timeout = REQUEST_TIMEOUT.min(remaining).max(Duration::from_secs(1));
        let (passed, last) = attempt(&client, check, timeout, redactor).await;
        if passed {
            return report(check, start, attempts, expected, true, last);
        }
        if attempts >= MAX_ATTEMPTS || Instant::now() + check.interval > deadline {
            return report(check, start, attempts, expected, false, last);
        }
        tokio::time::sleep(check.interval).await;
    }
}

/// A failed report of a check that could not even be attempted: `what` it would have asked
/// (shown as the check's URL), `expected` in words, and why there was no answer.
pub fn not_attempted(
    what: String,
    expected: String,
    elapsed: Duration,
    error: String,
) -> CheckReport {
    CheckReport {
        url: what,
        passed: false,
        attempts: 0,
        elapsed,
        expected,
        last: LastAnswer::NoAnswer { error },
    }
}

/// What `check` wants, in words.
pub fn expected_text(status: u16, body_contains: Option<&str>, redactor: &Redactor) -> String {
    match body_contains {
        Some(text) => format!(
            "status {status} and a body containing {:?}",
            redactor.redact(text)
        ),
        None => format!("status {status}"),
    }
}

fn report(
    check: &HttpCheck,
    start: Instant,
    attempts: u32,
    expected: String,
    passed: bool,
    last: LastAnswer,
) -> CheckReport {
    CheckReport {
        url: shown(&check.url),
        passed,
        attempts,
        elapsed: start.elapsed(),
        expected,
        last,
    }
}

/// One GET: whether it passed, and what came back.
async fn attempt(
    client: &reqwest::Client,
    check: &HttpCheck,
    timeout: Duration,
    redactor: &Redactor,
) -> (bool, LastAnswer) {
    let response = match client.get(&check.url).timeout(timeout).send().await {
        Ok(response) => response,
        Err(error) => {
            let error = redactor.redact(&error.without_url().to_string());
            return (false, LastAnswer::NoAnswer { error });
        }
    };
    let status = response.status().as_u16();
    let body = read_body(response).await;
    let passed = status == check.status
        && check
            .body_contains
            .as_deref()
            .is_none_or(|text| body.contains(text));
    (
        passed,
        LastAnswer::Status {
            status,
            excerpt: excerpt(&body, redactor),
        },
    )
}

/// Up to [`BODY_LIMIT`] bytes of the body, as text (invalid UTF-8 replaced).
async fn read_body(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < BODY_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    bytes.truncate(BODY_LIMIT);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The body's start on one line, whitespace collapsed, redacted, at most [`EXCERPT_CHARS`].
fn excerpt(body: &str, redactor: &Redactor) -> String {
    let one_line = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let redacted = redactor.redact(&one_line);
    let mut short: String = redacted.chars().take(EXCERPT_CHARS).collect();
    if redacted.chars().count() > EXCERPT_CHARS {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_one_short_redacted_line() {
        let redactor = Redactor::from_values(["hunter2-secret"]);
        let body = format!(
            "<h1>Error</h1>\n  token hunter2-secret\n{}",
            "x".repeat(400)
        );
        let text = excerpt(&body, &redactor);
        assert!(
            text.starts_with("<h1>Error</h1> token [REDACTED] xxx"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(text.chars().count(), EXCERPT_CHARS + 1, "{text}");
    }

    #[test]
    fn a_failed_report_names_the_check_and_its_last_answer() {
        let report = CheckReport {
            url: "https://api.example/up".into(),
            passed: false,
            attempts: 3,
            elapsed: Duration::from_millis(12_300),
            expected: "status 200 and a body containing \"Application up\"".into(),
            last: LastAnswer::Status {
                status: 500,
                excerpt: "Server Error".into(),
            },
        };
        assert_eq!(
            report.to_string(),
            "check https://api.example/up failed after 3 attempts in 12.3s: expected status 200 \
             and a body containing \"Application up\"; last answer: status 500, body \"Server Error\""
        );
    }

    /// A real server on 127.0.0.1 answering 503 to the first `failures` requests, then 200
    /// with "Application up"; it counts the requests.
    async fn flaky_server(
        failures: usize,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/up", listener.local_addr().unwrap());
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer).await;
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let (status, body) = if n < failures {
                    ("503 Service Unavailable", "booting")
                } else {
                    ("200 OK", "<p>Application up</p>")
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        (url, hits)
    }

    fn check(url: &str, timeout_ms: u64) -> HttpCheck {
        HttpCheck {
            url: url.to_owned(),
            status: 200,
            body_contains: Some("Application up".into()),
            timeout: Duration::from_millis(timeout_ms),
            interval: Duration::from_millis(100),
        }
    }

    #[tokio::test]
    async fn a_check_retries_until_the_page_is_up() {
        let (url, hits) = flaky_server(2).await;
        let report = run(&check(&url, 5_000), &Redactor::new()).await;
        assert!(report.passed, "{report}");
        assert_eq!(report.attempts, 3, "{report}");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_check_that_never_passes_stops_at_its_deadline() {
        let (url, hits) = flaky_server(usize::MAX).await;
        let report = run(&check(&url, 1_000), &Redactor::new()).await;
        assert!(!report.passed, "{report}");
        assert!((5..=11).contains(&report.attempts), "{report}");
        assert_eq!(
            hits.load(std::sync::atomic::Ordering::SeqCst),
            report.attempts as usize
        );
        assert!(report.elapsed < Duration::from_secs(3), "{report}");
        assert!(
            report.to_string().ends_with("status 503, body \"booting\""),
            "{report}"
        );
    }
}
