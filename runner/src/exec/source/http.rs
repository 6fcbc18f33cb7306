//! git's smart HTTP protocol for libgit2, carried by reqwest.
//!
//! libgit2's own HTTP client writes a request's headers and its body in two small writes on a
//! socket without `TCP_NODELAY`, so every POST of a fetch waits for the server's delayed ACK
//! (about 40 ms on Linux; a shallow fetch makes two), and its TLS backend loads OpenSSL and the
//! whole CA bundle when the process starts, plain HTTP or not. This subtransport sends each
//! request whole through reqwest, the client the rest of the runner uses (rustls, proxies from
//! the environment, connection reuse, a connect timeout libgit2 lacks), sends the token with
//! the first request instead of after a 401, and streams responses into libgit2.
//!
//! libgit2 keeps the protocol (ref advertisement, negotiation, packs); this side only moves
//! bytes: `GET …/info/refs?service=git-upload-pack`, then one `POST …/git-upload-pack` per
//! round of negotiation, each body written by libgit2 before it reads the answer.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::Duration;

use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream, Transport};

use super::TOKEN_USER;
use crate::error_chain;
use crate::secret::Secret;

/// How long connecting to a git server may take before the fetch fails (and is retried).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

thread_local! {
    /// The token of the fetch running on this thread, for the origin it was given for.
    static CREDENTIALS: RefCell<Option<Credentials>> = const { RefCell::new(None) };
}

#[derive(Clone)]
struct Credentials {
    /// `scheme://host[:port]`, lowercased.
    origin: String,
    token: Secret,
}

/// Makes libgit2 use this transport for `http://` and `https://` remotes, once per process.
/// Everything in the source stage that opens a remote calls it first.
pub(super) fn register() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        for scheme in ["http", "https"] {
            let registered = register_scheme(scheme);
            if let Err(error) = registered {
                // Only possible if the scheme were taken already, which nothing else does.
                tracing::warn!(%error, scheme, "cannot register the git HTTP transport");
            }
        }
    });
}

#[allow(unsafe_code)]
fn register_scheme(scheme: &str) -> Result<(), git2::Error> {
    // SAFETY: git2 requires that registering a transport does not race with libgit2 creating
    // one. This runs inside `register`'s `Once`, and every path in the source stage that opens
    // a remote calls `register` first: a thread about to create a transport either finds the
    // registration done or waits on the `Once` until it is.
    unsafe {
        git2::transport::register(scheme, |remote| {
            let credentials = CREDENTIALS.with(|current| current.borrow().clone());
            Transport::smart(
                remote,
                true,
                HttpTransport {
                    base_url: Arc::new(Mutex::new(None)),
                    credentials,
                },
            )
        })
    }
}

/// Sets the token for the fetches this thread makes from `repository` until the guard is
/// dropped. The token goes only to the repository's origin (`scheme://host[:port]`, as
/// [`origin_of`] makes it for every request).
pub(super) fn with_token(repository: &str, token: Option<&Secret>) -> TokenGuard {
    let credentials = match (origin_of(repository), token) {
        (Some(origin), Some(token)) if !token.is_empty() => Some(Credentials {
            origin,
            token: token.clone(),
        }),
        _ => None,
    };
    let previous = CREDENTIALS.with(|current| current.replace(credentials));
    TokenGuard { previous }
}

/// Restores the thread's previous token when dropped.
pub(super) struct TokenGuard {
    previous: Option<Credentials>,
}

impl Drop for TokenGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CREDENTIALS.with(|current| *current.borrow_mut() = previous);
    }
}

/// The client for `url`, one per kind per process (connections are reused from one request
/// to the next). Plain `http://` remotes get a client without TLS: building one with TLS reads
/// every certificate of the system's store, which costs more than the whole fetch of a small
/// change.
fn client(url: &str) -> io::Result<&'static reqwest::blocking::Client> {
    static PLAIN: OnceLock<Result<reqwest::blocking::Client, String>> = OnceLock::new();
    static TLS: OnceLock<Result<reqwest::blocking::Client, String>> = OnceLock::new();
    let plain = url
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"));
    let (cell, tls) = if plain { (&PLAIN, false) } else { (&TLS, true) };
    cell.get_or_init(|| {
        // The blocking client's timeout bounds each wait for the server (the answer's
        // headers, then every single read of the pack), not the whole transfer: a pack may
        // take long as long as it keeps arriving. (The async builder's `read_timeout` needs a
        // Tokio timer on the reading thread, which libgit2's thread does not have.)
        let builder = reqwest::blocking::Client::builder()
            // Git servers (GitHub's among them) serve the smart protocol to `git/` agents.
            .user_agent(concat!(
                "git/2.0 (envelope-runner ",
                env!("CARGO_PKG_VERSION"),
                ")"
            ))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(crate::timeouts::git())
            // Keepalive probes notice a server that went away without closing.
            .tcp_keepalive(Duration::from_secs(60));
        let builder = if tls {
            builder
        } else {
            // No certificates at all: an `https://` redirect is followed by the TLS client
            // instead (see `HttpStream::send`).
            builder
                .tls_certs_only([])
                .redirect(reqwest::redirect::Policy::custom(|attempt| {
                    if attempt.url().scheme() != "http" || attempt.previous().len() >= 10 {
                        attempt.stop()
                    } else {
                        attempt.follow()
                    }
                }))
        };
        builder
            .build()
            .map_err(|error| error.without_url().to_string())
    })
    .as_ref()
    .map_err(|error| io::Error::other(format!("cannot set up the HTTP client: {error}")))
}

