//! What can go wrong in a push, in words a user can act on, and which failures are worth
//! another attempt.
//!
//! The Docker daemon reports registry failures as text (`unauthorized: authentication
//! required`, `dial tcp 127.0.0.1:5999: connect: connection refused`, `tag invalid: ...`), so
//! the push classifies that text. Every detail that reaches an error passes through
//! [`redact`] first: no message ever carries a password or token.

use super::reference::ReferenceError;

/// A push that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    InvalidRequest(#[from] ReferenceError),

    #[error("nothing to push to {repository}: no tags were given\n  hint: list at least one tag")]
    NoTags { repository: String },

    #[error(
        "the image `{image}` is not in the local Docker daemon, so it cannot be pushed to \
         {repository}\n  hint: the build stage produces it; check that the build ran on this \
         machine and that the push names the image it built"
    )]
    LocalImageMissing { image: String, repository: String },

    #[error(
        "the Docker daemon failed while {action}: {detail}\n  hint: check that dockerd is \
         running and that this user can reach it (`docker info`)"
    )]
    Docker { action: String, detail: String },

    #[error(
        "cannot reach the registry at {registry} to push {repository}: {detail}\n  hint: check \
         that the registry is running and that {registry} is the right host and port (a \
         registry endpoint override replaces the repository's host)"
    )]
    RegistryUnreachable {
        registry: String,
        repository: String,
        detail: String,
    },

    #[error(
        "the registry at {registry} refused {who} for {repository}: {detail}\n  hint: check the \
         user and password; an ECR token expires 12 hours after it was issued and works only in \
         the region it was issued for"
    )]
    AuthRefused {
        registry: String,
        repository: String,
        /// `the credentials of user AWS`, or `an anonymous push` without credentials.
        who: String,
        detail: String,
    },

    #[error(
        "the tag `{tag}` already exists in {repository}, whose tags are immutable, so it cannot \
         be pushed again: {detail}\n  hint: give every release a new tag (for example the git \
         sha), or make the repository's tags mutable"
    )]
    TagImmutable {
        repository: String,
        tag: String,
        detail: String,
    },

    #[error(
        "the repository {repository} does not exist in the registry at {registry}: {detail}\n  \
         hint: create it (for ECR: `aws ecr create-repository --repository-name {name}`), or let \
         the push create it when missing"
    )]
    RepositoryMissing {
        repository: String,
        registry: String,
        /// The repository's path inside the registry (ECR's repository name).
        name: String,
        detail: String,
    },

    #[error(
        "the push of {target} was cut off midway ({attempts} attempt(s)): {detail}\n  hint: the \
         connection to the registry dropped; run again, layers already uploaded are skipped"
    )]
    Interrupted {
        target: String,
        attempts: u32,
        detail: String,
    },

    #[error(
        "the registry at {registry} failed the push of {target} ({attempts} attempt(s)): \
         {detail}\n  hint: the registry answered with a server error or throttled the push; \
         try again later"
    )]
    RegistryFailed {
        registry: String,
        target: String,
        attempts: u32,
        detail: String,
    },

    #[error("the registry at {registry} rejected the push of {target}: {detail}")]
    Rejected {
        registry: String,
        target: String,
        detail: String,
    },

    #[error(
        "the registry resolves {reference} to {actual}, but the push produced {expected}\n  \
         hint: something else pushed the same tag at the same time; run again"
    )]
    DigestMismatch {
        reference: String,
        expected: String,
        actual: String,
    },

    #[error("could not confirm {reference} in the registry at {registry} after the push: {detail}")]
    VerifyFailed {
        reference: String,
        registry: String,
        detail: String,
    },
}

impl PushError {
    /// Whether the failure lies in the environment (Docker daemon, registry, network,
    /// credentials, a missing repository) rather than in the pipeline or its image: maps to
    /// [`crate::exit_codes::ENVIRONMENT`].
    pub fn is_environment(&self) -> bool {
        match self {
            PushError::Docker { .. }
            | PushError::RegistryUnreachable { .. }
            | PushError::AuthRefused { .. }
            | PushError::RepositoryMissing { .. }
            | PushError::Interrupted { .. }
            | PushError::RegistryFailed { .. } => true,
            PushError::InvalidRequest(_)
            | PushError::NoTags { .. }
            | PushError::LocalImageMissing { .. }
            | PushError::TagImmutable { .. }
            | PushError::Rejected { .. }
            | PushError::DigestMismatch { .. }
            | PushError::VerifyFailed { .. } => false,
        }
    }
}

/// What a registry or daemon failure message means for the user and for a retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// Nothing listens there, the name does not resolve, TLS cannot be set up.
    Unreachable,
    /// Wrong, missing or expired credentials, or no permission.
    AuthRefused,
    /// The tag exists in a repository with immutable tags.
    TagImmutable,
    /// The repository does not exist (ECR does not create repositories on push).
    RepositoryMissing,
    /// The daemon has no such image.
    LocalImageMissing,
    /// The connection dropped midway: reset, broken pipe, EOF, timeout after connecting.
    Interrupted,
    /// A 5xx answer or throttling.
    ServerFailure,
    /// Anything else the registry said no to.
    Other,
}

