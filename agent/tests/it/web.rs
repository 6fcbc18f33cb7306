//! The approval web UI over HTTP: what is reachable without signing in, sessions, CSRF, and an
//! approval that lets the run go on.

use std::time::Duration;

use envelope_runner::run::RunStatus;

use envelope_agent::config::{ApproverSettings, Settings};

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
    assert_eq!(health.status, 200, "{}", health.body);
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
    // The page the decision redirected to, read after the run finished, does not promise more.
    let after = alice.get(&format!("{run_path}?notice=approved")).await;
    assert!(after.body.contains("Approved."), "{}", after.body);
    assert!(
        !after.body.contains("goes on in a moment"),
        "{}",
        after.body
    );

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_sign_ins_from_one_address_are_refused_with_429_and_retry_after() {
    let project = Project::new();
    let github = FakeGithub::start().await;
    github.add_repository(REPOSITORY);
    let store = TestStore::Sqlite(project.sqlite_url());
    let agent = start_agent(settings(&project, &github, "agent-1"), &store).await;
    let guesser: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let neighbour: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let mut browser = Browser::from(guesser, agent.address());

    // Four failures cost nothing; the fifth locks the address out for a second.
    for attempt in 1..=4 {
        let refused = browser.sign_in("wrong-token-guess").await;
        assert_eq!(refused.status, 401, "attempt {attempt}: {refused:?}");
        assert_eq!(refused.header("retry-after"), None);
    }
    let fifth = browser.sign_in("wrong-token-guess").await;
    assert_eq!(fifth.status, 401, "{fifth:?}");
    assert_eq!(fifth.header("retry-after"), Some("1"));
    // While locked out even the right token is refused, without being looked at.
    let locked = browser.sign_in(ALICE_TOKEN).await;
    assert_eq!(locked.status, 429, "{locked:?}");
    assert_eq!(locked.header("retry-after"), Some("1"));
    assert!(locked.body.contains("failed too often"), "{}", locked.body);
    assert!(browser.cookie("envelope_session").is_none());
    // Another address is not held back.
    let mut colleague = Browser::from(neighbour, agent.address());
    assert_eq!(colleague.sign_in(BOB_TOKEN).await.status, 303);

    // After the wait, one more failure doubles it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let sixth = browser.sign_in("wrong-token-guess").await;
    assert_eq!(sixth.status, 401, "{sixth:?}");
    assert_eq!(sixth.header("retry-after"), Some("2"));
    assert_eq!(browser.sign_in(ALICE_TOKEN).await.status, 429);

    // A sign-in after the wait succeeds and clears the count.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(browser.sign_in(ALICE_TOKEN).await.status, 303);
    let mut again = Browser::from(guesser, agent.address());
    assert_eq!(again.sign_in("wrong-token-guess").await.status, 401);
    assert_eq!(again.sign_in(ALICE_TOKEN).await.status, 303);
    agent.shutdown().await;
}

/// Settings whose approvers are alice (GitHub user `alice-gh`) and bob.
fn settings_with_approvers(project: &Project, github: &FakeGithub) -> Settings {
    let mut settings = settings(project, github, "agent-1");
    let approver = |name: &str, login: Option<&str>| ApproverSettings {
        name: name.into(),
        token_env: format!("{}_TOKEN", name.to_uppercase()),
        github_login: login.map(str::to_owned),
        token_env_at: None,
    };
    settings.approvers = vec![approver("alice", Some("alice-gh")), approver("bob", None)];
    settings
}

/// Publish `tag` as `author` and wait for its run to stop at the gate; returns the run page.
async fn waiting_release(
    agent: &envelope_agent::Agent,
    project: &Project,
    github: &FakeGithub,
    tag: &str,
    author: &str,
) -> String {
    project.tag(tag);
    let release = github.publish(
        REPOSITORY,
        ReleaseSpec {
            author: author.into(),
            ..ReleaseSpec::published(tag)
        },
    );
    let run = wait_for_status(
        agent.store().as_ref(),
        release,
        RunStatus::Waiting,
        Duration::from_secs(20),
    )
    .await;
    format!("/runs/{}", run.id)
}