struct HttpTransport {
    /// The repository URL, changed when the server redirects the ref listing.
    base_url: Arc<Mutex<Option<String>>>,
    credentials: Option<Credentials>,
}

impl SmartSubtransport for HttpTransport {
    fn action(
        &self,
        url: &str,
        action: Service,
    ) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        let (path, post) = match action {
            Service::UploadPackLs => ("/info/refs?service=git-upload-pack", false),
            Service::UploadPack => ("/git-upload-pack", true),
            Service::ReceivePackLs | Service::ReceivePack => {
                return Err(git2::Error::from_str(
                    "pushing is not something the source stage does",
                ));
            }
        };
        let base = {
            let mut base = self
                .base_url
                .lock()
                .map_err(|_| git2::Error::from_str("HTTP transport state poisoned"))?;
            base.get_or_insert_with(|| url.trim_end_matches('/').to_owned())
                .clone()
        };
        Ok(Box::new(HttpStream {
            base_url: Arc::clone(&self.base_url),
            url: format!("{base}{path}"),
            path,
            post,
            credentials: self.credentials.clone(),
            request: Vec::new(),
            response: None,
        }))
    }

    fn close(&self) -> Result<(), git2::Error> {
        Ok(())
    }
}

/// One request: libgit2 writes the body (for a POST), then reads the answer.
struct HttpStream {
    base_url: Arc<Mutex<Option<String>>>,
    url: String,
    path: &'static str,
    post: bool,
    credentials: Option<Credentials>,
    request: Vec<u8>,
    response: Option<Box<dyn Read + Send>>,
}

impl HttpStream {
    fn send(&mut self) -> io::Result<Box<dyn Read + Send>> {
        let body = std::mem::take(&mut self.request);
        let mut response = self.request_to(&self.url.clone(), &body)?;
        // The plain client stops at a redirect to `https://`; the TLS client takes it from
        // there.
        if response.status().is_redirection()
            && let Some(location) = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|location| response.url().join(location).ok())
            && location.scheme() == "https"
        {
            response = self.request_to(location.as_str(), &body)?;
        }
        self.check(response)
    }

    fn request_to(&self, url: &str, body: &[u8]) -> io::Result<reqwest::blocking::Response> {
        let client = client(url)?;
        let mut target = reqwest::Url::parse(url).map_err(|error| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a usable URL: {error}"),
            )
        })?;
        // Userinfo in the URL travels as a header, never in the request line.
        let userinfo = (!target.username().is_empty() || target.password().is_some()).then(|| {
            let decode = |text: &str| {
                percent_encoding::percent_decode_str(text)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(target.username()), target.password().map(decode))
        });
        let _ = target.set_username("");
        let _ = target.set_password(None);
        let builder = if self.post {
            client
                .post(target)
                .header("Content-Type", "application/x-git-upload-pack-request")
                .header("Accept", "application/x-git-upload-pack-result")
                .body(body.to_vec())
        } else {
            client.get(target).header("Accept", "*/*")
        };
        let builder = match (userinfo, &self.credentials) {
            // Userinfo in the URL wins, as with git.
            (Some((user, password)), _) => builder.basic_auth(user, password),
            // The token only goes to its own origin.
            (None, Some(credentials))
                if origin_of(url).as_deref() == Some(credentials.origin.as_str()) =>
            {
                builder.basic_auth(TOKEN_USER, Some(credentials.token.expose()))
            }
            _ => builder,
        };
        builder.send().map_err(|error| {
            if error.is_timeout() && !error.is_connect() {
                return silent(url, "before answering");
            }
            let kind = if error.is_connect() || error.is_timeout() {
                io::ErrorKind::ConnectionRefused
            } else {
                io::ErrorKind::Other
            };
            let host = origin_of(url).unwrap_or_default();
            let what = if error.is_connect() {
                "failed to connect to"
            } else {
                "failed to talk to"
            };
            io::Error::new(
                kind,
                format!("{what} {host}: {}", error_chain(&error.without_url())),
            )
        })
    }

    /// Checks the answer and hands over its body.
    fn check(&self, response: reqwest::blocking::Response) -> io::Result<Box<dyn Read + Send>> {
        let status = response.status();
        if !status.is_success() {
            // libgit2's own wording, which the source stage reads the status from.
            return Err(io::Error::other(format!(
                "unexpected http status code: {}",
                status.as_u16()
            )));
        }
        let expected = if self.post {
            "application/x-git-upload-pack-result"
        } else {
            "application/x-git-upload-pack-advertisement"
        };
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        if !content_type.starts_with(expected) {
            return Err(io::Error::other(format!(
                "the server answered with `{content_type}` instead of git's smart HTTP protocol \
                 (`{expected}`); check the repository URL"
            )));
        }
        // A redirected ref listing moves the repository for the requests that follow (with
        // the URL's credentials if it stays on the same origin).
        if !self.post
            && let Some(moved) = moved_base(&self.url, response.url(), self.path)
            && let Ok(mut current) = self.base_url.lock()
        {
            *current = Some(moved);
        }
        Ok(Box::new(response))
    }
}

