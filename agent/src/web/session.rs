//! Web UI sign-in: approver tokens, sessions and CSRF tokens.
//!
//! An approver signs in once with their token; the agent answers with a session cookie
//! (`HttpOnly`, `SameSite=Strict`, a random 256-bit id, `Secure` behind HTTPS). Each session
//! has its own random CSRF token, which every form carries and every POST must return. The
//! sign-in form itself is protected the same way by a short-lived anonymous session under a
//! separate cookie, so that opening the sign-in page never signs anyone out.
//!
//! Sessions live in the run state store (under the SHA-256 of their id, expiring by the
//! store's clock), so every agent on the same store honours them, a restarted agent keeps
//! everyone signed in, and signing out on one agent signs out on all.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use envelope_runner::secret::Secret;
use envelope_runner::store::{SessionRecord, Store, StoreError};
use rand::TryRngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The signed-in session.
pub const SESSION_COOKIE: &str = "envelope_session";
/// The anonymous session that protects the sign-in form.
pub const LOGIN_COOKIE: &str = "envelope_login";
/// How long the sign-in form stays valid.
const LOGIN_TTL: Duration = Duration::from_secs(30 * 60);

/// One session: who signed in (or nobody yet), and the token its forms carry.
pub type Session = SessionRecord;

/// The sessions in the store, and the approvers who may open one.
pub struct Sessions {
    store: Arc<dyn Store>,
    /// Approver names with the SHA-256 of their tokens.
    approvers: Vec<(String, [u8; 32])>,
    metrics_token: Option<[u8; 32]>,
    ttl: Duration,
    secure: bool,
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// 256 random bits from the operating system, as hex.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system's random number generator works");
    hex::encode(bytes)
}

/// Equal in constant time (for strings of equal length; lengths are not secret).
pub fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

impl Sessions {
    pub fn new(
        store: Arc<dyn Store>,
        approvers: &[(String, Secret)],
        metrics_token: Option<&Secret>,
        ttl: Duration,
        secure: bool,
    ) -> Self {
        Sessions {
            store,
            approvers: approvers
                .iter()
                .map(|(name, token)| (name.clone(), digest(token.expose())))
                .collect(),
            metrics_token: metrics_token.map(|token| digest(token.expose())),
            ttl,
            secure,
        }
    }

    /// The approver whose token this is. Every configured token is compared, in constant
    /// time, so the answer takes as long whoever (if anyone) matches.
    pub fn approver_for(&self, token: &str) -> Option<String> {
        let given = digest(token);
        let mut found = None;
        for (name, expected) in &self.approvers {
            if bool::from(given.ct_eq(expected)) && found.is_none() {
                found = Some(name.clone());
            }
        }
        found
    }

    pub fn is_metrics_token(&self, token: &str) -> bool {
        self.metrics_token
            .is_some_and(|expected| bool::from(digest(token).ct_eq(&expected)))
    }

    /// A new session (anonymous when `approver` is `None`) in the store; returns its id.
    pub async fn create(&self, approver: Option<String>) -> Result<(String, Session), StoreError> {
        let ttl = if approver.is_some() {
            self.ttl
        } else {
            LOGIN_TTL
        };
        let id = random_token();
        let session = Session {
            approver,
            csrf: random_token(),
        };
        self.store.put_session(&id, &session, ttl).await?;
        Ok((id, session))
    }

    /// The live session with this id. A store that cannot be read counts as no session (the
    /// person is asked to sign in again), and is logged.
    pub async fn get(&self, id: &str) -> Option<Session> {
        match self.store.session(id).await {
            Ok(session) => session,
            Err(error) => {
                tracing::warn!("reading a web session failed: {error}");
                None
            }
        }
    }

    /// Ends the session in the store, for every agent on it.
    pub async fn remove(&self, id: &str) -> Result<(), StoreError> {
        self.store.delete_session(id).await
    }

    /// The signed-in session the request's cookie names: (id, session).
    pub async fn signed_in(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = cookie(headers, SESSION_COOKIE)?;
        let session = self.get(&id).await?;
        session.approver.is_some().then_some((id, session))
    }

    /// A `Set-Cookie` value for `name` (`None` clears it).
    pub fn set_cookie(&self, name: &str, id: Option<&str>) -> HeaderValue {
        let max_age = match (id, name) {
            (None, _) => 0,
            (Some(_), LOGIN_COOKIE) => LOGIN_TTL.as_secs(),
            (Some(_), _) => self.ttl.as_secs(),
        };
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{name}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}",
            id.unwrap_or("")
        ))
        .expect("cookie values are hex")
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
        .filter(|value| !value.is_empty())
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions_in(store: Arc<dyn Store>) -> Sessions {
        Sessions::new(
            store,
            &[
                ("alice".into(), Secret::new("alice-token")),
                ("bob".into(), Secret::new("bob-token")),
            ],
            Some(&Secret::new("scrape")),
            Duration::from_secs(3600),
            true,
        )
    }

    /// Sessions in an SQLite store of their own; the directory lives as long as the test.
    fn sessions() -> (tempfile::TempDir, Sessions) {
        let directory = tempfile::tempdir().unwrap();
        let store =
            envelope_runner::store::open_sqlite(&directory.path().join("state.db")).unwrap();
        (directory, sessions_in(Arc::new(store)))
    }

    #[test]
    fn tokens_name_their_approver() {
        let (_directory, sessions) = sessions();
        assert_eq!(sessions.approver_for("bob-token").as_deref(), Some("bob"));
        assert_eq!(sessions.approver_for("bob-token "), None);
        assert_eq!(sessions.approver_for(""), None);
        assert!(sessions.is_metrics_token("scrape"));
        assert!(!sessions.is_metrics_token("alice-token"));
    }

    #[tokio::test]
    async fn sessions_are_random_and_carry_their_own_csrf_token() {
        let (_directory, sessions) = sessions();
        let (first, one) = sessions.create(Some("alice".into())).await.unwrap();
        let (second, two) = sessions.create(Some("alice".into())).await.unwrap();
        assert_ne!(first, second);
        assert_ne!(one.csrf, two.csrf);
        assert_eq!(first.len(), 64);
        assert_eq!(sessions.get(&first).await.unwrap().csrf, one.csrf);
        sessions.remove(&first).await.unwrap();
        assert!(sessions.get(&first).await.is_none());
        assert_eq!(sessions.get(&second).await, Some(two));
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_behind_https() {
        let (_directory, sessions) = sessions();
        let value = sessions.set_cookie(SESSION_COOKIE, Some("abc"));
        assert_eq!(
            value.to_str().unwrap(),
            "envelope_session=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=3600; Secure"
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; envelope_session=abc; other=1"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&headers, LOGIN_COOKIE), None);
    }
}
