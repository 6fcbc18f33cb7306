//! The web UI's pages as HTML strings: sign-in, runs, one run with its approval. Pure
//! functions of what the handlers read; every value from a run is escaped. No JavaScript: a
//! running run's page refreshes itself with a meta refresh.

use std::fmt::Write;

use envelope_runner::run::{ApprovalRecord, RunId, RunRecord, RunStatus};
use envelope_runner::store::RunSummary;

/// Text safe inside HTML elements and quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
header{display:flex;gap:1rem;align-items:center;padding:.6rem 1.2rem;background:#1d232a;color:#fff}
header a{color:#fff;font-weight:600;text-decoration:none}header .who{margin-left:auto;opacity:.8}
header form{margin:0}main{max-width:70rem;margin:1.2rem auto;padding:0 1.2rem}
table{border-collapse:collapse;width:100%;background:#fff}th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #e3e6ea;vertical-align:top;overflow-wrap:anywhere}
.status{display:inline-block;padding:0 .45rem;border-radius:.6rem;font-size:.85em;background:#e3e6ea}
.succeeded{background:#d3f3dc}.failed,.rejected{background:#fbd5d5}.running{background:#d6e6fb}.waiting,.queued{background:#fdf0c4}
.panel{background:#fff;border:1px solid #e3e6ea;border-radius:.4rem;padding:.8rem 1rem;margin:1rem 0}
.approval{border-color:#e0b400;background:#fffbea}
pre{background:#111820;color:#dfe6ee;padding:.8rem;border-radius:.4rem;overflow:auto;font-size:13px}
code{font-size:.92em}.error{color:#a11}.muted{color:#677}
button{font:inherit;padding:.3rem .9rem;border-radius:.3rem;border:1px solid #889;background:#fff;cursor:pointer}
button.approve{background:#1f7a3a;color:#fff;border-color:#1f7a3a}button.reject{background:#a11;color:#fff;border-color:#a11}
input[type=password],input[type=text]{font:inherit;padding:.3rem;width:22rem;max-width:100%}
";

/// Who is looking, for the header and the forms.
pub struct Viewer<'a> {
    pub name: &'a str,
    /// The session's CSRF token; `None` for a bearer-token viewer, who cannot post forms.
    pub csrf: Option<&'a str>,
}

fn layout(title: &str, viewer: Option<&Viewer>, refresh: Option<u32>, body: &str) -> String {
    let refresh = refresh
        .map(|seconds| format!("<meta http-equiv=\"refresh\" content=\"{seconds}\">"))
        .unwrap_or_default();
    let who = match viewer {
        Some(Viewer {
            name,
            csrf: Some(csrf),
        }) => format!(
            "<span class=\"who\">signed in as {}</span><form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>Sign out</button></form>",
            escape(name),
            escape(csrf)
        ),
        Some(Viewer { name, csrf: None }) => {
            format!("<span class=\"who\">token of {}</span>", escape(name))
        }
        None => String::new(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{refresh}<title>{} · envelope-runner</title><style>{STYLE}</style></head><body><header><a href=\"/\">envelope-runner</a>{who}</header><main>{body}</main></body></html>\n",
        escape(title)
    )
}

fn status_badge(status: &str) -> String {
    format!("<span class=\"status {status}\">{status}</span>")
}

/// The sign-in page.
pub fn login(csrf: &str, next: &str, error: Option<&str>) -> String {
    let error = error
        .map(|message| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(message)))
        .unwrap_or_default();
    let already = if next != "/" {
        format!(
            "<p class=\"muted\">Already signed in? <a href=\"{}\">Continue to the page you opened</a>.</p>",
            escape(next)
        )
    } else {
        String::new()
    };
    let body = format!(
        "<h1>Sign in</h1>{error}<form class=\"panel\" method=\"post\" action=\"/login\">\
<p><label for=\"token\">Approver token</label><br><input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus></p>\
<input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"next\" value=\"{}\">\
<p><button id=\"sign-in\" type=\"submit\">Sign in</button></p></form>{already}\
<p class=\"muted\">Only people listed as approvers in the agent's configuration can see runs and decide approvals.</p>",
        escape(csrf),
        escape(next)
    );
    layout("Sign in", None, None, &body)
}

/// The list of runs, newest first.
pub fn runs(viewer: &Viewer, runs: &[RunSummary], older: Option<&RunId>) -> String {
    let mut body = String::from("<h1>Runs</h1>");
    if runs.is_empty() {
        body.push_str(
            "<p class=\"muted\">No runs yet. A new release of a watched repository starts one.</p>",
        );
    } else {
        body.push_str("<table><thead><tr><th>Run</th><th>Pipeline</th><th>Status</th><th>Release</th><th>Stage</th><th>Started</th></tr></thead><tbody>");
        for run in runs {
            let _ = write!(
                body,
                "<tr><td><a href=\"/runs/{id}\"><code>{id}</code></a></td><td>{pipeline}</td><td>{status}</td><td>{release}</td><td>{stage}</td><td>{created}</td></tr>",
                id = escape(&run.id.0),
                pipeline = escape(&run.pipeline),
                status = status_badge(run.status.as_str()),
                release = escape(run.tag.as_deref().unwrap_or(&run.git_ref)),
                stage = escape(run.current_stage.as_deref().unwrap_or("")),
                created = escape(&run.created_at),
            );
        }
        body.push_str("</tbody></table>");
    }
    if let Some(older) = older {
        let _ = write!(
            body,
            "<p><a href=\"/?before={}\">Older runs</a></p>",
            escape(&older.0)
        );
    }
    layout("Runs", Some(viewer), None, &body)
}

/// A migrate stage as the approver sees it.
pub struct MigrationView {
    pub stage: String,
    pub cluster: String,
    pub service: String,
    pub container: String,
    pub command: Vec<String>,
}

/// A deploy stage as the approver sees it.
pub struct DeployView {
    pub stage: String,
    pub cluster: String,
    pub services: Vec<String>,
}

/// Everything the run page shows.
pub struct RunView<'a> {
    pub record: &'a RunRecord,
    /// Decisions by approval stage.
    pub decisions: Vec<(String, Option<ApprovalRecord>)>,
    /// The gate a person can decide now.
    pub open_gate: Option<String>,
    /// Why the viewer may not approve or reject it (see the approval rules).
    pub cannot_approve: Option<String>,
    pub cannot_reject: Option<String>,
    /// When the open gate fails closed, RFC 3339.
    pub gate_deadline: Option<String>,
    pub migrations: Vec<MigrationView>,
    pub deploys: Vec<DeployView>,
    /// Lines the run recorded for the open gate (a task definition diff, for example).
    pub recorded_for_gate: Vec<String>,
    pub log: Vec<String>,
    /// Earlier log lines not shown.
    pub log_hidden: usize,
    pub notice: Option<&'a str>,
}

/// One run: status, what awaits approval, stages, outputs and log.
pub fn run(viewer: &Viewer, view: &RunView) -> String {
    let record = view.record;
    let status = record.status.as_str();
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Run <code>{}</code> {}</h1><p>Pipeline <b>{}</b> · release <b>{}</b>{} · started {}{}</p>",
        escape(&record.id.0),
        status_badge(status),
        escape(&record.pipeline),
        escape(
            record
                .trigger
                .tag
                .as_deref()
                .unwrap_or(&record.trigger.git_ref)
        ),
        trigger_text(record),
        escape(&record.created_at),
        record
            .finished_at
            .as_deref()
            .map(|at| format!(" · finished {}", escape(at)))
            .unwrap_or_default(),
    );
    if let Some(notice) = view.notice {
        let _ = write!(
            body,
            "<p class=\"panel\" role=\"status\">{}</p>",
            escape(notice)
        );
    }
    let images: Vec<(&str, &str)> = record
        .stages
        .iter()
        .filter_map(|stage| {
            let image = stage
                .outputs
                .image
                .as_deref()
                .or(stage.outputs.digest.as_deref())?;
            Some((stage.name.as_str(), image))
        })
        .collect();
    if let Some(gate) = &view.open_gate {
        approval_panel(&mut body, viewer, view, gate, &images);
    }
    body.push_str("<h2>Stages</h2><table><thead><tr><th>Stage</th><th>Kind</th><th>Status</th><th>Started</th><th>Finished</th><th>Detail</th></tr></thead><tbody>");
    for stage in &record.stages {
        let mut detail = String::new();
        if let Some(error) = &stage.error {
            let _ = write!(detail, "<span class=\"error\">{}</span>", escape(error));
        }
        let outputs = &stage.outputs;
        if let Some(sha) = &outputs.sha {
            let _ = write!(detail, "commit <code>{}</code>", escape(sha));
        }
        if let Some(image) = &outputs.image {
            let _ = write!(detail, "image <code>{}</code>", escape(image));
        }
        for (service, arn) in &outputs.task_definitions {
            let _ = write!(
                detail,
                "<div>{}: <code>{}</code></div>",
                escape(service),
                escape(arn)
            );
        }
        if let Some(code) = outputs.exit_code {
            let _ = write!(detail, "<div>exit code {code}</div>");
        }
        if let Some(decision) = &outputs.approval {
            detail.push_str(&decision_text(decision));
        }
        let _ = write!(
            body,
            "<tr id=\"stage-{name}\"><td>{name}</td><td>{kind}</td><td>{status}</td><td>{started}</td><td>{finished}</td><td>{detail}</td></tr>",
            name = escape(&stage.name),
            kind = stage.kind,
            status = status_badge(stage.status.as_str()),
            started = escape(stage.started_at.as_deref().unwrap_or("")),
            finished = escape(stage.finished_at.as_deref().unwrap_or("")),
        );
    }
    body.push_str("</tbody></table>");
    let decided: Vec<_> = view
        .decisions
        .iter()
        .filter_map(|(stage, decision)| Some((stage, decision.as_ref()?)))
        .collect();
    if !decided.is_empty() {
        body.push_str("<h2>Decisions</h2><ul>");
        for (stage, decision) in decided {
            let _ = write!(
                body,
                "<li><b>{}</b>: {}</li>",
                escape(stage),
                decision_text(decision)
            );
        }
        body.push_str("</ul>");
    }
    let _ = write!(body, "<h2>Log</h2>");
    if view.log_hidden > 0 {
        let _ = write!(
            body,
            "<p class=\"muted\">{} earlier lines not shown; <code>envelope-runner logs {}</code> prints them all.</p>",
            view.log_hidden,
            escape(&record.id.0)
        );
    }
    body.push_str("<pre id=\"log\">");
    for line in &view.log {
        body.push_str(&escape(line));
        body.push('\n');
    }
    body.push_str("</pre>");
    let refresh = matches!(record.status, RunStatus::Running | RunStatus::Queued).then_some(3);
    layout(
        &format!("Run {} ({status})", record.id),
        Some(viewer),
        refresh,
        &body,
    )
}

fn trigger_text(record: &RunRecord) -> String {
    use envelope_runner::run::TriggerKind;
    match &record.trigger.kind {
        TriggerKind::Release {
            repository,
            release_id,
            author,
        } => format!(
            " of {} (release id {release_id}{})",
            escape(repository),
            author
                .as_deref()
                .map(|author| format!(", published by {}", escape(author)))
                .unwrap_or_default()
        ),
        TriggerKind::Cli { user } => format!(" · started by {} at a terminal", escape(user)),
        TriggerKind::Local { user } => format!(" · local build by {}", escape(user)),
        TriggerKind::GithubActions { actor, .. } => {
            format!(" · GitHub Actions ({})", escape(actor))
        }
        TriggerKind::Rollback { from_run } => format!(" · rollback to {}", escape(&from_run.0)),
        TriggerKind::Promotion {
            from_run,
            from_pipeline,
        } => format!(
            " · promotion of {} ({})",
            escape(&from_run.0),
            escape(from_pipeline)
        ),
    }
}

fn decision_text(decision: &ApprovalRecord) -> String {
    format!(
        "{} by <b>{}</b> at {}{}",
        if decision.approved {
            "approved"
        } else {
            "rejected"
        },
        escape(&decision.by),
        escape(&decision.at),
        decision
            .comment
            .as_deref()
            .map(|comment| format!(": “{}”", escape(comment)))
            .unwrap_or_default()
    )
}

fn approval_panel(
    body: &mut String,
    viewer: &Viewer,
    view: &RunView,
    gate: &str,
    images: &[(&str, &str)],
) {
    let _ = write!(
        body,
        "<section class=\"panel approval\" id=\"approval\"><h2>Awaiting approval at <code>{}</code></h2>",
        escape(gate)
    );
    if let Some(deadline) = &view.gate_deadline {
        let _ = write!(
            body,
            "<p class=\"muted\">Without a decision the gate fails closed at {}.</p>",
            escape(deadline)
        );
    }
    if images.is_empty() {
        body.push_str("<p>No image was pushed before this gate.</p>");
    } else {
        body.push_str("<h3>Image</h3><ul>");
        for (stage, image) in images {
            let _ = write!(
                body,
                "<li>{}: <code>{}</code></li>",
                escape(stage),
                escape(image)
            );
        }
        body.push_str("</ul>");
    }
    for migration in &view.migrations {
        let _ = write!(
            body,
            "<h3>Migration ({})</h3><p>Runs in container <code>{}</code> of service <code>{}</code> on cluster <code>{}</code>:</p><pre>{}</pre>",
            escape(&migration.stage),
            escape(&migration.container),
            escape(&migration.service),
            escape(&migration.cluster),
            escape(&migration.command.join(" "))
        );
    }
    for deploy in &view.deploys {
        let _ = write!(
            body,
            "<h3>Deploy ({})</h3><p>Rolls these services of cluster <code>{}</code> to the image above:</p><ul>",
            escape(&deploy.stage),
            escape(&deploy.cluster)
        );
        for service in &deploy.services {
            let _ = write!(body, "<li><code>{}</code></li>", escape(service));
        }
        body.push_str("</ul>");
    }
    let ecs_stages_follow = !view.deploys.is_empty() || !view.migrations.is_empty();
    super::gate_changes::section(body, view.record.stage(gate), ecs_stages_follow);
    if !view.recorded_for_gate.is_empty() {
        body.push_str("<h3>Recorded at this gate</h3><pre id=\"recorded\">");
        for line in &view.recorded_for_gate {
            body.push_str(&escape(line));
            body.push('\n');
        }
        body.push_str("</pre>");
    }
    if let Some(reason) = view.cannot_approve.as_ref().or(view.cannot_reject.as_ref()) {
        let _ = write!(
            body,
            "<p class=\"muted\" id=\"refusal\">{}.</p>",
            escape(reason)
        );
    }
    match viewer.csrf {
        Some(_) if view.cannot_approve.is_some() && view.cannot_reject.is_some() => {}
        Some(csrf) => {
            let approve = if view.cannot_approve.is_none() {
                format!(
                    "<button id=\"approve\" class=\"approve\" name=\"decision\" value=\"approve\">Approve as {}</button> ",
                    escape(viewer.name)
                )
            } else {
                String::new()
            };
            let _ = write!(
                body,
                "<form method=\"post\" action=\"/runs/{id}/decision\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"stage\" value=\"{gate}\">\
<p><label for=\"comment\">Comment (recorded with the decision)</label><br><input id=\"comment\" name=\"comment\" type=\"text\" maxlength=\"500\"></p>\
<p>{approve}<button id=\"reject\" class=\"reject\" name=\"decision\" value=\"reject\">Reject</button></p></form>",
                id = escape(&view.record.id.0),
                csrf = escape(csrf),
                gate = escape(gate),
            );
        }
        None => body.push_str("<p class=\"muted\">Sign in with the form to approve or reject.</p>"),
    }
    body.push_str("</section>");
}

/// A short page for errors and refusals.
pub fn message(viewer: Option<&Viewer>, title: &str, text: &str, back: &str) -> String {
    let body = format!(
        "<h1>{}</h1><p>{}</p><p><a href=\"{}\">Back</a></p>",
        escape(title),
        escape(text),
        escape(back)
    );
    layout(title, viewer, None, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_that_could_open_markup() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn the_approval_panel_shows_image_migration_services_and_the_forms() {
        use envelope_runner::run::{
            RunTrigger, StageOutputs, StageRecord, StageStatus, TriggerKind,
        };
        let stage = |name: &str, kind: &str, status, outputs| StageRecord {
            name: name.into(),
            kind: kind.parse().unwrap(),
            status,
            started_at: Some("2026-11-26T09:00:00Z".into()),
            finished_at: None,
            outputs,
            error: None,
        };
        let record = RunRecord {
            id: RunId("01jrun".into()),
            pipeline: "api".into(),
            status: RunStatus::Waiting,
            trigger: RunTrigger {
                kind: TriggerKind::Release {
                    repository: "epactltd/api".into(),
                    release_id: 7,
                    author: Some("<b>octocat</b>".into()),
                },
                git_ref: "<script>v1</script>".into(),
                sha: None,
                tag: Some("<script>v1</script>".into()),
            },
            created_at: "2026-11-26T09:00:00Z".into(),
            finished_at: None,
            context: Default::default(),
            stages: vec![
                stage(
                    "build-push",
                    "push",
                    StageStatus::Succeeded,
                    StageOutputs {
                        image: Some("1.dkr.ecr/envelope-api@sha256:abc".into()),
                        ..StageOutputs::default()
                    },
                ),
                stage(
                    "approval",
                    "approval",
                    StageStatus::Waiting,
                    StageOutputs::default(),
                ),
            ],
        };
        let view = RunView {
            record: &record,
            decisions: vec![("approval".into(), None)],
            open_gate: Some("approval".into()),
            cannot_approve: None,
            cannot_reject: None,
            gate_deadline: Some("2026-12-03T09:00:00Z".into()),
            migrations: vec![MigrationView {
                stage: "migrate".into(),
                cluster: "prod".into(),
                service: "envelope-prod-api".into(),
                container: "api".into(),
                command: vec![
                    "php".into(),
                    "artisan".into(),
                    "migrate".into(),
                    "--force".into(),
                ],
            }],
            deploys: vec![DeployView {
                stage: "deploy".into(),
                cluster: "prod".into(),
                services: vec!["envelope-prod-api".into(), "envelope-prod-worker".into()],
            }],
            recorded_for_gate: vec!["envelope-prod-api: image api → …@sha256:abc".into()],
            log: vec!["[approval] waiting".into()],
            log_hidden: 0,
            notice: None,
        };
        let page = run(
            &Viewer {
                name: "alice",
                csrf: Some("tok"),
            },
            &view,
        );
        for expected in [
            "Awaiting approval at <code>approval</code>",
            "1.dkr.ecr/envelope-api@sha256:abc",
            "<pre>php artisan migrate --force</pre>",
            "<li><code>envelope-prod-worker</code></li>",
            "envelope-prod-api: image api → …@sha256:abc",
            "name=\"csrf\" value=\"tok\"",
            "action=\"/runs/01jrun/decision\"",
            "&lt;script&gt;v1&lt;/script&gt;",
            "published by &lt;b&gt;octocat&lt;/b&gt;",
            "id=\"approve\"",
        ] {
            assert!(page.contains(expected), "missing {expected} in\n{page}");
        }
        assert!(!page.contains("<script>"));
        assert!(
            !page.contains("http-equiv=\"refresh\""),
            "a waiting run does not reload"
        );
    }

    #[test]
    fn the_login_form_carries_its_csrf_token_and_where_to_go_next() {
        let page = login("c5rf", "/runs/01abc", Some("That token is not valid."));
        assert!(page.contains("name=\"csrf\" value=\"c5rf\""));
        assert!(page.contains("name=\"next\" value=\"/runs/01abc\""));
        assert!(page.contains("That token is not valid."));
        assert!(!page.contains("<script"));
    }
}
