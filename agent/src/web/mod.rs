//! The agent's HTTP server: health, metrics, the GitHub webhook and the approval web UI.
//!
//! Reachable without signing in: `GET /healthz`, `POST /webhooks/github` (which checks its
//! own signature) and the sign-in form. Everything else needs an approver: a session from
//! the sign-in form, or an approver token as `Authorization: Bearer` (read-only: forms need
//! a session's CSRF token). `/metrics` also takes the metrics token. Responses carry a strict
//! Content-Security-Policy; pages are server-rendered HTML without JavaScript.

mod decide;
mod gate_changes;
mod login_backoff;
pub mod pages;
mod run;
mod serve;
pub mod session;

pub use serve::run;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{DefaultBodyLimit, Extension, Form, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use envelope_runner::run::RunId;
use envelope_runner::secret::Secret;
use envelope_runner::store::Store;
use serde::Deserialize;

use crate::approval_rules::ApprovalRules;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::poller::Poller;
use crate::scheduler::Scheduler;
pub use login_backoff::LoginBackoff;
use pages::Viewer;
use session::{LOGIN_COOKIE, SESSION_COOKIE, Sessions, bearer, cookie, same};

/// Runs per page of the list.
const RUNS_PER_PAGE: usize = 50;
/// Runs counted for `/metrics`.
const METRICS_RUNS: usize = 1000;

/// What the handlers share.
pub struct App {
    pub store: Arc<dyn Store>,
    pub scheduler: Scheduler,
    pub poller: Arc<Poller>,
    pub sessions: Sessions,
    /// Failed sign-ins by client address.
    pub login_backoff: LoginBackoff,
    /// Who may decide which gate.
    pub rules: ApprovalRules,
    pub health: Health,
    pub metrics: Arc<Metrics>,
    pub webhook_secret: Option<Secret>,
    pub project: PathBuf,
}

/// The approver a request acts for.
#[derive(Debug, Clone)]
struct SignedIn {
    name: String,
    /// Present for a session; a bearer token cannot post forms.
    csrf: Option<String>,
    session: Option<String>,
}

impl SignedIn {
    fn viewer(&self) -> Viewer<'_> {
        Viewer {
            name: &self.name,
            csrf: self.csrf.as_deref(),
        }
    }
}

/// The routes, with authentication and security headers.
pub fn router(app: Arc<App>) -> Router {
    let protected = Router::new()
        .route("/", get(runs_page))
        .route("/runs/{id}", get(run::run_page))
        .route("/runs/{id}/decision", post(decide::decide))
        .route("/logout", post(logout))
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            require_approver,
        ));
    let mut public = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/login", get(login_form).post(login));
    if app.webhook_secret.is_some() {
        public = public.route(
            "/webhooks/github",
            post(crate::webhook::receive)
                .layer(DefaultBodyLimit::max(crate::webhook::MAX_BODY_BYTES)),
        );
    }
    public
        .merge(protected)
        .fallback(fallback)
        .layer(middleware::from_fn(security_headers))
        .with_state(app)
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn signed_in(app: &App, headers: &HeaderMap) -> Option<SignedIn> {
    if let Some((id, session)) = app.sessions.signed_in(headers).await {
        return Some(SignedIn {
            name: session.approver.unwrap_or_default(),
            csrf: Some(session.csrf),
            session: Some(id),
        });
    }
    let name = app.sessions.approver_for(bearer(headers)?)?;
    Some(SignedIn {
        name,
        csrf: None,
        session: None,
    })
}

async fn require_approver(
    State(app): State<Arc<App>>,
    mut request: Request,
    next: Next,
) -> Response {
    match signed_in(&app, request.headers()).await {
        Some(signed) => {
            request.extensions_mut().insert(signed);
            next.run(request).await
        }
        None => unauthenticated(request.method(), request.uri()),
    }
}

fn unauthenticated(method: &Method, uri: &axum::http::Uri) -> Response {
    if method == Method::GET {
        let next = uri
            .path_and_query()
            .map(|path| path.as_str())
            .unwrap_or("/");
        Redirect::to(&format!("/login?next={}", query_escape(next))).into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Html(pages::message(
                None,
                "Sign in first",
                "Only approvers can do this; sign in with your approver token.",
                "/login",
            )),
        )
            .into_response()
    }
}

