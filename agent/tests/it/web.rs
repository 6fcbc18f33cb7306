//! The approval web UI over HTTP: what is reachable without signing in, sessions, CSRF, and an
//! approval that lets the run go on.

use std::time::Duration;

use envelope_runner::run::RunStatus;

use crate::fake_github::{FakeGithub, ReleaseSpec};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_health_sign_in_and_the_webhook_answer_without_signing_in() {
    let project = Project::new();
    let github = FakeGithub::start().await;
    github.add_repository(REPOSITORY);
    let store = TestStore::Sqlite(project.sqlite_url());
    let agent = start_agent(settings(&project, &github, "agent-1"), &store).await;
    let address = agent.address();

    let health = http(address, "GET", "/healthz", &[], b"").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let login = http(address, "GET", "/login", &[], b"").await;
    assert_eq!(login.status, 200);
    for path in ["/", "/runs/01jabcdefghjkmnpqrstvwxyz0", "/anything/else"] {
        let response = http(address, "GET", path, &[], b"").await;
        assert_eq!(response.status, 303, "GET {path}: {response:?}");
        assert!(
            response
                .header("location")
                .unwrap()
                .starts_with("/login?next="),
            "{response:?}"
        );
    }
    for path in ["/runs/01jabcdefghjkmnpqrstvwxyz0/decision", "/logout"] {
        let response = http(address, "POST", path, &[], b"decision=approve").await;
        assert_eq!(response.status, 401, "POST {path}: {response:?}");
    }
    let metrics = http(address, "GET", "/metrics", &[], b"").await;
    assert_eq!(metrics.status, 401);
    let wrong = http(
        address,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer not-a-token")],
        b"",
    )
    .await;
    assert_eq!(wrong.status, 401);
    for token in [METRICS_TOKEN, ALICE_TOKEN] {
        let allowed = http(
            address,
            "GET",
            "/metrics",
            &[("Authorization", &format!("Bearer {token}"))],
            b"",
        )
        .await;
        assert_eq!(allowed.status, 200);
    }
    // Every answer carries the security headers.
    let csp = login.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(login.header("x-frame-options"), Some("DENY"));
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_signs_in_and_approves_with_the_sessions_csrf_token() {
    let project = Project::new();
    let github = FakeGithub::start().await;
    github.add_repository(REPOSITORY);
    let store = TestStore::Sqlite(project.sqlite_url());
    let agent = start_agent(settings(&project, &github, "agent-1"), &store).await;
    project.tag("v1.2.0");
    let release = github.publish(REPOSITORY, ReleaseSpec::published("v1.2.0"));
    let run = wait_for_status(
        agent.store().as_ref(),
        release,
        RunStatus::Waiting,
        Duration::from_secs(20),
    )
    .await;
    let run_path = format!("/runs/{}", run.id);
    let decision_path = format!("{run_path}/decision");

    // A wrong token is refused; the sign-in form needs its own CSRF token.
    let mut alice = Browser::new(agent.address());
    let refused = alice.sign_in("not-a-token").await;
    assert_eq!(refused.status, 401);
    assert!(refused.body.contains("not valid"));
    let no_csrf = alice.post("/login", &[("token", ALICE_TOKEN)]).await;
    assert_eq!(no_csrf.status, 403);

    let signed_in = alice.sign_in(ALICE_TOKEN).await;
    assert_eq!(signed_in.status, 303, "{signed_in:?}");
    let cookie = signed_in
        .headers_named("set-cookie")
        .find(|value| value.starts_with("envelope_session="))
        .expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert_eq!(alice.cookie("envelope_session").unwrap().len(), 64);

    let list = alice.get("/").await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains(&run.id.0), "{}", list.body);
    let page = alice.get(&run_path).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Awaiting approval"), "{}", page.body);
    assert!(
        page.body.contains("[source]"),
        "the log shows: {}",
        page.body
    );
    let csrf = page.hidden_input("csrf").unwrap();

    // Without the token, with a wrong one, or with another session's: refused.
    let mut bob = Browser::new(agent.address());
    assert_eq!(bob.sign_in(BOB_TOKEN).await.status, 303);
    let bobs_csrf = bob.get(&run_path).await.hidden_input("csrf").unwrap();
    assert_ne!(bobs_csrf, csrf);
    for fields in [
        vec![("stage", "approval"), ("decision", "approve")],
        vec![
            ("csrf", "0123"),
            ("stage", "approval"),
            ("decision", "approve"),
        ],
        vec![
            ("csrf", bobs_csrf.as_str()),
            ("stage", "approval"),
            ("decision", "approve"),
        ],
    ] {
        let refused = alice.post(&decision_path, &fields).await;
        assert_eq!(refused.status, 403, "{fields:?}: {refused:?}");
    }
    // A bearer token may look but not decide.
    let bearer = http(
        agent.address(),
        "POST",
        &decision_path,
        &[
            ("Authorization", &format!("Bearer {ALICE_TOKEN}")),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        format!("csrf={csrf}&stage=approval&decision=approve").as_bytes(),
    )
    .await;
    assert_eq!(bearer.status, 403);
    assert!(
        agent
            .store()
            .approval(&run.id, "approval")
            .await
            .unwrap()
            .is_none()
    );

    let approved = alice
        .post(
            &decision_path,
            &[
                ("csrf", &csrf),
                ("stage", "approval"),
                ("decision", "approve"),
                ("comment", "ship it"),
            ],
        )
        .await;
    assert_eq!(approved.status, 303, "{approved:?}");
    assert_eq!(
        approved.header("location"),
        Some(format!("{run_path}?notice=approved").as_str())
    );
    let decision = agent
        .store()
        .approval(&run.id, "approval")
        .await
        .unwrap()
        .unwrap();
    assert!(decision.approved);
    assert_eq!(decision.by, "alice");
    assert_eq!(decision.comment.as_deref(), Some("ship it"));

    // The agent resumes the run, which now succeeds.
    wait_for_status(
        agent.store().as_ref(),
        release,
        RunStatus::Succeeded,
        Duration::from_secs(20),
    )
    .await;
    let done = alice.get(&run_path).await;
    assert!(
        done.body.contains("approved by <b>alice</b>"),
        "{}",
        done.body
    );
    assert!(!done.body.contains("Awaiting approval"));

    // Bob's late decision changes nothing; signing out ends the session.
    let late = bob
        .post(
            &decision_path,
            &[
                ("csrf", &bobs_csrf),
                ("stage", "approval"),
                ("decision", "reject"),
            ],
        )
        .await;
    assert_eq!(late.status, 409, "{late:?}");
    let out = alice.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    assert_eq!(alice.get("/").await.status, 303);
    agent.shutdown().await;
}