async fn decide(browser: &mut Browser, run_path: &str, decision: &str) -> HttpResponse {
    let page = browser.get(run_path).await;
    let csrf = page.hidden_input("csrf").expect("a decision form");
    browser
        .post(
            &format!("{run_path}/decision"),
            &[
                ("csrf", &csrf),
                ("stage", "approval"),
                ("decision", decision),
            ],
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_approvers_a_pipeline_lists_may_decide_its_gates() {
    let project = Project::new();
    let github = FakeGithub::start().await;
    github.add_repository(REPOSITORY);
    let mut settings = settings_with_approvers(&project, &github);
    settings.repositories[0].approvers = Some(vec!["bob".into()]);
    let store = TestStore::Sqlite(project.sqlite_url());
    let agent = start_agent(settings, &store).await;
    let run_path = waiting_release(&agent, &project, &github, "v4.0.0", "octocat").await;

    let mut alice = Browser::new(agent.address());
    assert_eq!(alice.sign_in(ALICE_TOKEN).await.status, 303);
    let page = alice.get(&run_path).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("alice is not an approver of pipeline `app`"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("id=\"approve\""), "{}", page.body);
    assert!(!page.body.contains("id=\"reject\""), "{}", page.body);
    // A form made by hand is refused too, for approving and rejecting alike.
    let csrf = alice
        .get("/")
        .await
        .hidden_input("csrf")
        .expect("the run list has the sign-out form");
    for decision in ["approve", "reject"] {
        let refused = alice
            .post(
                &format!("{run_path}/decision"),
                &[
                    ("csrf", &csrf),
                    ("stage", "approval"),
                    ("decision", decision),
                ],
            )
            .await;
        assert_eq!(refused.status, 403, "{decision}: {refused:?}");
        assert!(refused.body.contains("ask one of bob"), "{}", refused.body);
    }
    let run_id = envelope_runner::run::RunId(run_path.trim_start_matches("/runs/").into());
    assert!(
        agent
            .store()
            .approval(&run_id, "approval")
            .await
            .unwrap()
            .is_none()
    );

    let mut bob = Browser::new(agent.address());
    assert_eq!(bob.sign_in(BOB_TOKEN).await.status, 303);
    assert_eq!(decide(&mut bob, &run_path, "approve").await.status, 303);
    let decision = agent
        .store()
        .approval(&run_id, "approval")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(decision.by, "bob");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publisher_of_a_release_cannot_approve_it_unless_self_approval_is_allowed() {
    let project = Project::new();
    let github = FakeGithub::start().await;
    github.add_repository(REPOSITORY);
    let store = TestStore::Sqlite(project.sqlite_url());
    let agent = start_agent(settings_with_approvers(&project, &github), &store).await;
    // GitHub logins compare without regard to case.
    let run_path = waiting_release(&agent, &project, &github, "v5.0.0", "Alice-GH").await;
    let run_id = envelope_runner::run::RunId(run_path.trim_start_matches("/runs/").into());
    let record = agent.store().get_run(&run_id).await.unwrap().unwrap();
    assert!(
        matches!(
            &record.trigger.kind,
            envelope_runner::run::TriggerKind::Release { author: Some(author), .. } if author == "Alice-GH"
        ),
        "{:?}",
        record.trigger
    );

    let mut alice = Browser::new(agent.address());
    assert_eq!(alice.sign_in(ALICE_TOKEN).await.status, 303);
    let page = alice.get(&run_path).await;
    assert!(page.body.contains("published by Alice-GH"), "{}", page.body);
    assert!(
        page.body.contains("alice published this release"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("id=\"approve\""), "{}", page.body);
    assert!(page.body.contains("id=\"reject\""), "{}", page.body);
    let refused = decide(&mut alice, &run_path, "approve").await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(
        refused.body.contains("someone else must approve it"),
        "{}",
        refused.body
    );
    assert!(
        agent
            .store()
            .approval(&run_id, "approval")
            .await
            .unwrap()
            .is_none()
    );
    // Someone else may.
    let mut bob = Browser::new(agent.address());
    assert_eq!(bob.sign_in(BOB_TOKEN).await.status, 303);
    assert_eq!(decide(&mut bob, &run_path, "approve").await.status, 303);
    agent.shutdown().await;

    // With `allow_self_approval: true` the publisher may approve.
    let project = Project::new();
    let github = FakeGithub::start().await;
    github.add_repository(REPOSITORY);
    let store = TestStore::Sqlite(project.sqlite_url());
    let mut settings = settings_with_approvers(&project, &github);
    settings.allow_self_approval = true;
    let agent = start_agent(settings, &store).await;
    let run_path = waiting_release(&agent, &project, &github, "v5.0.1", "alice-gh").await;
    let mut alice = Browser::new(agent.address());
    assert_eq!(alice.sign_in(ALICE_TOKEN).await.status, 303);
    assert_eq!(decide(&mut alice, &run_path, "approve").await.status, 303);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_reports_the_store_docker_and_polling_and_answers_503_when_polling_stalls() {
    let project = Project::new();
    let github = FakeGithub::start().await;
    github.add_repository(REPOSITORY);
    let store = TestStore::Sqlite(project.sqlite_url());
    let agent = start_agent(settings(&project, &github, "agent-1"), &store).await;
    let address = agent.address();

    let health = wait_for(
        "a poll GitHub answered",
        Duration::from_secs(20),
        || async {
            let health = http(address, "GET", "/healthz", &[], b"").await;
            let report: serde_json::Value = serde_json::from_str(&health.body).ok()?;
            report["last_poll_seconds_ago"].as_f64()?;
            Some((health.status, report))
        },
    )
    .await;
    let (status, report) = health;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["status"], "ok", "{report}");
    assert_eq!(report["store"]["ok"], true, "{report}");
    assert_eq!(report["poll"]["ok"], true, "{report}");
    // The test pipeline builds nothing, so Docker is not needed.
    assert_eq!(report["docker"]["ok"], true, "{report}");
    assert!(
        report["docker"]["detail"]
            .as_str()
            .unwrap()
            .contains("no watched pipeline builds images"),
        "{report}"
    );

    // GitHub goes away: after three poll intervals without an answer the agent is unhealthy.
    drop(github);
    let (status, report) = wait_for(
        "/healthz to answer 503",
        Duration::from_secs(20),
        || async {
            let health = http(address, "GET", "/healthz", &[], b"").await;
            (health.status == 503).then(|| {
                (
                    health.status,
                    serde_json::from_str::<serde_json::Value>(&health.body).unwrap(),
                )
            })
        },
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(report["status"], "unhealthy", "{report}");
    assert_eq!(report["poll"]["ok"], false, "{report}");
    assert!(
        report["poll"]["detail"]
            .as_str()
            .unwrap()
            .contains("GitHub last answered a poll"),
        "{report}"
    );
    assert_eq!(report["store"]["ok"], true, "{report}");
    assert!(
        report["last_poll_seconds_ago"].as_f64().unwrap() > 0.6,
        "{report}"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_page_shows_the_diff_and_checks_the_gate_recorded_when_it_opened() {
    let project = Project::new();
    let github = FakeGithub::start().await;
    github.add_repository(REPOSITORY);
    let store = TestStore::Sqlite(project.sqlite_url());
    let agent = start_agent(settings(&project, &github, "agent-1"), &store).await;
    let run_path = waiting_release(&agent, &project, &github, "v1.7.0", "carol").await;
    let id = envelope_runner::run::RunId(run_path.trim_start_matches("/runs/").to_owned());
    // What the driver keeps in the gate's record when it opens before ECS stages (this
    // project's pipeline has none, so the test writes it as the driver would).
    let record = agent.store().get_run(&id).await.unwrap().unwrap();
    let mut gate = record.stage("approval").unwrap().clone();
    gate.outputs.changes = vec![
        "deploy `deploy`, service envelope-prod-api (envelope-api:3):".into(),
        "  container api: image r/api@sha256:aa → r/api@sha256:bb".into(),
        "deploy `deploy`, service envelope-prod-worker: diff unavailable: <ECS said no>".into(),
    ];
    gate.outputs.planned_checks = vec![
        "after `deploy`: GET https://api.example/up must answer 200 with a body containing \"Application up\" (retried every 5s for up to 2m)".into(),
    ];
    agent.store().save_stage(&id, &gate).await.unwrap();

    let mut alice = Browser::new(agent.address());
    alice.sign_in(ALICE_TOKEN).await;
    let page = alice.get(&run_path).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Awaiting approval"), "{}", page.body);
    assert!(
        page.body.contains(
            "<pre id=\"changes\">deploy `deploy`, service envelope-prod-api (envelope-api:3):\n  \
             container api: image r/api@sha256:aa → r/api@sha256:bb\n"
        ),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("diff unavailable: &lt;ECS said no&gt;"),
        "escaped: {}",
        page.body
    );
    assert!(
        page.body.contains(
            "<ul id=\"checks\"><li>after `deploy`: GET https://api.example/up must answer 200 \
             with a body containing &quot;Application up&quot;"
        ),
        "{}",
        page.body
    );
    agent.shutdown().await;
}
