//! The deploy stage's `verify:` checks as users write them: their defaults, the check of a
//! URL (only `http://` and `https://` with a host), and the form a URL is shown in (no
//! credentials, no query values), for plans, events, errors and the run record.

use std::time::Duration;

/// How long a check keeps trying when its `timeout` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// The pause between attempts when `interval` is not set.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// How long an `alarm` check watches its alarm when `for` is not set.
pub const DEFAULT_ALARM_WATCH: Duration = Duration::from_secs(300);
/// The status a check expects when `status` is not set.
pub const DEFAULT_STATUS: u16 = 200;

/// What is wrong with a URL as written in the file, if anything. Variables stand for a host
/// name; a URL that starts with a variable can only be checked once it is rendered (at plan
/// time, with [`check_url`]).
pub fn url_problem(written: &str) -> Option<String> {
    if written.trim_start().starts_with("${") {
        return None;
    }
    let parts = super::template::parse(written).ok()?;
    let sample = super::template::render(&parts, &|_| Some("example".to_owned()));
    // Credentials written into the URL are not repeated in the message.
    let label = if written.contains('@') {
        shown(&sample)
    } else {
        written.trim().to_owned()
    };
    check_as(&sample, &label).err()
}

/// The path a task check asks when `path` is not set.
pub const DEFAULT_TASK_PATH: &str = "/";

/// What is wrong with a task check's path, if anything: it must start with `/` and hold no
/// whitespace or `#` (it is appended to `http://ADDRESS:PORT`).
pub fn task_path_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some(format!("`{path}` does not start with `/`"));
    }
    if path.chars().any(|c| c.is_whitespace() || c == '#') {
        return Some(format!("`{path}` holds whitespace or `#`"));
    }
    None
}

/// Parses a rendered URL: `http://` or `https://` with a host, or a message saying why not.
pub fn check_url(url: &str) -> Result<reqwest::Url, String> {
    check_as(url, &shown(url))
}

/// [`check_url`], naming the URL as `label` in its messages.
fn check_as(url: &str, label: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url.trim())
        .map_err(|error| format!("`{label}` is not a URL: {error}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "`{label}` uses `{}:`; a check must use http:// or https://",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{label}` has no host"));
    }
    Ok(parsed)
}

/// A URL as people may see it: without user name, password and query values (which may be
/// tokens), and without a fragment. A URL that does not parse is shown as its scheme only.
pub fn shown(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url.trim()) else {
        return match url.split_once("://") {
            Some((scheme, _)) if scheme.chars().all(|c| c.is_ascii_alphanumeric()) => {
                format!("{scheme}://…")
            }
            _ => "(not a URL)".to_owned(),
        };
    };
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    parsed.set_fragment(None);
    let names: Vec<String> = parsed
        .query_pairs()
        .map(|(name, _)| format!("{name}=…"))
        .collect();
    parsed.set_query(None);
    if names.is_empty() {
        parsed.to_string()
    } else {
        format!("{parsed}?{}", names.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_with_a_host_pass() {
        assert!(check_url("https://api.envelope.host/up").is_ok());
        assert!(check_url("http://127.0.0.1:8080/health").is_ok());
        let ftp = check_url("ftp://files.example/x").unwrap_err();
        assert!(ftp.contains("http:// or https://"), "{ftp}");
        let relative = check_url("/up").unwrap_err();
        assert!(relative.contains("is not a URL"), "{relative}");
    }

    #[test]
    fn written_urls_are_checked_with_variables_standing_for_a_host() {
        assert_eq!(url_problem("https://${env.API_HOST}/up"), None);
        assert_eq!(url_problem("${env.HEALTH_URL}"), None);
        let problem = url_problem("tcp://${env.API_HOST}:80").unwrap();
        assert!(problem.contains("http:// or https://"), "{problem}");
        assert!(
            problem.starts_with("`tcp://${env.API_HOST}:80`"),
            "{problem}"
        );
        assert!(url_problem("api.envelope.host/up").is_some());
    }

    #[test]
    fn task_paths_are_absolute_without_spaces() {
        assert_eq!(task_path_problem("/up"), None);
        assert_eq!(task_path_problem("/health?full=1"), None);
        assert!(
            task_path_problem("up")
                .unwrap()
                .contains("does not start with `/`")
        );
        assert!(task_path_problem("/a b").is_some());
    }

    #[test]
    fn shown_urls_carry_no_credentials_or_query_values() {
        assert_eq!(
            shown("https://user:s3cr3t-pass@api.example/up?token=abc123&x=1#top"),
            "https://api.example/up?token=…&x=…"
        );
        assert_eq!(shown("https://api.example/up"), "https://api.example/up");
        assert_eq!(shown("https://bad host/%%"), "https://…");
    }
}