impl FailureKind {
    /// Whether another attempt can help.
    pub(crate) fn is_retryable(self) -> bool {
        matches!(self, FailureKind::Interrupted | FailureKind::ServerFailure)
    }
}

/// Classifies a failure message from the Docker daemon or a registry.
pub(crate) fn classify(message: &str) -> FailureKind {
    let text = message.to_ascii_lowercase();
    let has = |needle: &str| text.contains(needle);
    if has("tag invalid")
        || has("is immutable")
        || has("imagetagalreadyexists")
        || (has("already exists") && has("cannot be overwritten"))
    {
        FailureKind::TagImmutable
    } else if has("unauthorized")
        || has("authentication required")
        || has("no basic auth credentials")
        || has("denied")
        || has("forbidden")
        || has("authorization token has expired")
        || has("incorrect username or password")
    {
        FailureKind::AuthRefused
    } else if has("name unknown")
        || has("nameunknown")
        || has("repository name not known")
        || has("repositorynotfound")
        || (has("repository") && has("does not exist") && !has("locally"))
    {
        FailureKind::RepositoryMissing
    } else if has("does not exist locally") || has("no such image") {
        FailureKind::LocalImageMissing
    } else if has("connection refused")
        || has("no such host")
        || has("network is unreachable")
        || has("no route to host")
        || has("server misbehaving")
        || has("http response to https client")
        || has("x509:")
        || has("certificate")
        || (has("dial tcp") && has("timeout"))
    {
        FailureKind::Unreachable
    } else if has("connection reset")
        || has("broken pipe")
        || has("unexpected eof")
        || has("closed network connection")
        || has("i/o timeout")
        || has("tls handshake timeout")
        || has("goaway")
        || has("server closed")
        || has("connection closed")
        || ends_with_word(&text, "eof")
    {
        FailureKind::Interrupted
    } else if has("toomanyrequests")
        || has("too many requests")
        || has("rate exceeded")
        || has("throttl")
        || has("unexpected http status: 5")
        || has("internal server error")
        || has("bad gateway")
        || has("service unavailable")
        || has("gateway timeout")
        // A manifest naming a layer the daemon saw accepted, which the registry then cannot
        // find: what registry:2 answers when identical layers are pushed at once. Another
        // attempt uploads what is missing.
        || has("blob unknown to registry")
    {
        FailureKind::ServerFailure
    } else {
        FailureKind::Other
    }
}

fn ends_with_word(text: &str, word: &str) -> bool {
    let trimmed = text.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    trimmed.ends_with(word)
        && trimmed[..trimmed.len() - word.len()]
            .chars()
            .last()
            .is_none_or(|c| !c.is_ascii_alphanumeric())
}

