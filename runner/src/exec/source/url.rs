//! Repository URLs: parsing what a request or .gitmodules names, removing credentials for
//! messages, the mirror name a URL is cached under, and submodule URLs made absolute.

use std::fs;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::SourceError;

/// A repository location, in the three forms this module needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteUrl {
    /// Handed to libgit2: the URL as given (embedded credentials may be needed) or, for a local
    /// repository, its absolute path.
    pub(super) fetch: String,
    /// Safe to print: userinfo removed.
    pub(super) redacted: String,
    /// `scheme://host[:port]`, lowercased, for network URLs; `None` for local repositories.
    /// The token is only ever sent to the origin it was given for.
    pub(super) origin: Option<String>,
    /// What the mirror name is derived from: the redacted URL with case-insensitive parts
    /// lowercased and trailing slashes dropped, or the absolute path.
    pub(super) cache_key: String,
}

impl RemoteUrl {
    pub(crate) fn parse(url: &str) -> Result<Self, SourceError> {
        let url = url.trim();
        if let Some((scheme, rest)) = url.split_once("://") {
            let scheme = scheme.to_ascii_lowercase();
            match scheme.as_str() {
                "http" | "https" => {
                    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                    let host = authority
                        .rsplit_once('@')
                        .map_or(authority, |(_, host)| host);
                    let origin = format!("{scheme}://{}", host.to_ascii_lowercase());
                    Ok(RemoteUrl {
                        fetch: url.to_string(),
                        redacted: redact_url(url),
                        cache_key: format!("{origin}{}", path.trim_end_matches('/')),
                        origin: Some(origin),
                    })
                }
                "file" => Ok(Self::local(Path::new(rest))),
                _ => Err(SourceError::UnsupportedUrl {
                    url: redact_url(url),
                }),
            }
        } else if is_scp_like(url) {
            Err(SourceError::UnsupportedUrl {
                url: url.to_string(),
            })
        } else {
            Ok(Self::local(Path::new(url)))
        }
    }

    fn local(path: &Path) -> Self {
        // The same repository reached by a relative path, a symlink or file:// shares a mirror.
        let absolute = fs::canonicalize(path)
            .or_else(|_| std::path::absolute(path))
            .unwrap_or_else(|_| path.to_path_buf());
        let text = absolute.to_string_lossy().trim_end_matches('/').to_string();
        RemoteUrl {
            fetch: text.clone(),
            redacted: text.clone(),
            origin: None,
            cache_key: text,
        }
    }

    pub(super) fn is_local(&self) -> bool {
        self.origin.is_none()
    }
}

/// `host:path` and `user@host:path` are git's ssh shorthand, which needs ssh support this build
/// does not have; a colon before the first slash is how git tells them from paths.
fn is_scp_like(url: &str) -> bool {
    match url.find(':') {
        Some(colon) => colon > 1 && !url[..colon].contains('/'),
        None => false,
    }
}

/// `url` with any `user:password@` removed, for messages and progress.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |offset| authority_start + offset);
    match url[authority_start..authority_end].rfind('@') {
        Some(at) => format!(
            "{}{}",
            &url[..authority_start],
            &url[authority_start + at + 1..]
        ),
        None => url.to_string(),
    }
}

/// The file name (without extension) of a URL's mirror: a stable hash of its cache key, so
/// runs find the same mirror across versions. Changing this orphans every existing cache.
pub(crate) fn mirror_name(cache_key: &str) -> String {
    let digest = Sha256::digest(cache_key.as_bytes());
    hex::encode(&digest[..16])
}

