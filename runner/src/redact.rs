//! The redactor: every secret value a run knows is replaced by `[REDACTED]` before a reporter,
//! the store or an error message sees it.
//!
//! A run registers each secret as it learns it (build secrets from the environment, files or
//! Secrets Manager, buildspec `secrets-manager`/`parameter-store` values, the registry password,
//! the git token, approval webhook URLs). Besides the value itself, the redactor looks for the
//! forms a script is likely to print it in: each line of a multi-line value (output is read
//! line by line), its base64 encodings and its URL encoding. Output reaches the redactor as
//! whole lines, so a value split across two reads of a process's output is still found.

use crate::pipeline::CompiledPipeline;
use crate::pipeline::model::Stage;
use crate::plan::DEFAULT_TOKEN_ENV;
use base64::Engine as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::{Arc, RwLock};

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Values (and lines of values) shorter than this are not searched for: redacting every `test`
/// or `admin` in the output (`latest` would become `la[REDACTED]`) would hide ordinary words and
/// protect nothing a real credential needs.
const MIN_LENGTH: usize = 6;

/// The secret values of one run, shared by everything that reports or records it.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Every form of every secret, longest first, so that a value containing another is
    /// replaced whole.
    needles: Arc<RwLock<Vec<String>>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} forms)", self.read().len())
    }
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// A redactor that knows `values`.
    pub fn from_values<I, S>(values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let redactor = Self::new();
        redactor.add_all(values);
        redactor
    }

    /// Register a registry password together with the `user:password` string that HTTP basic
    /// auth and Docker's `auths` carry in base64.
    pub fn add_basic_auth(&self, username: &str, password: &str) {
        self.add(password);
        if !password.is_empty() {
            self.add(&format!("{username}:{password}"));
        }
    }

    /// Register a secret value (and the forms it may be printed in).
    pub fn add(&self, value: &str) {
        let forms = forms(value);
        if forms.is_empty() {
            return;
        }
        let mut needles = self
            .needles
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for form in forms {
            if !needles.contains(&form) {
                needles.push(form);
            }
        }
        needles.sort_by_key(|needle| std::cmp::Reverse(needle.len()));
    }

    /// Register several values.
    pub fn add_all<I, S>(&self, values: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for value in values {
            self.add(value.as_ref());
        }
    }

    /// `text` with every known secret form replaced by [`REDACTED`].
    pub fn redact(&self, text: &str) -> String {
        let needles = self.read();
        let mut out = text.to_owned();
        for needle in needles.iter() {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), REDACTED);
            }
        }
        out
    }

    /// Redact in place.
    pub fn redact_in_place(&self, text: &mut String) {
        let needles = self.read();
        if needles.iter().any(|needle| text.contains(needle.as_str())) {
            drop(needles);
            *text = self.redact(text);
        }
    }

    /// A copy of `value` with every text in it redacted. Walks the value's JSON form, so a
    /// field added to the type later is covered without a change here. `None` only when the
    /// value does not survive the round trip (then it must not be shown).
    pub fn redact_texts<T: Serialize + DeserializeOwned>(&self, value: &T) -> Option<T> {
        let mut json = serde_json::to_value(value).ok()?;
        if !self.is_empty() {
            self.redact_json(&mut json);
        }
        serde_json::from_value(json).ok()
    }

    fn redact_json(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(text) => self.redact_in_place(text),
            serde_json::Value::Array(items) => {
                items.iter_mut().for_each(|item| self.redact_json(item))
            }
            serde_json::Value::Object(fields) => fields
                .values_mut()
                .for_each(|field| self.redact_json(field)),
            _ => {}
        }
    }

    /// True when no secret is registered.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<String>> {
        self.needles
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The forms of `value` worth searching for.
fn forms(value: &str) -> Vec<String> {
    let trimmed = value.trim_end_matches(['\n', '\r']);
    if trimmed.trim().chars().count() < MIN_LENGTH {
        return Vec::new();
    }
    let mut forms = vec![trimmed.to_owned()];
    if trimmed != value {
        forms.push(value.to_owned());
    }
    // Output is read line by line: each line of a PEM key or a multi-line token on its own.
    forms.extend(
        trimmed
            .lines()
            .map(|line| line.trim_end_matches('\r'))
            .filter(|line| line.trim().chars().count() >= MIN_LENGTH)
            .map(str::to_owned),
    );
    for encoded in [
        base64::engine::general_purpose::STANDARD.encode(trimmed),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(trimmed),
        base64::engine::general_purpose::URL_SAFE.encode(trimmed),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(trimmed),
        percent_encoding::utf8_percent_encode(trimmed, percent_encoding::NON_ALPHANUMERIC)
            .to_string(),
        // `+` for spaces, as HTML forms and many query-string encoders write them.
        percent_encoding::utf8_percent_encode(trimmed, percent_encoding::NON_ALPHANUMERIC)
            .to_string()
            .replace("%20", "+"),
    ] {
        forms.push(encoded);
    }
    forms.sort();
    forms.dedup();
    forms
}