impl Read for HttpStream {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if self.response.is_none() {
            let response = self.send()?;
            self.response = Some(response);
        }
        match &mut self.response {
            Some(response) => response.read(buffer).map_err(|error| {
                if is_timeout(&error) {
                    silent(&self.url, "in the middle of its answer")
                } else {
                    error
                }
            }),
            None => Ok(0),
        }
    }
}

impl Write for HttpStream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.response.is_some() {
            return Err(io::Error::other("git wrote to a request already sent"));
        }
        self.request.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The repository URL after a redirect of `requested` to `answered`, or `None` if it did not
/// move. Userinfo is kept when the origin stays the same.
fn moved_base(requested: &str, answered: &reqwest::Url, path: &str) -> Option<String> {
    let original = reqwest::Url::parse(requested).ok()?;
    let mut stripped = original.clone();
    let _ = stripped.set_username("");
    let _ = stripped.set_password(None);
    if stripped.as_str() == answered.as_str() {
        return None;
    }
    let mut moved = reqwest::Url::parse(answered.as_str().strip_suffix(path)?).ok()?;
    if origin_of(original.as_str()) == origin_of(moved.as_str()) {
        let _ = moved.set_username(original.username());
        let _ = moved.set_password(original.password());
    }
    Some(moved.as_str().trim_end_matches('/').to_owned())
}

/// The error for a server at `url` that sent nothing for the git timeout.
fn silent(url: &str, when: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "{} sent nothing for {} {when}: timed out; retry, or raise {} for a slow server",
            origin_of(url).unwrap_or_default(),
            crate::timeouts::show(crate::timeouts::git()),
            crate::timeouts::GIT_TIMEOUT_VAR,
        ),
    )
}

/// True when `error` (or one of its causes) is a timeout.
fn is_timeout(error: &io::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::TimedOut {
                return true;
            }
            // An io::Error's `source` skips the error it wraps.
            cause = match io.get_ref() {
                Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                None => std::error::Error::source(io),
            };
            continue;
        }
        if current
            .downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_timeout)
        {
            return true;
        }
        cause = current.source();
    }
    false
}

/// `scheme://host[:port]` of `url`, lowercased, without userinfo.
fn origin_of(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    Some(match parsed.port() {
        Some(port) => format!("{}://{host}:{port}", parsed.scheme()).to_lowercase(),
        None => format!("{}://{host}", parsed.scheme()).to_lowercase(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_without_userinfo() {
        assert_eq!(
            origin_of("https://user:pw@GitHub.com/o/r.git").as_deref(),
            Some("https://github.com")
        );
        assert_eq!(
            origin_of("http://127.0.0.1:8080/app.git").as_deref(),
            Some("http://127.0.0.1:8080")
        );
    }

    #[test]
    fn a_redirect_moves_the_repository_and_keeps_credentials_on_the_same_origin() {
        let path = "/info/refs?service=git-upload-pack";
        let requested = "https://u:p@git.example.com/o/r.git/info/refs?service=git-upload-pack";
        let url = |text: &str| reqwest::Url::parse(text).expect("url");
        assert_eq!(
            moved_base(
                requested,
                &url("https://git.example.com/o/r.git/info/refs?service=git-upload-pack"),
                path
            ),
            None,
            "the same URL without its credentials has not moved"
        );
        assert_eq!(
            moved_base(
                requested,
                &url("https://git.example.com/new/r.git/info/refs?service=git-upload-pack"),
                path
            )
            .as_deref(),
            Some("https://u:p@git.example.com/new/r.git")
        );
        assert_eq!(
            moved_base(
                requested,
                &url("https://mirror.example.org/r.git/info/refs?service=git-upload-pack"),
                path
            )
            .as_deref(),
            Some("https://mirror.example.org/r.git"),
            "credentials do not follow to another origin"
        );
    }

    #[test]
    fn the_token_is_per_thread_and_restored_by_the_guard() {
        let token = Secret::new("t0ken");
        let current = || CREDENTIALS.with(|c| c.borrow().as_ref().map(|c| c.origin.clone()));
        assert_eq!(current(), None);
        {
            let _outer = with_token("https://github.com:443/o/r.git", Some(&token));
            assert_eq!(current().as_deref(), Some("https://github.com"));
            {
                let _inner = with_token("https://example.com/o/r.git", None);
                assert_eq!(current(), None, "a fetch without a token sends none");
            }
            assert_eq!(current().as_deref(), Some("https://github.com"));
            std::thread::spawn(move || assert_eq!(current(), None))
                .join()
                .expect("thread");
        }
        assert_eq!(current(), None);
    }
}