/// A submodule URL from .gitmodules, made absolute the way git does: `./x` and `../x` are
/// relative to the superproject's URL, anything else is used as is.
pub(crate) fn resolve_submodule_url(parent: &str, url: &str) -> String {
    if !(url.starts_with("./") || url.starts_with("../")) {
        return url.to_string();
    }
    let mut base = parent.trim_end_matches('/').to_string();
    // `../` never climbs above `scheme://host`.
    let floor = base.find("://").map_or(0, |at| at + 3);
    let mut rest = url;
    loop {
        if let Some(after) = rest.strip_prefix("./") {
            rest = after;
        } else if let Some(after) = rest.strip_prefix("../") {
            rest = after;
            if let Some(slash) = base.rfind('/').filter(|&slash| slash >= floor) {
                base.truncate(slash);
            }
        } else {
            break;
        }
    }
    if rest.is_empty() {
        base
    } else {
        format!("{base}/{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_removes_userinfo_only() {
        let cases = [
            ("https://github.com/o/r.git", "https://github.com/o/r.git"),
            (
                "https://x-access-token:ghs_abc@github.com/o/r.git",
                "https://github.com/o/r.git",
            ),
            ("https://user@host:8443/r.git", "https://host:8443/r.git"),
            ("http://a:b@127.0.0.1:9/x?y=@z", "http://127.0.0.1:9/x?y=@z"),
            ("https://p@ss:w@rd@host/r", "https://host/r"),
            ("file:///srv/git/r.git", "file:///srv/git/r.git"),
            ("/srv/git/user@host/r.git", "/srv/git/user@host/r.git"),
        ];
        for (url, expected) in cases {
            assert_eq!(redact_url(url), expected, "{url}");
        }
    }

    #[test]
    fn urls_parse_into_fetch_redacted_and_origin() {
        let url = RemoteUrl::parse("HTTPS://tok:en@GitHub.com/Owner/Repo.git/").unwrap();
        assert_eq!(url.fetch, "HTTPS://tok:en@GitHub.com/Owner/Repo.git/");
        assert_eq!(url.redacted, "HTTPS://GitHub.com/Owner/Repo.git/");
        assert_eq!(url.origin.as_deref(), Some("https://github.com"));
        assert_eq!(url.cache_key, "https://github.com/Owner/Repo.git");

        let local = RemoteUrl::parse("file:///nonexistent/repo.git").unwrap();
        assert!(local.is_local());
        assert_eq!(local.fetch, "/nonexistent/repo.git");
        assert_eq!(RemoteUrl::parse("/nonexistent/repo.git/").unwrap(), local);

        for unsupported in ["git@github.com:o/r.git", "ssh://git@github.com/o/r.git"] {
            assert!(
                matches!(
                    RemoteUrl::parse(unsupported),
                    Err(SourceError::UnsupportedUrl { .. })
                ),
                "{unsupported}"
            );
        }
    }

    #[test]
    fn mirror_names_are_stable_and_ignore_credentials() {
        let plain = RemoteUrl::parse("https://github.com/o/r.git").unwrap();
        let with_token = RemoteUrl::parse("https://x:secret@github.com/o/r.git").unwrap();
        let other = RemoteUrl::parse("https://github.com/o/other.git").unwrap();
        assert_eq!(
            mirror_name(&plain.cache_key),
            mirror_name(&with_token.cache_key)
        );
        assert_ne!(mirror_name(&plain.cache_key), mirror_name(&other.cache_key));
        // Pinned: a different value would orphan every mirror in existing caches.
        assert_eq!(
            mirror_name("https://github.com/o/r.git"),
            "bc3fbd4dd8dbadfc9793e2a816228cf8"
        );
    }

    #[test]
    fn submodule_urls_resolve_like_git() {
        let cases = [
            (
                "https://h/org/app.git",
                "../lib.git",
                "https://h/org/lib.git",
            ),
            (
                "https://h/org/app.git/",
                "../lib.git",
                "https://h/org/lib.git",
            ),
            (
                "https://h/org/app.git",
                "./lib",
                "https://h/org/app.git/lib",
            ),
            (
                "https://h/org/app.git",
                "../../x/lib.git",
                "https://h/x/lib.git",
            ),
            ("https://h/app.git", "../../../lib.git", "https://h/lib.git"),
            ("/srv/git/app.git", "../lib.git", "/srv/git/lib.git"),
            (
                "https://h/org/app.git",
                "https://other/lib.git",
                "https://other/lib.git",
            ),
        ];
        for (parent, url, expected) in cases {
            assert_eq!(
                resolve_submodule_url(parent, url),
                expected,
                "{parent} + {url}"
            );
        }
    }
}