async fn fallback(State(app): State<Arc<App>>, request: Request) -> Response {
    match signed_in(&app, request.headers()).await {
        Some(signed) => (
            StatusCode::NOT_FOUND,
            Html(pages::message(
                Some(&signed.viewer()),
                "Not found",
                "There is no such page.",
                "/",
            )),
        )
            .into_response(),
        None => unauthenticated(request.method(), request.uri()),
    }
}

/// Percent-encode a value for a query string.
fn query_escape(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Where to go after signing in: a path on this site, never elsewhere.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.contains('\\')
                && path.chars().all(|c| c.is_ascii_graphic()) =>
        {
            path.to_owned()
        }
        _ => "/".to_owned(),
    }
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    let report = app.health.report().await;
    let status = if report.healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report)).into_response()
}

async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let allowed = bearer(&headers).is_some_and(|token| app.sessions.is_metrics_token(token))
        || signed_in(&app, &headers).await.is_some();
    if !allowed {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"envelope-agent\"")],
            "metrics need the metrics token or an approver token as a bearer token\n",
        )
            .into_response();
    }
    let mut runs: BTreeMap<(String, String), u64> = BTreeMap::new();
    match app.store.list_runs(None, METRICS_RUNS, None).await {
        Ok(list) => {
            for run in list {
                *runs
                    .entry((run.pipeline, run.status.as_str().to_owned()))
                    .or_default() += 1;
            }
        }
        Err(error) => tracing::warn!("metrics: cannot count runs: {error}"),
    }
    let (executing, queued) = app.scheduler.job_counts();
    app.metrics.jobs(executing, queued);
    let format = crate::metrics::Format::from_accept(
        headers
            .get(header::ACCEPT)
            .and_then(|accept| accept.to_str().ok()),
    );
    (
        [(header::CONTENT_TYPE, format.content_type())],
        app.metrics.render_as(format, &runs),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn login_form(State(app): State<Arc<App>>, Query(query): Query<NextQuery>) -> Response {
    let next = local_path(query.next.as_deref());
    let (id, session) = match app.sessions.create(None).await {
        Ok(created) => created,
        Err(error) => return store_unavailable(&error),
    };
    (
        [(
            header::SET_COOKIE,
            app.sessions.set_cookie(LOGIN_COOKIE, Some(&id)),
        )],
        Html(pages::login(&session.csrf, &next, None)),
    )
        .into_response()
}

/// The answer when the store that keeps sessions cannot be written.
fn store_unavailable(error: &envelope_runner::store::StoreError) -> Response {
    tracing::error!("keeping a web session in the store failed: {error}");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(pages::message(
            None,
            "Sign-in unavailable",
            "The agent cannot reach its state store; try again in a few minutes.",
            "/login",
        )),
    )
        .into_response()
}

fn forbidden_form(viewer: Option<&Viewer>, back: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        Html(pages::message(
            viewer,
            "Form expired",
            "The form expired or did not come from this site. Open the page again and retry.",
            back,
        )),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
    next: Option<String>,
}