/// Environment variables whose values are secrets whatever the pipeline says: the default git
/// token, the registry password and AWS credentials.
pub const SECRET_VARIABLES: [&str; 4] = [
    DEFAULT_TOKEN_ENV,
    "ENVELOPE_REGISTRY_PASSWORD",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];
/// A variable naming a file whose contents are the registry password.
pub const SECRET_FILE_VARIABLES: [&str; 1] = ["ENVELOPE_REGISTRY_PASSWORD_FILE"];

/// The secret values any run may handle, from this process's environment.
pub fn environment_secrets() -> Vec<String> {
    let mut values: Vec<String> = SECRET_VARIABLES
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .collect();
    values.extend(
        SECRET_FILE_VARIABLES
            .iter()
            .filter_map(|name| std::env::var(name).ok())
            .filter_map(|path| std::fs::read_to_string(path).ok()),
    );
    values
}

/// The secret values `compiled` names that can be read before the run: the git token in
/// `source.token_env` and the BuildKit secrets read from environment variables or files.
/// Secrets Manager and Parameter Store values are registered when the run fetches them.
pub fn pipeline_secrets(compiled: &CompiledPipeline) -> Vec<String> {
    let pipeline = &compiled.pipeline;
    let token_env = pipeline
        .source
        .token_env
        .as_deref()
        .unwrap_or(DEFAULT_TOKEN_ENV);
    let mut values: Vec<String> = std::env::var(token_env).ok().into_iter().collect();
    // The end-of-run webhook URLs read from the environment carry their credentials.
    for name in pipeline
        .notify
        .iter()
        .flat_map(|notify| [&notify.webhook_env, &notify.slack_env])
        .flatten()
    {
        if let Ok(url) = std::env::var(name) {
            values.extend(webhook_secrets(&url));
        }
    }
    for stage in &pipeline.stages {
        let Stage::Build(build) = stage else {
            continue;
        };
        for secret in &build.secrets {
            if let Some(name) = &secret.env
                && let Ok(value) = std::env::var(name)
            {
                values.push(value);
            }
            if let Some(file) = &secret.file
                && let Ok(value) = std::fs::read_to_string(compiled.project_root.join(file))
            {
                values.push(value);
            }
        }
    }
    values
}

/// The parts of a webhook URL that carry its credentials: the whole URL and what follows its
/// origin (path and query), when there is more than a bare `/`.
pub fn webhook_secrets(url: &str) -> Vec<String> {
    let mut values = vec![url.to_owned()];
    let origin = url_origin(url);
    if let Some(rest) = url.strip_prefix(origin.as_str())
        && rest.trim_matches('/').len() >= MIN_LENGTH
    {
        values.push(rest.to_owned());
    }
    values
}

/// A URL as people may see it: scheme and host (and port), never the path or query, which
/// carry the credentials of webhook URLs (`https://hooks.slack.com/services/T0/B0/secret`).
pub fn url_origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => match (parsed.host_str(), parsed.port()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}", parsed.scheme()),
            (Some(host), None) => format!("{}://{host}", parsed.scheme()),
            (None, _) => format!("{}:", parsed.scheme()),
        },
        Err(_) => REDACTED.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_value_and_its_encodings() {
        let redactor = Redactor::new();
        redactor.add("canary xyz/42?");
        let b64 = base64::engine::general_purpose::STANDARD.encode("canary xyz/42?");
        let text = format!("a canary xyz/42? b {b64} c canary%20xyz%2F42%3F d canary+xyz%2F42%3F");
        assert_eq!(
            redactor.redact(&text),
            "a [REDACTED] b [REDACTED] c [REDACTED] d [REDACTED]"
        );
    }

    #[test]
    fn multi_line_values_are_redacted_line_by_line_and_whole() {
        let redactor = Redactor::new();
        redactor.add("-----BEGIN KEY-----\nAAAAsecretline\n-----END KEY-----\n");
        assert_eq!(redactor.redact("x AAAAsecretline y"), "x [REDACTED] y");
        assert_eq!(
            redactor.redact("-----BEGIN KEY-----\nAAAAsecretline\n-----END KEY-----"),
            "[REDACTED]"
        );
    }

    #[test]
    fn longest_first_and_short_values_ignored() {
        let redactor = Redactor::new();
        redactor.add("abcdef");
        redactor.add("abcdefgh");
        redactor.add("test");
        assert_eq!(
            redactor.redact("abcdefgh abcdef latest test"),
            "[REDACTED] [REDACTED] latest test"
        );
    }

    #[test]
    fn webhook_urls_show_scheme_and_host_only() {
        assert_eq!(
            url_origin("https://hooks.example.com/services/T0/B0/sekrit?x=1"),
            "https://hooks.example.com"
        );
        assert_eq!(
            url_origin("http://127.0.0.1:8080/hook/abc"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(url_origin("not a url"), REDACTED);
    }
}
