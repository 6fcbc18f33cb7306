//! Talking to the remote through libgit2: fetches (full, shallow, by object id), turning
//! libgit2's errors into `SourceError`s without credentials, and throttled transfer progress.

use std::path::Path;
use std::time::{Duration, Instant};

use git2::{
    AutotagOption, Direction, ErrorClass, ErrorCode, FetchOptions, FetchPrune, Oid,
    RemoteCallbacks, Repository,
};

use super::reference::Reference;
use super::url::RemoteUrl;
use super::{SourceError, SourceProgress, http};
use crate::secret::Secret;

/// Transfer progress arrives for every few objects; a reporter needs a few updates a second.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FetchShape {
    /// Refspecs with wildcards into a full mirror; refs the remote deleted are pruned.
    Mirror,
    /// Depth 1 of one ref.
    Shallow,
    /// Objects by id; no refs change.
    Objects,
}

/// The URL and token of one repository; makes libgit2 callbacks and turns its errors into
/// [`SourceError`]s.
pub(super) struct Session<'a> {
    pub(super) url: &'a RemoteUrl,
    pub(super) token: Option<&'a Secret>,
}

impl<'a> Session<'a> {
    pub(super) fn fetch(
        &self,
        repo: &Repository,
        refspecs: &[String],
        shape: FetchShape,
        progress: &mut dyn FnMut(SourceProgress),
    ) -> Result<(), SourceError> {
        let _token = self.transport_token();
        let mut remote = repo
            .remote_anonymous(&self.url.fetch)
            .map_err(|error| self.error(error))?;
        let mut options = self.fetch_options(shape, progress);
        // An explicit reflog message: libgit2's default would record the URL, credentials and
        // all.
        remote
            .fetch(refspecs, Some(&mut options), Some("envelope-runner fetch"))
            .map_err(|error| self.error(error))
    }

    /// Fetch depth 1 of the one ref the reference means. Returns false when the reference is a
    /// commit at no ref's tip (only a full fetch can find it).
    pub(super) fn fetch_shallow(
        &self,
        repo: &Repository,
        reference: &Reference,
        progress: &mut dyn FnMut(SourceProgress),
    ) -> Result<bool, SourceError> {
        let _token = self.transport_token();
        let mut remote = repo
            .remote_anonymous(&self.url.fetch)
            .map_err(|error| self.error(error))?;
        // One connection for listing refs and fetching: over HTTP the listing is the first
        // request of the fetch anyway, so this costs no extra round trip.
        let mut connection = remote
            .connect_auth(Direction::Fetch, None, None)
            .map_err(|error| self.error(error))?;
        let advertised: Vec<(String, Oid)> = connection
            .list()
            .map_err(|error| self.error(error))?
            .iter()
            .map(|head| (head.name().to_string(), head.oid()))
            .collect();
        let Some((name, oid)) = pick_advertised(&advertised, reference) else {
            return match reference {
                Reference::Commit(_) => Ok(false),
                _ => Err(reference.not_found(self.url)),
            };
        };
        // A shallow mirror that already has this ref at this id has nothing to fetch.
        if repo.refname_to_id(&name).is_ok_and(|local| local == oid) {
            return Ok(true);
        }
        let mut options = self.fetch_options(FetchShape::Shallow, progress);
        connection
            .remote()
            .fetch(
                &[format!("+{name}:{name}")],
                Some(&mut options),
                Some("envelope-runner fetch"),
            )
            .map_err(|error| self.error(error))?;
        Ok(true)
    }

    /// Hands the token to the HTTP transport for the fetches made until the guard drops.
    fn transport_token(&self) -> http::TokenGuard {
        http::register();
        http::with_token(&self.url.fetch, self.token)
    }

    fn fetch_options<'cb>(
        &'cb self,
        shape: FetchShape,
        progress: &'cb mut dyn FnMut(SourceProgress),
    ) -> FetchOptions<'cb> {
        // The token travels with the HTTP transport (`http`), not through libgit2's credential
        // callback.
        let mut callbacks = RemoteCallbacks::new();
        let mut reporter = TransferReporter::default();
        callbacks.transfer_progress(move |stats| {
            reporter.report(
                stats.received_objects(),
                stats.total_objects(),
                stats.received_bytes(),
                progress,
            );
            true
        });
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(callbacks)
            // FETCH_HEAD is of no use to a mirror and is one more file to write.
            .update_fetchhead(false)
            // Tags come through the explicit refs/tags/* refspec or not at all.
            .download_tags(AutotagOption::None)
            .prune(match shape {
                FetchShape::Mirror => FetchPrune::On,
                FetchShape::Shallow | FetchShape::Objects => FetchPrune::Off,
            });
        if shape == FetchShape::Shallow {
            options.depth(1);
        }
        options
    }

    fn error(&self, error: git2::Error) -> SourceError {
        let url = self.url.redacted.clone();
        let status = http_status(error.message());
        if error.code() == ErrorCode::Auth || matches!(status, Some(401 | 403)) {
            return SourceError::AuthenticationFailed {
                url,
                token_given: self.token.is_some(),
            };
        }
        if status == Some(404) || (self.url.is_local() && !Path::new(&self.url.fetch).exists()) {
            return SourceError::RepositoryNotFound { url };
        }
        let detail = self.scrub(error.message());
        if let Some((_, reason)) = detail.split_once("invalid peer certificate: ") {
            return SourceError::UntrustedCertificate {
                url,
                detail: reason.trim_end_matches(')').to_owned(),
            };
        }
        match error.class() {
            ErrorClass::Net | ErrorClass::Http | ErrorClass::Ssl => {
                SourceError::Network { url, detail }
            }
            ErrorClass::Os if detail.starts_with("failed to connect") => {
                SourceError::Network { url, detail }
            }
            _ => SourceError::Git { url, detail },
        }
    }

    /// A libgit2 message without the credentials it may quote.
    fn scrub(&self, message: &str) -> String {
        let mut message = message.replace(&self.url.fetch, &self.url.redacted);
        if let Some(token) = self.token.filter(|token| !token.is_empty()) {
            message = message.replace(token.expose(), "***");
        }
        message
    }
}

