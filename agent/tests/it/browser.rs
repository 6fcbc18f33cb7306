//! The approval flow in a real browser: Debian's headless Chromium, driven over the Chrome
//! DevTools Protocol (a websocket and a few JSON messages; no browser-automation crate).
//!
//! Skips (with a note) only when Chromium is missing and ENVELOPE_TEST_REQUIRE_DOCKER is unset.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use envelope_runner::run::RunStatus;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::fake_github::{FakeGithub, ReleaseSpec};
use crate::support::*;

/// The Chromium binary: $CHROMIUM, or `chromium` / `chromium-browser` on the PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| [dir.join("chromium"), dir.join("chromium-browser")])
        .find(|candidate| candidate.is_file())
}

/// A headless Chromium and one page of it.
struct Chromium {
    child: tokio::process::Child,
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    /// Messages read while waiting for another answer.
    events: VecDeque<Value>,
    _profile: tempfile::TempDir,
}

impl Chromium {
    async fn launch(binary: &PathBuf) -> Chromium {
        let profile = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return url.trim().to_owned();
                }
            }
            panic!("chromium exited without opening the DevTools port");
        })
        .await
        .expect("chromium opens its DevTools port within 30 s");
        // Keep draining stderr so that Chromium never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        let mut browser = Chromium {
            child,
            socket,
            session: String::new(),
            next_id: 0,
            events: VecDeque::new(),
            _profile: profile,
        };
        let target = browser
            .call("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].as_str().unwrap().to_owned();
        let attached = browser
            .call(
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        browser.call("Page.enable", json!({})).await;
        browser
    }

    /// Send a command (to the page once attached) and wait for its answer.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .unwrap();
        loop {
            let next = tokio::time::timeout(Duration::from_secs(30), self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within 30 s"))
                .expect("the DevTools socket stays open")
                .unwrap();
            let Message::Text(text) = next else {
                continue;
            };
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["id"].as_u64() == Some(id) {
                if let Some(error) = value.get("error") {
                    panic!("{method} failed: {error}");
                }
                return value["result"].clone();
            }
            self.events.push_back(value);
            if self.events.len() > 1000 {
                self.events.pop_front();
            }
        }
    }

    /// Evaluate JavaScript in the page; `None` when the page is between documents.
    async fn try_eval(&mut self, expression: &str) -> Option<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({
            "id": id, "method": "Runtime.evaluate", "sessionId": self.session,
            "params": {"expression": expression, "returnByValue": true, "awaitPromise": true}
        });
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .ok()?;
        loop {
            let next = tokio::time::timeout(Duration::from_secs(30), self.socket.next())
                .await
                .ok()??
                .ok()?;
            let Message::Text(text) = next else {
                continue;
            };
            let value: Value = serde_json::from_str(&text).ok()?;
            if value["id"].as_u64() == Some(id) {
                if value.get("error").is_some() || value["result"].get("exceptionDetails").is_some()
                {
                    return None;
                }
                return Some(value["result"]["result"]["value"].clone());
            }
        }
    }

    async fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression)
            .await
            .unwrap_or_else(|| panic!("evaluating {expression} failed"))
    }

    /// Wait until `condition` (JavaScript) is true in a fully loaded page.
    async fn wait_until(&mut self, what: &str, condition: &str) {
        let expression = format!("document.readyState === 'complete' && ({condition})");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if self.try_eval(&expression).await == Some(json!(true)) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let text = self
                    .try_eval("document.body ? document.body.innerText : ''")
                    .await;
                panic!("timed out waiting for {what}; the page says: {text:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
    }

    /// Save a screenshot when ENVELOPE_TEST_SCREENSHOTS names a folder.
    async fn screenshot(&mut self, name: &str) {
        let Some(dir) = std::env::var_os("ENVELOPE_TEST_SCREENSHOTS") else {
            return;
        };
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(PathBuf::from(dir).join(format!("{name}.png")), bytes).unwrap();
    }

    async fn close(mut self) {
        let _ = self.socket.close(None).await;
        let _ = self.child.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_signs_in_and_approves_a_waiting_run_in_chromium() {
    let Some(binary) = chromium() else {
        assert!(
            std::env::var_os("ENVELOPE_TEST_REQUIRE_DOCKER").is_none(),
            "Chromium is missing (apt-get install chromium) and ENVELOPE_TEST_REQUIRE_DOCKER is set"
        );
        eprintln!("skipping the browser test: no chromium on the PATH (apt-get install chromium)");
        return;
    };
    let project = Project::new();
    let github = FakeGithub::start().await;
    github.add_repository(REPOSITORY);
    let store = TestStore::Sqlite(project.sqlite_url());
    let agent = start_agent(settings(&project, &github, "agent-1"), &store).await;
    project.tag("v4.0.0");
    let release = github.publish(REPOSITORY, ReleaseSpec::published("v4.0.0"));
    let run = wait_for_status(
        agent.store().as_ref(),
        release,
        RunStatus::Waiting,
        Duration::from_secs(20),
    )
    .await;
    let base = format!("http://{}", agent.address());
    let mut browser = Chromium::launch(&binary).await;

    // The run page sends a stranger to the sign-in form, and back after signing in.
    browser.navigate(&format!("{base}/runs/{}", run.id)).await;
    browser
        .wait_until("the sign-in form", "location.pathname === '/login'")
        .await;
    browser.screenshot("1-sign-in").await;
    browser
        .eval(&format!(
            "document.getElementById('token').value = '{ALICE_TOKEN}'; document.getElementById('sign-in').click(); true"
        ))
        .await;
    browser
        .wait_until(
            "the run page after signing in",
            &format!("location.pathname === '/runs/{}'", run.id),
        )
        .await;
    assert_eq!(
        browser.eval("document.cookie").await,
        json!(""),
        "the session cookie is HttpOnly: scripts cannot read it"
    );
    assert_eq!(
        browser
            .eval("document.querySelector('#approval h2').innerText")
            .await,
        json!("Awaiting approval at approval")
    );
    browser.screenshot("2-awaiting-approval").await;

    browser
        .eval("document.getElementById('comment').value = 'looks good'; document.getElementById('approve').click(); true")
        .await;
    // "Approved. The run goes on in a moment." while the run is still going, or "Approved." when
    // the run (one quick stage after the gate) finished before the page was drawn.
    browser
        .wait_until(
            "the approval notice",
            "document.body.innerText.includes('Approved.')",
        )
        .await;
    wait_for_status(
        agent.store().as_ref(),
        release,
        RunStatus::Succeeded,
        Duration::from_secs(20),
    )
    .await;
    // The run page, loaded again, shows the run proceeded and who approved it.
    browser.navigate(&format!("{base}/runs/{}", run.id)).await;
    browser
        .wait_until(
            "the finished run",
            "document.querySelector('h1 .status').innerText === 'succeeded'",
        )
        .await;
    let text = browser.eval("document.body.innerText").await;
    let text = text.as_str().unwrap();
    assert!(text.contains("approved by alice"), "{text}");
    assert!(text.contains("looks good"), "{text}");
    assert!(!text.contains("Awaiting approval"), "{text}");
    browser.screenshot("3-succeeded").await;
    let decision = agent
        .store()
        .approval(&run.id, "approval")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(decision.by, "alice");
    browser.close().await;
    agent.shutdown().await;
}
