//! Web sign-in sessions as the store keeps them: who signed in (or nobody yet, for the session
//! that protects the sign-in form) and the CSRF token of the session's forms, under the SHA-256
//! of the session id, so that reading the store (a backup, a table scan) signs nobody in.

use sha2::{Digest, Sha256};

/// One session's contents; its id and expiry are kept beside it by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The approver signed in, `None` for an anonymous session.
    pub approver: Option<String>,
    /// The token every form of this session carries back.
    pub csrf: String,
}

/// The key a session is stored under: the hex SHA-256 of its id (the cookie value).
pub(crate) fn session_key(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}