/// `text` with the registry password replaced by `[REDACTED]`, also in its base64 forms, alone
/// or as the `user:password` auth string. Empty secrets are ignored.
pub(crate) fn redact(text: &str, username: Option<&str>, secrets: &[&str]) -> String {
    let redactor = crate::redact::Redactor::new();
    for secret in secrets {
        match username {
            Some(username) => redactor.add_basic_auth(username, secret),
            None => redactor.add(secret),
        }
    }
    redactor.redact(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_and_registry_messages_are_classified() {
        use FailureKind::*;
        let cases = [
            ("unauthorized: authentication required", AuthRefused),
            ("no basic auth credentials", AuthRefused),
            (
                "denied: Your authorization token has expired. Reauthenticate and try again.",
                AuthRefused,
            ),
            (
                "denied: User: arn:aws:iam::1:user/ci is not authorized to perform: \
                 ecr:InitiateLayerUpload",
                AuthRefused,
            ),
            ("tag invalid: tag 'v1' is immutable", TagImmutable),
            (
                "errors:\ndigest invalid\nmanifest blob unknown: blob unknown to registry",
                ServerFailure,
            ),
            (
                "tag invalid: The image tag 'v1' already exists in the 'api' repository and \
                 cannot be overwritten because the repository is immutable.",
                TagImmutable,
            ),
            (
                "name unknown: repository name not known to registry: probe/nothere",
                RepositoryMissing,
            ),
            (
                "name unknown: The repository with name 'api' does not exist in the registry \
                 with id '123456789012'",
                RepositoryMissing,
            ),
            (
                "An image does not exist locally with the tag: 127.0.0.1:5000/x",
                LocalImageMissing,
            ),
            (
                "Get \"http://127.0.0.1:5999/v2/\": dial tcp 127.0.0.1:5999: connect: \
                 connection refused",
                Unreachable,
            ),
            (
                "Get \"https://nope.invalid/v2/\": dial tcp: lookup nope.invalid: no such host",
                Unreachable,
            ),
            (
                "Get \"https://10.1.1.1/v2/\": dial tcp 10.1.1.1:443: i/o timeout",
                Unreachable,
            ),
            (
                "Put \"http://127.0.0.1:5000/v2/x/blobs/uploads/1\": read tcp \
                 127.0.0.1:1->127.0.0.1:5000: read: connection reset by peer",
                Interrupted,
            ),
            (
                "write tcp 127.0.0.1:1->127.0.0.1:5000: write: broken pipe",
                Interrupted,
            ),
            (
                "Patch \"http://127.0.0.1:5000/v2/x/blobs/uploads/1\": EOF",
                Interrupted,
            ),
            ("unexpected EOF", Interrupted),
            (
                "received unexpected HTTP status: 503 Service Unavailable",
                ServerFailure,
            ),
            (
                "received unexpected HTTP status: 500 Internal Server Error",
                ServerFailure,
            ),
            ("toomanyrequests: Rate exceeded", ServerFailure),
            ("manifest invalid: manifest invalid", Other),
        ];
        for (message, kind) in cases {
            assert_eq!(classify(message), kind, "{message}");
        }
    }

    #[test]
    fn only_transient_failures_are_retried() {
        use FailureKind::*;
        for kind in [Interrupted, ServerFailure] {
            assert!(kind.is_retryable(), "{kind:?}");
        }
        for kind in [
            Unreachable,
            AuthRefused,
            TagImmutable,
            RepositoryMissing,
            LocalImageMissing,
            Other,
        ] {
            assert!(!kind.is_retryable(), "{kind:?}");
        }
    }

    #[test]
    fn redaction_removes_secrets_and_their_base64_forms() {
        use base64::Engine as _;
        let password = "s3cr3t-token-value";
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"));
        let text = format!(
            "bad {password} and {auth} and {}",
            base64::engine::general_purpose::STANDARD.encode(password)
        );
        let redacted = redact(&text, Some("AWS"), &[password]);
        assert_eq!(redacted, "bad [REDACTED] and [REDACTED] and [REDACTED]");
        assert_eq!(
            redact("nothing here", Some("AWS"), &[password, ""]),
            "nothing here"
        );
    }

    /// Every message a user can get from a push, rendered as they read it.
    #[test]
    fn error_messages_read_well() {
        let registry = || "127.0.0.1:4566".to_string();
        let repository = || "123456789012.dkr.ecr.eu-west-2.amazonaws.com/envelope/api".to_string();
        let target = || "127.0.0.1:4566/envelope/api:v1".to_string();
        let errors = [
            PushError::InvalidRequest(ReferenceError::Tag { tag: "v 1".into() }),
            PushError::NoTags {
                repository: repository(),
            },
            PushError::LocalImageMissing {
                image: "sha256:0123".into(),
                repository: repository(),
            },
            PushError::Docker {
                action: "looking up the local image `app:1`".into(),
                detail: "error trying to connect: No such file or directory (os error 2)".into(),
            },
            PushError::RegistryUnreachable {
                registry: registry(),
                repository: repository(),
                detail: "Get \"http://127.0.0.1:4566/v2/\": dial tcp 127.0.0.1:4566: connect: \
                         connection refused"
                    .into(),
            },
            PushError::AuthRefused {
                registry: registry(),
                repository: repository(),
                who: "the credentials of user `AWS`".into(),
                detail: "unauthorized: authentication required".into(),
            },
            PushError::TagImmutable {
                repository: repository(),
                tag: "v1".into(),
                detail: "tag invalid: tag 'v1' is immutable".into(),
            },
            PushError::RepositoryMissing {
                repository: repository(),
                registry: registry(),
                name: "envelope/api".into(),
                detail: "name unknown: repository name not known to registry: envelope/api".into(),
            },
            PushError::Interrupted {
                target: target(),
                attempts: 4,
                detail: "Patch \"http://127.0.0.1:4566/v2/envelope/api/blobs/uploads/1\": EOF"
                    .into(),
            },
            PushError::RegistryFailed {
                registry: registry(),
                target: target(),
                attempts: 4,
                detail: "received unexpected HTTP status: 503 Service Unavailable".into(),
            },
            PushError::Rejected {
                registry: registry(),
                target: target(),
                detail: "manifest invalid: manifest invalid".into(),
            },
            PushError::DigestMismatch {
                reference: format!("{}:v1", repository()),
                expected: "sha256:1111".into(),
                actual: "sha256:2222".into(),
            },
            PushError::VerifyFailed {
                reference: format!("{}:v1", repository()),
                registry: registry(),
                detail: "ManifestUnknown: manifest unknown to registry".into(),
            },
        ];
        let rendered = errors
            .iter()
            .map(|error| format!("[environment: {}]\n{error}", error.is_environment()))
            .collect::<Vec<_>>()
            .join("\n\n");
        insta::assert_snapshot!(rendered);
    }

    #[test]
    fn environment_errors_are_told_apart() {
        let unreachable = PushError::RegistryUnreachable {
            registry: "127.0.0.1:5999".into(),
            repository: "127.0.0.1:5999/app".into(),
            detail: "connection refused".into(),
        };
        assert!(unreachable.is_environment());
        let immutable = PushError::TagImmutable {
            repository: "r".into(),
            tag: "v1".into(),
            detail: "tag invalid".into(),
        };
        assert!(!immutable.is_environment());
    }
}