/// `Retry-After` seconds: the wait rounded up, at least one.
fn retry_after_seconds(wait: std::time::Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

async fn login(
    State(app): State<Arc<App>>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = local_path(form.next.as_deref());
    // Behind a reverse proxy every client has the proxy's address: they share one count.
    let client = client
        .map(|Extension(ConnectInfo(address))| address.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    if let Some(wait) = app
        .login_backoff
        .retry_after(client, std::time::Instant::now())
    {
        let seconds = retry_after_seconds(wait);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, seconds.to_string())],
            Html(pages::message(
                None,
                "Too many failed sign-ins",
                &format!(
                    "Sign-ins from your address failed too often. Wait {seconds} s, then sign in with the approver token you were given."
                ),
                "/login",
            )),
        )
            .into_response();
    }
    let login_session = match cookie(&headers, LOGIN_COOKIE) {
        Some(id) => app.sessions.get(&id).await.map(|session| (id, session)),
        None => None,
    }
    .filter(|(_, session)| session.approver.is_none());
    let Some((login_id, login_session)) = login_session else {
        return forbidden_form(None, "/login");
    };
    if form.csrf.is_empty() || !same(&form.csrf, &login_session.csrf) {
        return forbidden_form(None, "/login");
    }
    let Some(name) = app.sessions.approver_for(form.token.trim()) else {
        let wait = app.login_backoff.failed(client, std::time::Instant::now());
        tracing::warn!(
            client = %client,
            "a sign-in with an unknown approver token from {client} was refused{}",
            wait.map(|wait| format!("; that address now waits {} s", retry_after_seconds(wait)))
                .unwrap_or_default()
        );
        let mut response = (
            StatusCode::UNAUTHORIZED,
            Html(pages::login(
                &login_session.csrf,
                &next,
                Some("That token is not valid. Use the approver token you were given."),
            )),
        )
            .into_response();
        if let Some(wait) = wait {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_seconds(wait)),
            );
        }
        return response;
    };
    app.login_backoff.succeeded(client);
    if let Err(error) = app.sessions.remove(&login_id).await {
        return store_unavailable(&error);
    }
    let id = match app.sessions.create(Some(name.clone())).await {
        Ok((id, _)) => id,
        Err(error) => return store_unavailable(&error),
    };
    tracing::info!(approver = %name, "{name} signed in to the web UI");
    let mut response = Redirect::to(&next).into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        app.sessions.set_cookie(SESSION_COOKIE, Some(&id)),
    );
    headers.append(
        header::SET_COOKIE,
        app.sessions.set_cookie(LOGIN_COOKIE, None),
    );
    response
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(app): State<Arc<App>>,
    Extension(signed): Extension<SignedIn>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let (Some(session), Some(csrf)) = (&signed.session, &signed.csrf) else {
        return forbidden_form(Some(&signed.viewer()), "/");
    };
    if form.csrf.is_empty() || !same(&form.csrf, csrf) {
        return forbidden_form(Some(&signed.viewer()), "/");
    }
    if let Err(error) = app.sessions.remove(session).await {
        return store_unavailable(&error);
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        app.sessions.set_cookie(SESSION_COOKIE, None),
    );
    response
}

#[derive(Debug, Deserialize)]
struct RunsQuery {
    before: Option<String>,
}

async fn runs_page(
    State(app): State<Arc<App>>,
    Extension(signed): Extension<SignedIn>,
    Query(query): Query<RunsQuery>,
) -> Response {
    let before = query.before.map(RunId);
    match app
        .store
        .list_runs(None, RUNS_PER_PAGE, before.as_ref())
        .await
    {
        Ok(runs) => {
            let older = (runs.len() == RUNS_PER_PAGE)
                .then(|| runs.last().map(|run| run.id.clone()))
                .flatten();
            Html(pages::runs(&signed.viewer(), &runs, older.as_ref())).into_response()
        }
        Err(error) => store_error(&signed, &error),
    }
}

fn store_error(signed: &SignedIn, error: &envelope_runner::store::StoreError) -> Response {
    tracing::error!("web UI: {error}");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(pages::message(
            Some(&signed.viewer()),
            "The store did not answer",
            &error.to_string(),
            "/",
        )),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_only_returns_to_pages_of_this_site() {
        for (next, expected) in [
            (Some("/runs/01abc"), "/runs/01abc"),
            (Some("/?before=x"), "/?before=x"),
            (Some("//evil.example/x"), "/"),
            (Some("https://evil.example/"), "/"),
            (Some("/\\evil.example"), "/"),
            (Some("/runs/ü"), "/"),
            (Some("/runs/a b"), "/"),
            (None, "/"),
        ] {
            assert_eq!(local_path(next), expected, "{next:?}");
        }
        assert_eq!(query_escape("/runs/a b?x=1&y"), "/runs/a%20b%3Fx%3D1%26y");
    }
}