/// The status in libgit2's "unexpected http status code: 404".
pub(super) fn http_status(message: &str) -> Option<u16> {
    message
        .strip_prefix("unexpected http status code: ")?
        .trim()
        .parse()
        .ok()
}

/// The advertised ref to fetch for `reference`, with the id the remote has for it.
fn pick_advertised(advertised: &[(String, Oid)], reference: &Reference) -> Option<(String, Oid)> {
    let find = |name: &str| {
        advertised
            .iter()
            .find(|(advertised_name, _)| advertised_name == name)
            .cloned()
    };
    match reference {
        Reference::Commit(oid) => {
            // An annotated tag is advertised twice: as the tag object and, with `^{}`, peeled
            // to its commit.
            let tip = advertised
                .iter()
                .filter(|(_, id)| id == oid)
                .map(|(name, _)| name.trim_end_matches("^{}"))
                .find(|name| name.starts_with("refs/heads/") || name.starts_with("refs/tags/"))?;
            find(tip)
        }
        _ => reference
            .candidates()
            .iter()
            .find_map(|candidate| find(candidate)),
    }
}

/// Turns libgit2's per-object progress into a few events a second.
#[derive(Default)]
struct TransferReporter {
    last: Option<(Instant, usize, usize)>,
}

impl TransferReporter {
    fn report(
        &mut self,
        received_objects: usize,
        total_objects: usize,
        received_bytes: usize,
        progress: &mut dyn FnMut(SourceProgress),
    ) {
        let now = Instant::now();
        let due = match self.last {
            None => true,
            // libgit2 keeps reporting while it resolves deltas; the counts no longer change.
            Some((_, received, total))
                if received == received_objects && total == total_objects =>
            {
                false
            }
            Some((at, _, _)) => {
                received_objects == total_objects || now.duration_since(at) >= PROGRESS_INTERVAL
            }
        };
        if due {
            self.last = Some((now, received_objects, total_objects));
            progress(SourceProgress::Transfer {
                received_objects,
                total_objects,
                received_bytes,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_refs_are_picked_tag_first_and_peeled() {
        let oid = |n: u8| Oid::from_bytes(&[n; 20]).unwrap();
        let advertised = vec![
            ("HEAD".to_string(), oid(1)),
            ("refs/heads/main".to_string(), oid(1)),
            ("refs/heads/v2".to_string(), oid(2)),
            ("refs/tags/v2".to_string(), oid(3)),
            ("refs/tags/v2^{}".to_string(), oid(4)),
        ];
        let pick = |reference: Reference| pick_advertised(&advertised, &reference);
        assert_eq!(
            pick(Reference::Name("v2".into())),
            Some(("refs/tags/v2".into(), oid(3)))
        );
        assert_eq!(
            pick(Reference::Name("main".into())),
            Some(("refs/heads/main".into(), oid(1)))
        );
        assert_eq!(
            pick(Reference::Commit(oid(4))),
            Some(("refs/tags/v2".into(), oid(3)))
        );
        assert_eq!(pick(Reference::Commit(oid(9))), None);
        assert_eq!(pick(Reference::Name("v9".into())), None);
    }

    #[test]
    fn transfer_progress_is_throttled_and_ends_complete() {
        let mut events = Vec::new();
        let mut reporter = TransferReporter::default();
        for received in 0..=1000 {
            reporter.report(received, 1000, received * 10, &mut |event| {
                events.push(event)
            });
        }
        // Deltas being resolved: the same counts again, not worth an event.
        reporter.report(1000, 1000, 10_000, &mut |event| events.push(event));
        assert!(events.len() < 10, "{} events", events.len());
        assert_eq!(
            events.last(),
            Some(&SourceProgress::Transfer {
                received_objects: 1000,
                total_objects: 1000,
                received_bytes: 10_000
            })
        );
    }
}
